"""File stamps: how a watcher tells, with one ``stat``, that a file changed.

A file written in place or replaced (an editor's rename, ``atomic_write``) has another
stamp: its inode, size or modification time differs. The flag gate and the overrides
watcher stat their files with it and read them only when the stamp moved.

>>> stamp = file_stamp(Path("flags.json"))
>>> file_stamp(Path("flags.json")) == stamp   # nothing changed
True
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["FileStamp", "file_stamp"]

FileStamp = tuple[int, int, int]
"""(inode, size, modification time in ns)."""


def file_stamp(path: Path) -> FileStamp | None:
    """The stamp of ``path``; ``None`` when there is no such file (or a parent is not a
    directory). Other ``OSError`` (no permission to look) is raised."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)
