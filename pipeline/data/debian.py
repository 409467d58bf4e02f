"""Debian's package `dataset-fashion-mnist`: the official files, for machines that reach
package registries only.

The package is read, never installed. `apt-get download` fetches the .deb into a
temporary folder with a private copy of apt's package lists and cache, so the system's
apt state stays exactly as it was (a fresh machine without lists gets its private lists
from its own configured sources). The .deb is an `ar` archive whose data.tar.* member
holds the files; the standard library reads it (xz, gzip, bzip2), and `dpkg-deb` only
where Python cannot (zstd, which distributions such as Ubuntu use).
"""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import tarfile
import urllib.parse
from pathlib import Path

from pipeline.core.errors import DataError, SourceUnavailable

PACKAGE = "dataset-fashion-mnist"
INSTALLED_DIR = Path("/usr/share/datasets/fashion-mnist")  # where the package puts the files
APT_TIMEOUT_S = 600  # per apt-get call: a 31 MB download on a slow link
DEFAULT_LISTS_DIR = Path("/var/lib/apt/lists")

AR_MAGIC = b"!<arch>\n"
AR_HEADER = 60  # name 16, mtime 12, uid 6, gid 6, mode 8, size 10, magic 2


def installed_version(dpkg_query: str = "dpkg-query") -> str:
    """The installed package's version, or 'unknown' when dpkg cannot tell."""
    if shutil.which(dpkg_query) is None:
        return "unknown"
    result = subprocess.run([dpkg_query, "-W", "-f=${Version}", PACKAGE], capture_output=True,
                            text=True, timeout=60, check=False)
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() \
        else "unknown"


# --- downloading the .deb --------------------------------------------------------------


def system_lists_dir(apt_config: str = "apt-config") -> Path:
    """The folder of the machine's package lists, as apt is configured."""
    if shutil.which(apt_config) is not None:
        result = subprocess.run([apt_config, "shell", "LISTS", "Dir::State::lists/d"],
                                capture_output=True, text=True, timeout=60, check=False)
        _, _, value = result.stdout.strip().partition("=")
        if result.returncode == 0 and value:
            return Path(shlex.split(value)[0])
    return DEFAULT_LISTS_DIR


def copy_lists(source: Path, destination: Path) -> None:
    """The list files only: not apt's lock, not its partial downloads."""
    destination.mkdir(parents=True, exist_ok=True)
    (destination / "partial").mkdir(exist_ok=True)
    if source.is_dir():
        for path in source.iterdir():
            if path.is_file() and path.name != "lock":
                shutil.copy2(path, destination / path.name)


def _apt(apt_get: str, options: list[str], args: list[str], cwd: Path) -> str:
    """Run apt-get; its last output line, to explain a failure."""
    try:
        result = subprocess.run([apt_get, *options, *args], cwd=cwd, capture_output=True,
                                text=True, timeout=APT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"apt-get {args[0]} timed out after {APT_TIMEOUT_S}s"
    lines = [line for line in (result.stderr + result.stdout).splitlines()
             if line.strip() and not line.startswith("W: Download is performed unsandboxed")]
    return lines[-1].strip() if lines else f"apt-get {args[0]} exited with {result.returncode}"


def download_deb(folder: Path, apt_get: str = "apt-get",
                 lists_dir: Path | None = None) -> Path:
    """The package's .deb, downloaded into `folder` without touching the system's apt state.

    First with a private copy of the machine's package lists; if apt finds nothing
    there (a fresh machine has no lists), after refreshing that private copy.
    """
    if shutil.which(apt_get) is None:
        raise SourceUnavailable(f"{apt_get} is not installed (not a Debian-based system)")
    private = folder / "apt"
    lists, cache = private / "lists", private / "cache"
    copy_lists(lists_dir if lists_dir is not None else system_lists_dir(), lists)
    cache.mkdir(parents=True, exist_ok=True)
    options = ["-q", "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={cache}"]
    why = _apt(apt_get, options, ["download", PACKAGE], folder)
    if not list(folder.glob(f"{PACKAGE}_*.deb")):
        update = _apt(apt_get, options, ["update"], folder)
        why = _apt(apt_get, options, ["download", PACKAGE], folder) + f" (after update: {update})"
    debs = sorted(folder.glob(f"{PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise SourceUnavailable(f"apt-get download {PACKAGE} failed: {why}")
    return debs[0]


def version_of(deb: Path) -> str:
    """The version in apt's file name: <package>_<version>_<arch>.deb, ':' as %3a."""
    parts = deb.name.split("_")
    return urllib.parse.unquote(parts[1]) if len(parts) == 3 else "unknown"


# --- reading the .deb -------------------------------------------------------------------


def ar_members(archive: bytes, name: str) -> dict[str, bytes]:
    """The members of an `ar` archive (the container format of a .deb)."""
    if not archive.startswith(AR_MAGIC):
        raise DataError(f"{name}: not a Debian package (no ar archive header)")
    members, position = {}, len(AR_MAGIC)
    while position < len(archive):
        header = archive[position:position + AR_HEADER]
        if len(header) < AR_HEADER or header[58:60] != b"`\n":
            raise DataError(f"{name}: damaged ar member header at byte {position}")
        member = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58])
        except ValueError:
            raise DataError(f"{name}: damaged size of ar member {member!r}") from None
        start = position + AR_HEADER
        data = archive[start:start + size]
        if len(data) < size:
            raise DataError(f"{name}: ar member {member!r} is truncated")
        members[member] = data
        position = start + size + size % 2  # members start on even offsets
    return members


def data_tar(deb: Path, dpkg_deb: str = "dpkg-deb") -> tarfile.TarFile:
    """The package's file tree (its data.tar.* member) as an open tar archive."""
    members = ar_members(deb.read_bytes(), deb.name)
    found = [member for member in members if member.startswith("data.tar")]
    if len(found) != 1:
        raise DataError(f"{deb.name}: expected one data.tar member, found {sorted(members)}")
    try:
        return tarfile.open(fileobj=io.BytesIO(members[found[0]]), mode="r:*")
    except tarfile.ReadError:
        pass  # a compression this Python lacks (zstd before 3.14): dpkg-deb reads it
    if shutil.which(dpkg_deb) is None:
        raise SourceUnavailable(f"{deb.name}: cannot read its {found[0]} without {dpkg_deb}")
    result = subprocess.run([dpkg_deb, "--fsys-tarfile", str(deb)], capture_output=True,
                            timeout=APT_TIMEOUT_S, check=False)
    if result.returncode != 0:
        last = (result.stderr.decode(errors="replace").strip().splitlines() or ["no output"])
        raise DataError(f"{deb.name}: dpkg-deb cannot unpack it: {last[-1]}")
    return tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r:")


def files_in_package(deb: Path, names: list[str], dpkg_deb: str = "dpkg-deb"
                     ) -> dict[str, bytes]:
    """The named files of the installed-files folder, read from the .deb."""
    folder = str(INSTALLED_DIR).lstrip("/")
    files = {}
    with data_tar(deb, dpkg_deb) as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            directory, _, base = path.rpartition("/")
            if directory == folder and base in names and member.isfile():
                files[base] = tar.extractfile(member).read()
    missing = [name for name in names if name not in files]
    if missing:
        raise DataError(f"{deb.name}: no {', '.join(missing)} in /{folder}/")
    return files
