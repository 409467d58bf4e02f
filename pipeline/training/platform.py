"""The machine a run ran on, recorded beside its results.

TensorFlow's CPU kernels round differently per instruction set (AVX2 vs AVX-512, say)
and, on some CPUs, per thread count: the same params and data give bit-identical numbers
only on the same kind of machine with the same threads. This record tells a reader which
runs can be compared bit for bit.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The instruction-set extensions that decide which kernels TensorFlow and oneDNN pick.
VECTOR_EXTENSION = re.compile(r"^(sse4_[12]|avx|avx2|fma|f16c|avx_vnni|avx512\w*|amx\w*"
                              r"|asimd\w*|sve\w*|sme\w*)$")


def cpu_description(cpuinfo: Path = CPUINFO) -> tuple[str, list[str]]:
    """(CPU model, its vector extensions) from /proc/cpuinfo, else what Python knows."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    model, flags = "", []
    for line in text.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        key = key.lower()
        if not model and key in ("model name", "cpu model", "hardware"):
            model = value
        if not flags and key in ("flags", "features"):  # x86 / Arm
            flags = sorted(flag for flag in value.split() if VECTOR_EXTENSION.match(flag))
    return model or platform.processor() or platform.machine(), flags


def platform_record() -> dict:
    """Library versions, Python, OS and CPU: what can change the numbers' last bits."""
    import keras
    import numpy
    import tensorflow

    from pipeline.training import engine

    cpu, extensions = cpu_description()
    return {
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        **engine.description(),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_vector_extensions": extensions,
        "logical_cpus": os.cpu_count(),
        "intra_op_threads": tensorflow.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tensorflow.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
    }
