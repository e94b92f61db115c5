"""Writing files that hold secrets, and directories that must survive a power cut."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["make_directories", "write_private"]


def write_private(path: Path, data: bytes) -> None:
    """Write with mode 0600 from the start: key material is never world-readable, even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def make_directories(path: Path) -> None:
    """``mkdir -p``, durably: each directory made, and the one it was made in, is fsynced.

    A new directory's entry lives in its parent; until the parent is synced a power cut can take
    the directory away, with the inbox that SQLite had already synced inside it.
    """
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        _sync_directory(directory)
        _sync_directory(directory.parent)


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
