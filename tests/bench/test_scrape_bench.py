"""The scrape benchmark measures what it names: a replica filled with ended sessions
(each with a turn), whose /metrics body it times and counts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import scrape


async def test_the_filled_replica_counts_every_session_and_its_series_stay_bounded(
    tmp_path: Path,
) -> None:
    """Each session ended once with its turn; the series count after many sessions is the
    one after the first (no per-session label)."""
    measured = await scrape.fill_and_measure(
        tmp_path, scrape.Options(sessions=12, runs=2, scrapes=3)
    )
    assert len(measured.scrape_ms) == len(measured.render_ms) == 2
    assert all(0 < p50 <= p99 for p50, p99 in measured.scrape_ms + measured.render_ms)
    assert measured.body_bytes > 0
    assert measured.series == measured.series_after_one > 0


def test_the_body_counts_one_series_per_sample() -> None:
    body = (
        b"# TYPE agent_turns_total counter\n"
        b'agent_turns_total{agent="a",status="ok",version="v1"} 2\n'
        b'agent_turns_total{agent="a",status="error",version="v1"} 1\n'
        b"# TYPE agent_draining gauge\n"
        b"agent_draining 0\n"
    )
    assert scrape.series_count(body) == 3


def test_options_refuse_values_below_one() -> None:
    args = argparse.Namespace(sessions=0, runs=5, scrapes=10, no_turns=False)
    with pytest.raises(SystemExit, match="--sessions"):
        scrape.options_from(args)
