"""Atomic artifact writes: a temp file or folder beside the target, then one rename.

A killed stage therefore leaves either the old artifact or none, never a half-written
one that DVC could hash and cache as a result. Inside `all_or_nothing()` the renames wait
until every write of the block succeeded, so a stage that fails half-way through its
outputs (a full disk) keeps the previous set whole. A full disk is one PipelineError
naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from pipeline.core.errors import PipelineError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

# The renames an all_or_nothing() block holds back: (commit, discard) pairs, in order.
_held: list[tuple[Callable[[], None], Callable[[], None]]] | None = None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_sibling(path: Path, suffix: str = "") -> Path:
    """A temp file beside `path` (same filesystem, so rename is atomic), normal mode bits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


@contextlib.contextmanager
def _no_space_is_one_line(path: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise PipelineError(f"{path}: cannot be written: {exc.strerror}; the previous "
                            "outputs are kept: free some space and rerun") from None


def _land(commit: Callable[[], None], discard: Callable[[], None]) -> None:
    """Rename a finished temp into place now, or when the all_or_nothing block ends."""
    if _held is not None:
        _held.append((commit, discard))
        return
    try:
        commit()
    except BaseException:
        discard()
        raise


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """The atomic writes inside land together once the block succeeds; if it fails, none
    lands and their temps are removed. (Inside an outer block, the outer one decides.)"""
    global _held
    if _held is not None:
        yield
        return
    _held = held = []
    try:
        yield
    except BaseException:
        for _, discard in held:
            discard()
        raise
    finally:
        _held = None
    for number, (commit, _) in enumerate(held):
        try:
            commit()
        except BaseException:
            for _, discard in held[number:]:
                discard()
            raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path to write; it replaces `path` only if the block succeeds.

    `suffix` keeps an extension some writers insist on (Keras wants `.keras`).
    """
    path = Path(path)
    with _no_space_is_one_line(path):
        tmp = _temp_sibling(path, suffix)
        try:
            yield tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _land(lambda: os.replace(tmp, path), lambda: tmp.unlink(missing_ok=True))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp folder; it replaces folder `path` only if the block succeeds."""
    path = Path(path)
    with _no_space_is_one_line(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        old = None
        try:
            os.chmod(tmp, 0o777 & ~_umask())
            yield tmp
            if path.exists():  # made now: landing then only renames, which need no space
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old",
                                            dir=path.parent))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

        def commit() -> None:
            if old is not None:
                os.replace(path, old / path.name)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old)

        def discard() -> None:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

        _land(commit, discard)
