"""Golden suites: the bundled local-smoke suite, the format, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.errors import ConfigError
from agentkeel.ops.golden import bundled_golden_suites, load_golden_suite


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "golden.yaml"
    path.write_text(text)
    return path


def test_local_smoke_is_bundled() -> None:
    """local-smoke ships, with unique case names and a follow-up of two turns."""
    assert "local-smoke" in bundled_golden_suites()
    suite = load_golden_suite("local-smoke")
    assert suite.name == "local-smoke"
    assert any(len(case.turns) >= 2 for case in suite.cases)


def test_every_property_is_read_and_one_word_reads_as_a_list(tmp_path: Path) -> None:
    """contains, not_contains, matches, tool_called and error are read; a single string
    where a list is wanted is a list of one; a turn without expect expects no error."""
    path = write(
        tmp_path,
        """\
name: mine
cases:
  - name: all
    turns:
      - user: What is 6*7?
        expect:
          contains: answer
          not_contains: [sorry, cannot]
          matches: '\\b42\\b'
          tool_called: calculator
      - user: and?
  - name: refused
    turns:
      - user: x
        expect: {error: input_too_large}
""",
    )
    suite = load_golden_suite(path)
    first = suite.cases[0].turns[0].expect
    assert first.contains == ("answer",)
    assert first.not_contains == ("sorry", "cannot")
    assert first.matches == r"\b42\b"
    assert first.tool_called == ("calculator",)
    assert first.error is None
    assert suite.cases[0].turns[1].expect.contains == ()
    assert suite.cases[1].turns[0].expect.error == "input_too_large"
    assert not suite.english


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    """A syntax error is a ConfigError naming the file and the line of the error."""
    path = write(tmp_path, "name: x\ncases:\n  - name: a\n    turns: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_golden_suite(path)
    assert "not valid YAML" in caught.value.message
    assert str(path) in caught.value.message
    assert "line 5" in caught.value.message


def test_an_unknown_property_names_its_place_and_line(tmp_path: Path) -> None:
    """A misspelt property is refused with its path in the file and its line."""
    path = write(
        tmp_path,
        "name: x\ncases:\n  - name: a\n    turns:\n      - user: hi\n        expect:\n"
        "          contain: [hi]\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_golden_suite(path)
    assert "cases.0.turns.0.expect.contain" in caught.value.message
    assert "(line 7)" in caught.value.message
    assert "at least 1 item" not in caught.value.message


def test_a_bad_regular_expression_is_refused_when_loading(tmp_path: Path) -> None:
    """matches must compile: the error says so, at the line of the pattern."""
    path = write(
        tmp_path,
        "name: x\ncases:\n  - name: a\n    turns:\n      - user: hi\n        expect:\n"
        "          matches: '(unclosed'\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_golden_suite(path)
    assert "not a valid regular expression" in caught.value.message
    assert "(line 7)" in caught.value.message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: x\ncases: []\n", "cases"),
        ("name: x\ncases:\n  - name: a\n    turns: []\n", "cases.0.turns"),
        ("name: x\ncases:\n  - name: a\n    turns:\n      - user: ''\n", "cases.0.turns.0.user"),
        (
            "name: x\ncases:\n  - name: a\n    turns:\n      - user: hi\n        expect:\n"
            "          contains: ['']\n",
            "cases.0.turns.0.expect.contains",
        ),
        ("", "(top level)"),
    ],
)
def test_empty_parts_are_refused(tmp_path: Path, text: str, where: str) -> None:
    """An empty file, no cases, no turns, an empty message or an empty word are refused,
    naming where."""
    with pytest.raises(ConfigError) as caught:
        load_golden_suite(write(tmp_path, text))
    assert where in caught.value.message


def test_two_cases_of_one_name_are_refused(tmp_path: Path) -> None:
    """Case names identify results, so they are unique."""
    path = write(
        tmp_path,
        "name: x\ncases:\n  - name: a\n    turns: [{user: hi}]\n"
        "  - name: a\n    turns: [{user: ho}]\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_golden_suite(path)
    assert "two cases are named 'a'" in caught.value.message


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    """A missing path names the path; an unknown bundled name lists the bundled suites."""
    with pytest.raises(ConfigError) as missing:
        load_golden_suite(tmp_path / "nope.yaml")
    assert "nope.yaml" in missing.value.message
    with pytest.raises(ConfigError) as unknown:
        load_golden_suite("no-such-suite")
    assert "'no-such-suite'" in unknown.value.message
    assert "local-smoke" in unknown.value.message
