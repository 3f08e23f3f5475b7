"""An exclusive lock on a lock file (``flock``), between processes and threads.

The writers of a shared file in the data directory (replicas accepting a flag file,
``keel flags set``, replicas auditing an overrides change) take the lock file beside
it for the whole read-compare-write, so one of them at a time decides.

>>> with exclusive_lock(Path(".keel/flags/3f2a9c/lock")):
...     ...   # no other holder until the block ends
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive_lock"]


@contextlib.contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold ``lock_file``'s lock (created 0600 with its directory if missing) for the
    block; other holders wait. ``OSError`` when the file cannot be made or opened."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
