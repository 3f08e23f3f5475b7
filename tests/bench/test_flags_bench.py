"""The flags bench times what it names: every live key flagged (with targeting) and the
in-process turn with all of them in force still answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.config.live import live_keys
from bench import flags as bench_flags


def test_the_document_flags_every_live_key(tmp_path: Path) -> None:
    settings = bench_flags.bench_settings(tmp_path)
    document = bench_flags.flag_document(len(live_keys()), settings)
    assert set(document.flags) == set(live_keys())
    assert all(flag.targeting for flag in document.flags.values())


async def test_a_turn_with_every_flag_in_force_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_flags, "TURNS", 30)
    monkeypatch.setattr(bench_flags, "TURN_WARMUP", 5)
    bench_flags.write_flag_file(tmp_path, len(live_keys()))
    p50, p99 = await bench_flags.time_turns(tmp_path, flags=len(live_keys()))
    assert 0 < p50 <= p99
