"""Files the config watchers share: staged replacement, stamps and the lock file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from agentkeel.storage.atomic import atomic_write, staged_write
from agentkeel.storage.file_lock import exclusive_lock
from agentkeel.storage.file_stamp import file_stamp


def test_a_staged_write_replaces_the_file_only_when_its_block_succeeds(tmp_path: Path) -> None:
    """Inside the block the old content is still what readers see; an error in the block
    leaves it and removes the staged file; a clean exit replaces it (mode 0600)."""
    target = tmp_path / "copy.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), staged_write(target, b"new"):
        assert target.read_bytes() == b"old"
        raise RuntimeError("the audit failed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.json"]
    with staged_write(target, b"new"):
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600


def test_a_newer_write_always_moves_the_modification_time_forward(tmp_path: Path) -> None:
    """newer=True: even two writes within one clock tick give a later mtime (a reader that
    reloads only when the mtime grows sees every write)."""
    target = tmp_path / "served.json"
    atomic_write(target, b"1", durable=False)
    future = target.stat().st_mtime_ns + 10_000_000_000
    os.utime(target, ns=(future, future))
    atomic_write(target, b"2", durable=False, newer=True)
    assert target.stat().st_mtime_ns > future


def test_a_stamp_changes_with_the_file_and_is_none_without_it(tmp_path: Path) -> None:
    """Replaced or rewritten, the stamp moves; a missing file (or a file as a parent
    directory) has none."""
    path = tmp_path / "overrides.yaml"
    assert file_stamp(path) is None
    assert file_stamp(path / "below") is None
    path.write_text("a")
    first = file_stamp(path)
    assert first is not None and file_stamp(path) == first
    atomic_write(path, b"b")
    assert file_stamp(path) not in (None, first)


def test_the_lock_is_held_by_one_holder_at_a_time(tmp_path: Path) -> None:
    """A second holder waits until the first leaves the block; the lock file and its
    directory are created."""
    lock_file = tmp_path / "flags" / "x" / "lock"
    order: list[str] = []
    inside = threading.Event()

    def second() -> None:
        assert inside.wait(10.0)
        with exclusive_lock(lock_file):
            order.append("second")

    thread = threading.Thread(target=second)
    with exclusive_lock(lock_file):
        thread.start()
        inside.set()
        thread.join(0.2)
        assert thread.is_alive()
        order.append("first")
    thread.join(10.0)
    assert order == ["first", "second"]
    assert lock_file.stat().st_mode & 0o777 == 0o600
