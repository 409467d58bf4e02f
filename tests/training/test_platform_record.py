"""The platform record: which machine a run's numbers come from."""

import json
import platform

from pipeline.training.platform import cpu_description, platform_record

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni
processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 sha_ni
"""
INTEL = "model name\t: Intel(R) Xeon(R) Platinum 8481C\nflags\t\t: avx2 avx512f avx512bw " \
        "avx512_vnni amx_tile avx_vnni rdrand\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp sve sve2\nCPU part\t: 0xd40\n"


def test_x86_model_and_vector_extensions(tmp_path):
    (tmp_path / "cpuinfo").write_text(X86)
    assert cpu_description(tmp_path / "cpuinfo") == (
        "AMD EPYC 7B13", ["avx", "avx2", "f16c", "fma", "sse4_1", "sse4_2"])


def test_avx512_and_amx_are_listed(tmp_path):
    (tmp_path / "cpuinfo").write_text(INTEL)
    model, extensions = cpu_description(tmp_path / "cpuinfo")
    assert model == "Intel(R) Xeon(R) Platinum 8481C"
    assert extensions == ["amx_tile", "avx2", "avx512_vnni", "avx512bw", "avx512f", "avx_vnni"]


def test_arm_features_and_a_fallback_model_name(tmp_path):
    (tmp_path / "cpuinfo").write_text(ARM)
    model, extensions = cpu_description(tmp_path / "cpuinfo")
    assert extensions == ["asimd", "asimddp", "sve", "sve2"]
    assert model == (platform.processor() or platform.machine())


def test_without_proc_cpuinfo_python_names_the_processor(tmp_path):
    assert cpu_description(tmp_path / "absent") == (
        platform.processor() or platform.machine(), [])


def test_the_record_names_versions_python_os_and_cpu():
    import keras
    import numpy
    import tensorflow

    record = platform_record()
    assert (record["tensorflow"], record["keras"], record["numpy"]) == (
        tensorflow.__version__, keras.__version__, numpy.__version__)
    assert record["python"] == platform.python_version()
    assert record["keras_backend"] == "jax" and record["compute_threads"] >= 1
    assert record["os"] == platform.platform() and record["cpu"]
    assert json.loads(json.dumps(record)) == record  # plain JSON values only


def test_the_record_names_the_thread_counts_that_decide_the_bytes():
    import tensorflow

    record = platform_record()
    assert record["intra_op_threads"] == \
        tensorflow.config.threading.get_intra_op_parallelism_threads()
    assert record["inter_op_threads"] == \
        tensorflow.config.threading.get_inter_op_parallelism_threads()
