"""Writing files so that a crash never leaves half of one: every file the library writes goes through here.

`atomic_write(path, write)` hands `write` a temporary file in the target's folder, fsyncs it, then renames
it onto `path` with `os.replace` (atomic on POSIX and Windows) and fsyncs the folder, so a reader (or the
next run after a power loss) sees the old file or the new one, never a mix. This is the pattern of
SQLite's and git's own writers ("write, fsync, rename, fsync the directory").
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "temporary_path"]


def temporary_path(path: Path) -> Path:
    """The temporary name `atomic_write` uses for `path`: same folder (os.replace is only atomic within one
    file system), a leading dot and ".tmp-" (so folder listings of results skip it), pid + random bits (so
    two writers, or a writer and a crashed writer's leftover, never share a name)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_directory(directory: Path) -> None:
    # The rename lives in the folder's entry table; without this a power loss can undo it.
    if os.name != "posix":  # Windows cannot open a folder as a file; NTFS journals the rename itself.
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[BinaryIO], Any], *, check: Callable[[Path], None] | None = None) -> Path:
    """Write `path` through `write(binary_file)` on a temporary file, then rename it into place.

    `check(temporary_path)` runs after the data is on disk and before the rename; if it (or `write`, or
    anything else) raises, the temporary file is removed and `path` is left exactly as it was. The parent
    folder must exist. Returns `path`.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        # O_EXCL: never write through a file someone else created; 0o666 so the umask decides the final
        # permissions as for any ordinary file (mkstemp would leave the file private to its owner).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        # BaseException on purpose: a KeyboardInterrupt mid-write must not leave a stray file either.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_text(path, text: str) -> Path:
    """`atomic_write` of a str as UTF-8."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda file: file.write(data))


def atomic_write_json(path, value, **dumps_options) -> Path:
    """`atomic_write` of `json.dumps(value, **dumps_options)`, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(value, **dumps_options))
