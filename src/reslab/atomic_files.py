"""Files replaced atomically where they land, so that a crash at any instant (kill -9, a node's
death) leaves either the old file or the new one, never a cut-off one.

The new content goes to a temp file in the target's own folder (a rename is atomic only within
one filesystem; a temp file in $TMPDIR on another filesystem would be copied over the target,
truncating it first), is flushed and fsynced, then renamed over the target, and the folder is
fsynced so that the rename itself survives a power loss. A temp file left by a write that was
killed is removed by the next write of the same target.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"


def temp_files_of(path: Path) -> list[Path]:
    """Temp files that writes of `path` create beside it (`.NAME.<random>.tmp`)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"))


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content to; it replaces `path` when the block ends
    without an error, and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in temp_files_of(path):  # from a write killed before its rename
        leftover.unlink(missing_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(path.parent)


def check_writable(folder: str | os.PathLike) -> None:
    """Raise the OSError that a write into `folder` meets now (a full disk, a quota, a read-only
    mount), leaving nothing behind: a page-sized temp file is written, fsynced and removed, and
    the folder, when this made it, removed again."""
    folder = Path(folder)
    made = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".probe.", suffix=TEMP_SUFFIX)
        try:
            os.write(fd, bytes(4096))
            os.fsync(fd)
        finally:
            os.close(fd)
            with suppress(OSError):
                os.unlink(temp)
    except OSError:
        if made:
            with suppress(OSError):
                folder.rmdir()
        raise


def create_new(path: str | os.PathLike, data: bytes) -> None:
    """Create `path` holding `data`, whole, only if it does not exist (FileExistsError if it
    does): the content goes to a temp file beside it, fsynced, which is then hard-linked as
    `path`. A link is an exclusive create that never shows a reader a half-written file, and
    is atomic on NFS too (O_EXCL is not on old clients). Its temp files (`.NAME.<random>.new`) are
    not swept by other writers: several processes may be creating `path` at the same instant."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)
    finally:
        with suppress(OSError):
            os.unlink(temp)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # The rename is an entry of the folder: durable once the folder is synced. Some filesystems
    # refuse to sync a folder (EINVAL); the rename has happened all the same.
    fd = os.open(folder, os.O_RDONLY)
    try:
        with suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
