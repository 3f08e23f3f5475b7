"""Small rehearsals of a release on a real `keel up`, checked from the stored turns.

The same harness as `python -m bench.rehearsal`, with 20 live sessions and a short
think time: a v2 whose tool success is 5 points worse is rolled back by the judge,
and a blue/green switch is aborted within the switch-back window. Both assert that
no turn failed, that every acknowledged turn is stored on the version its reply
named, and that each session is on one version or moved once at a turn boundary.
Timings are printed, never asserted.
"""

from __future__ import annotations

import pytest
from bench.rehearsal.scenarios import Options, Outcome, bluegreen, canary

pytestmark = pytest.mark.slow


def small() -> Options:
    return Options(
        sessions=20,
        time_scale=60.0,
        turns=(4, 8),
        think_s=(0.05, 0.25),
        warmup_s=3.0,
        healthy_canary=False,
    )


def show(outcome: Outcome) -> None:
    for figure in outcome.figures:
        print(f"{outcome.name}: {figure.name} = {figure.shown()} {figure.note}")


def assert_clean(outcome: Outcome, phase: str) -> None:
    verdict = outcome.verdicts[phase]
    assert not outcome.notes, outcome.notes
    assert verdict.failed_turns == []
    assert verdict.missing_turns == [] and verdict.wrong_version == []
    assert verdict.bad_sequences == [] and verdict.unreadable == []
    assert verdict.sessions_checked >= 20


async def test_a_worse_v2_is_rolled_back_by_the_judge_with_no_failed_turn() -> None:
    outcome = await canary(small())
    show(outcome)
    assert_clean(outcome, "worse v2")
    # Sessions that started on the rolled-back v2 moved to v1 at a turn boundary.
    assert set(outcome.verdicts["worse v2"].moves_by_path) <= {"v2 -> v1"}


async def test_blue_green_switch_back_within_the_window_with_no_failed_turn() -> None:
    outcome = await bluegreen(small())
    show(outcome)
    assert_clean(outcome, "blue/green")
    assert any(
        f.name.startswith("switch-back: abort issued -> first new session") for f in outcome.figures
    )
