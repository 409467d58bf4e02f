"""The debian source: Debian's package, installed or downloaded with a stand-in apt-get."""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from pipeline.core.errors import DataError, SourceUnavailable
from pipeline.core.params import FetchParams, PrepareParams
from pipeline.data import debian, idx, sources
from pipeline.fetch import fetch_raw
from pipeline.prepare import prepare
from tests.support import fake_debian
from tests.support.fake_debian import VERSION, apt_calls, fake_apt_get, fake_dpkg_query, make_deb


@pytest.fixture(autouse=True)
def dpkg_deb():
    """The source unpacks with dpkg-deb, Essential on every system with apt-get; in CI
    (CI=true) a missing one fails."""
    if shutil.which("dpkg-deb") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI needs dpkg-deb (a Debian-based system)", pytrace=False)
        pytest.skip("dpkg-deb is not installed (not a Debian-based system)")


@pytest.fixture
def package_files(idx_dir):
    """The four small IDX files, re-gzipped the way a packager would."""
    return {name: fake_debian.regzip((idx_dir / name).read_bytes())
            for name in idx.FILES.values()}


@pytest.fixture
def expected(package_files):
    return {name: hashlib.sha256(idx.decompress(data, name)).hexdigest()
            for name, data in package_files.items()}


@pytest.fixture
def system_lists(tmp_path):
    """The machine's package lists: they already know the package."""
    folder = tmp_path / "system-lists"
    folder.mkdir()
    (folder / "Packages").write_text("Package: dataset-fashion-mnist\n")
    return folder


def debian_loader(tmp_path, apt_get, expected, lists, **kwargs):
    return lambda: sources.from_debian(installed_dir=tmp_path / "not-installed",
                                       apt_get=str(apt_get), lists_dir=lists,
                                       expected=expected, **kwargs)


def listing(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def test_the_fake_package_is_a_real_deb(tmp_path, package_files):
    deb = make_deb(tmp_path, package_files)
    listed = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                            check=True).stdout
    assert "./usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz" in listed
    version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert version == VERSION


def test_downloads_unpacks_and_verifies_the_package(tmp_path, package_files, expected,
                                                    system_lists):
    apt_get, log = fake_apt_get(tmp_path / "bin", make_deb(tmp_path / "repo", package_files))
    before = listing(system_lists)
    record = fetch_raw(FetchParams("debian", ""), tmp_path / "raw",
                       loaders={"debian": debian_loader(tmp_path, apt_get, expected,
                                                        system_lists)})
    assert record["source"] == "debian" and record["official_split"] is True
    assert record["package"] == "dataset-fashion-mnist" and record["version"] == VERSION
    assert record["obtained"] == "downloaded with apt-get"
    for name, data in package_files.items():  # Debian's .gz bytes, kept as they are
        assert (tmp_path / "raw" / name).read_bytes() == data
        assert record["files"][name]["content_sha256"] == expected[name]
    calls = apt_calls(log)
    assert [call["args"][-2:] for call in calls] == [["download", "dataset-fashion-mnist"]]
    options = calls[0]["args"]
    lists = next(o.split("=", 1)[1] for o in options if o.startswith("Dir::State::Lists="))
    assert lists.startswith(calls[0]["cwd"])  # a private copy in the temporary folder...
    assert listing(system_lists) == before  # ...and the machine's lists are untouched
    assert not Path(calls[0]["cwd"]).exists()  # the temporary folder is gone


def test_refreshes_a_private_copy_of_the_lists_when_apt_finds_nothing(
        tmp_path, package_files, expected):
    empty_lists = tmp_path / "fresh-machine-lists"
    empty_lists.mkdir()
    apt_get, log = fake_apt_get(tmp_path / "bin", make_deb(tmp_path / "repo", package_files))
    fetched = debian_loader(tmp_path, apt_get, expected, empty_lists)()
    assert fetched.source == "debian"
    assert [call["args"][-1] for call in apt_calls(log)] == [
        "dataset-fashion-mnist", "update", "dataset-fashion-mnist"]
    assert all(f"Dir::State::Lists={empty_lists}" not in call["args"]
               for call in apt_calls(log))
    assert listing(empty_lists) == {}  # the update went to the private copy only


def test_a_package_apt_cannot_find_is_unavailable(tmp_path, expected, system_lists):
    apt_get, _ = fake_apt_get(tmp_path / "bin", deb=None)
    with pytest.raises(SourceUnavailable, match="^apt-get download dataset-fashion-mnist "
                                                "failed: E: Unable to locate package"):
        debian_loader(tmp_path, apt_get, expected, system_lists)()


