"""Files replaced all at once: a reader sees the old content or the new, never half.

``atomic_write`` replaces a file now; ``staged_write`` writes the new content first
and replaces the file only when the block it guards ends without an error, so
something that must happen before anyone can read the new content (an audit
record) happens in between:

>>> with staged_write(Path("accepted.json"), content):
...     audit("flags.changed", actor="replica:r1")   # raises: the file keeps its old content
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "staged_write"]

_LATER_NS = 1_000_000
"""How much later than the old file a ``newer`` write's modification time is at least:
1 ms, which a float of seconds still tells apart."""


def atomic_write(
    target: Path, data: bytes, *, durable: bool = True, newer: bool = False, mode: int = 0o600
) -> None:
    """``data`` into ``target`` (``mode``, 0600 unless given) through a temporary file and
    a rename in the same directory. ``durable``: synced to disk before the rename (off for
    a scratch copy nobody needs after a crash). ``newer``: the new file's modification time
    is later than the old one's, for readers that reload only when it grows (two writes
    within one clock tick of the file system would otherwise share one). ``mode`` 0644 for
    a file another user's program reads (Prometheus reading its configuration)."""
    with staged_write(target, data, durable=durable, newer=newer, mode=mode):
        pass


@contextlib.contextmanager
def staged_write(
    target: Path, data: bytes, *, durable: bool = True, newer: bool = False, mode: int = 0o600
) -> Iterator[None]:
    """``data`` written beside ``target`` before the block runs; ``target`` is replaced
    with it when the block ends, and left as it was (the staged file removed) when the
    block raises. ``durable``, ``newer`` and ``mode`` as for ``atomic_write``."""
    before = _mtime_ns(target) if newer else None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        if before is not None and os.stat(tmp).st_mtime_ns <= before:
            later = before + _LATER_NS
            os.utime(tmp, ns=(later, later))
        yield
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
