"""Evaluation sets: the bundled local-smoke set, loading a set from a file, and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.errors import ConfigError
from agentkeel.ops.evals import bundled_eval_sets, load_eval_set


def test_local_smoke_ships_with_single_questions_and_follow_ups() -> None:
    """local-smoke is bundled, with 10-15 single questions and two- and three-turn cases."""
    assert "local-smoke" in bundled_eval_sets()
    smoke = load_eval_set("local-smoke")
    lengths = [len(case.turns) for case in smoke.cases]
    assert 10 <= lengths.count(1) <= 15
    assert lengths.count(2) >= 3
    assert lengths.count(3) >= 2
    assert smoke.english
    assert len({case.name for case in smoke.cases}) == len(smoke.cases)
    assert smoke.turn_count == sum(lengths)


def test_a_set_is_read_from_a_yaml_file(tmp_path: Path) -> None:
    """A path loads that file; english defaults to on."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\ncases:\n  - name: one\n    turns:\n      - user: Hi\n        expect: [hello]\n"
    )
    loaded = load_eval_set(path)
    assert loaded.name == "mine"
    assert loaded.cases[0].turns[0].expect == ("hello",)
    assert loaded.english


def test_an_unknown_bundled_name_lists_the_known_ones() -> None:
    """A name that is no bundled set is a ConfigError that names it and the sets there are."""
    with pytest.raises(ConfigError) as caught:
        load_eval_set("nope")
    assert "'nope'" in caught.value.message
    assert "local-smoke" in caught.value.message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A path that does not exist names the path."""
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as caught:
        load_eval_set(missing)
    assert str(missing) in caught.value.message


def test_a_turn_without_expected_answers_is_refused(tmp_path: Path) -> None:
    """An empty expect list is a ConfigError naming the field's location."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ncases:\n  - name: one\n    turns:\n      - user: Hi\n        expect: []\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_eval_set(path)
    assert "cases.0.turns.0.expect" in caught.value.message


def test_invalid_yaml_is_a_config_error(tmp_path: Path) -> None:
    """A file that is not YAML says so, with the file's name."""
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_eval_set(path)
    assert "not valid YAML" in caught.value.message