def test_a_wrong_decompressed_checksum_is_refused_and_raw_is_untouched(
        tmp_path, idx_dir, package_files, expected, system_lists):
    out = tmp_path / "raw"
    fetch_raw(FetchParams("local", str(idx_dir)), out)
    before = listing(out)
    name = idx.FILES["test_labels"]
    labels = bytearray(idx.decompress(package_files[name], name))
    labels[-1] = (labels[-1] + 1) % 10  # one label changed: a valid file, wrong content
    tampered = dict(package_files, **{name: gzip.compress(bytes(labels))})
    apt_get, _ = fake_apt_get(tmp_path / "bin", make_deb(tmp_path / "repo", tampered))
    with pytest.raises(DataError, match=f"^{name}: checksum mismatch from "
                                        f"dataset-fashion-mnist_.*_all.deb: sha256 of the "
                                        f"decompressed file .*, expected {expected[name]}"):
        fetch_raw(FetchParams("debian", ""), out,
                  loaders={"debian": debian_loader(tmp_path, apt_get, expected, system_lists)})
    assert listing(out) == before


def test_uses_the_installed_folder_without_calling_apt(tmp_path, package_files, expected):
    installed = tmp_path / "usr-share-datasets-fashion-mnist"
    installed.mkdir()
    for name, data in package_files.items():
        (installed / name).write_bytes(data)
    fetched = sources.from_debian(installed_dir=installed, apt_get="no-such-apt-get",
                                  dpkg_query=str(fake_dpkg_query(tmp_path / "bin")),
                                  expected=expected)
    assert fetched.official_split is True and fetched.files == package_files
    assert fetched.details == {"package": "dataset-fashion-mnist", "version": VERSION,
                               "obtained": f"installed in {installed}"}


def test_without_apt_the_source_is_unavailable_in_one_line(tmp_path, expected):
    with pytest.raises(SourceUnavailable) as caught:
        sources.from_debian(installed_dir=tmp_path / "absent", apt_get="no-such-apt-get",
                            expected=expected)
    assert str(caught.value) == "no-such-apt-get is not installed (not a Debian-based system)"


def test_a_file_that_is_not_a_deb_is_refused(tmp_path):
    deb = tmp_path / fake_debian.DEB_NAME
    deb.write_bytes(b"<html>proxy error</html>")
    with pytest.raises(DataError, match=f"^{deb.name}: not a Debian package dpkg-deb can "
                                        r"unpack \("):
        debian.files_in_package(deb, list(idx.FILES.values()))


def test_a_truncated_deb_is_refused(tmp_path, package_files):
    deb = make_deb(tmp_path, package_files)
    deb.write_bytes(deb.read_bytes()[:-1000])
    with pytest.raises(DataError, match=f"^{deb.name}: not a Debian package dpkg-deb can "
                                        r"unpack \("):
        debian.files_in_package(deb, list(idx.FILES.values()))


def test_any_compression_is_read_through_dpkg_deb(tmp_path, package_files):
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        for name, data in package_files.items():
            info = tarfile.TarInfo(fake_debian.FOLDER_IN_PACKAGE + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "tree.tar").write_bytes(plain.getvalue())
    deb = make_deb(tmp_path, package_files, data_member="data.tar.zst", data=b"(zstd)")
    dpkg_deb = fake_debian.write_executable(
        tmp_path / "dpkg-deb",
        f"import sys\nsys.stdout.buffer.write(open({str(tmp_path / 'tree.tar')!r}, 'rb')"
        ".read())\n")
    assert debian.files_in_package(deb, list(package_files), str(dpkg_deb)) == package_files


def test_without_dpkg_deb_the_package_is_unavailable(tmp_path, package_files):
    deb = make_deb(tmp_path, package_files)
    with pytest.raises(SourceUnavailable, match=f"^{deb.name}: cannot unpack it without "
                                                "no-such-dpkg-deb"):
        debian.files_in_package(deb, list(package_files), "no-such-dpkg-deb")


def test_the_version_comes_from_apts_file_name(tmp_path):
    assert debian.version_of(tmp_path / "dataset-fashion-mnist_1%3a2.0-1_all.deb") == "1:2.0-1"


def offline():
    raise SourceUnavailable("offline")


def test_auto_gets_debian_when_offline_and_the_data_card_says_so(tmp_path, package_files,
                                                                 expected, system_lists):
    apt_get, _ = fake_apt_get(tmp_path / "bin", make_deb(tmp_path / "repo", package_files))
    record = fetch_raw(FetchParams("auto", ""), tmp_path / "raw",
                       loaders={"official": offline, "debian": debian_loader(
                           tmp_path, apt_get, expected, system_lists)})
    assert [s["source"] for s in record["skipped"]] == ["local", "official"]
    prepare(PrepareParams(0.2, 1, "scale"), tmp_path / "raw", tmp_path / "prepared")
    card = json.loads((tmp_path / "prepared" / "data_card.json").read_text())
    assert (card["source"], card["official_split"]) == ("debian", True)
    assert (card["source_package"], card["source_version"]) == ("dataset-fashion-mnist",
                                                                VERSION)
