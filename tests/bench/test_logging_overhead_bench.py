"""The logging bench times what it names: each way of logging gets its turns, the turns
logged to files write their lines into the category files (and only those are counted),
and the root logger is put back afterwards."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bench import logging_overhead as bench_logging


def test_each_way_gets_its_turns_and_only_file_turns_are_counted(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    samples, written = bench_logging.one_run(tmp_path, turns=3, warmup=1)
    assert {mode: len(values) for mode, values in samples.items()} == {
        "nothing": 3,
        "stdout": 3,
        "files": 3,
    }
    assert all(value > 0 for values in samples.values() for value in values)
    # At least the access line of each of the three turns logged to files.
    assert written.lines["access"] >= 3 and written.bytes > 0
    # The other ways wrote no file line.
    ids = {
        json.loads(raw)["correlation_id"]
        for path in (tmp_path / "logs").rglob("*.jsonl")
        for raw in path.read_text().splitlines()
    }
    turns = {cid for cid in ids if cid and cid.startswith(bench_logging.TURN_ID)}
    assert turns == {f"{bench_logging.FILE_TURNS}{index}" for index in range(3)}
    assert (list(root.handlers), root.level) == before
