"""A small Debian package and stand-ins for apt-get and dpkg-query, for fast tests.

The .deb is real: an `ar` archive with debian-binary, control.tar.xz and data.tar.xz,
laid out as Debian's `dataset-fashion-mnist` (dpkg-deb can list it). The stand-ins are
executables that log their arguments, so a test sees exactly how apt was called.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tarfile
from pathlib import Path

from pipeline.data import debian

VERSION = "0.0~git20200523.55506a9-1"
DEB_NAME = f"{debian.PACKAGE}_{VERSION}_all.deb"
FOLDER_IN_PACKAGE = "./usr/share/datasets/fashion-mnist/"


def regzip(data: bytes) -> bytes:
    """Same content, other .gz bytes: as Debian re-gzipped the official files."""
    return gzip.compress(gzip.decompress(data), compresslevel=9, mtime=1591350000)


def tar_xz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def ar_archive(members: dict[str, bytes]) -> bytes:
    """The common `ar` format (as dpkg-deb writes it): 60-byte headers, even offsets."""
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def make_deb(folder: Path, files: dict[str, bytes], data_member: str = "data.tar.xz",
             data: bytes | None = None) -> Path:
    """A .deb holding `files` (name -> .gz bytes) where Debian's package puts them."""
    control = (f"Package: {debian.PACKAGE}\nVersion: {VERSION}\nArchitecture: all\n"
               "Description: fake for tests\n").encode()
    tree = {FOLDER_IN_PACKAGE + name: data for name, data in files.items()}
    tree["./usr/share/doc/dataset-fashion-mnist/copyright"] = b"Expat\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DEB_NAME
    path.write_bytes(ar_archive({
        "debian-binary": b"2.0\n",
        "control.tar.xz": tar_xz({"./control": control}),
        data_member: tar_xz(tree) if data is None else data,
    }))
    return path


def write_executable(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def fake_apt_get(folder: Path, deb: Path | None) -> tuple[Path, Path]:
    """An apt-get that knows the package only once its lists hold a Packages file.

    `download` copies `deb` into the working folder, `update` writes Packages into the
    lists folder named by -o Dir::State::Lists. Returns (executable, log of calls).
    """
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "apt-calls.jsonl"
    script = write_executable(folder / "apt-get", f'''
import json, os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
options = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "-o")
with open({str(log)!r}, "a") as log:
    log.write(json.dumps({{"args": args, "cwd": os.getcwd()}}) + "\\n")
lists = Path(options["Dir::State::Lists"])
if "update" in args:
    (lists / "Packages").write_text("Package: dataset-fashion-mnist\\n")
elif "download" in args:
    deb = {str(deb) if deb else ""!r}
    if not (lists / "Packages").is_file() or not deb:
        sys.exit("E: Unable to locate package dataset-fashion-mnist")
    shutil.copy(deb, Path.cwd() / Path(deb).name)
''')
    return script, log


def apt_calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def fake_dpkg_query(folder: Path, version: str = VERSION) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_executable(folder / "dpkg-query", f"print({version!r}, end='')\n")
