"""`keel eval`: a line per turn, the score, and exit 1 below --min-score."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app

SET = """\
name: echo-check
cases:
  - name: right
    turns:
      - user: Is it Paris?
        expect: [Paris]
  - name: wrong
    turns:
      - user: Is it Paris?
        expect: [Rome]
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A keel.yaml whose scripted model echoes, and a two-case evaluation set."""
    config = tmp_path / "keel.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nsecrets_dir: null\n"
        "models:\n  - name: scripted\n    kind: scripted\n"
    )
    chosen = tmp_path / "set.yaml"
    chosen.write_text(SET)
    return config, chosen


def test_eval_prints_each_turn_and_the_score(files: tuple[Path, Path]) -> None:
    """Each turn prints pass or FAIL with the reason, then the summary; exit 0."""
    config, chosen = files
    result = CliRunner().invoke(
        app, ["--config", str(config), "eval", str(chosen)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    scoring, *lines = result.stdout.splitlines()
    assert scoring == "scoring an agent server built in-process from the settings"
    assert lines[0].startswith("pass right#1")
    assert lines[1].startswith("FAIL wrong#1")
    assert "(names none of Rome)" in lines[1]
    assert lines[-1] == "echo-check: 1/2 turns (50%), 1/2 cases"


def test_eval_below_min_score_exits_1(files: tuple[Path, Path]) -> None:
    """A score under --min-score exits 1 and says so; at or over it exits 0."""
    config, chosen = files
    low = CliRunner().invoke(
        app, ["--config", str(config), "eval", str(chosen), "--min-score", "0.75"]
    )
    assert low.exit_code == 1
    assert "below --min-score 75%" in low.stdout
    enough = CliRunner().invoke(
        app, ["--config", str(config), "eval", str(chosen), "--min-score", "0.5"]
    )
    assert enough.exit_code == 0


def test_eval_of_an_unknown_set_exits_2(files: tuple[Path, Path]) -> None:
    """An unknown bundled name is a configuration error: exit 2 with the names there are."""
    config, _ = files
    result = CliRunner().invoke(app, ["--config", str(config), "eval", "no-such-set"])
    assert result.exit_code == 2
    assert "local-smoke" in result.stderr
