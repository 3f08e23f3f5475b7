"""`keel golden run`: a table per turn, JSON, and exit codes 0 / 1 / 2 against a real agent
server on a free port."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from agentkeel.cli.main import app
from tests.ops.golden.agents import CALCULATOR_SCRIPT, agent_app, serving
from tests.tools.servers import free_port

SUITE = """\
name: cli-check
cases:
  - name: calculator
    turns:
      - user: What is 6*7?
        expect: {tool_called: calculator, contains: ["42"]}
  - name: wrong-tool
    turns:
      - user: What time is it?
        expect: {tool_called: current_time}
"""


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    with serving(agent_app(tmp_path, script=CALCULATOR_SCRIPT)) as url:
        yield url


def golden(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(
        app,
        ["--data-dir", str(tmp_path / "no-stack"), "golden", "run", *args],
        env={"COLUMNS": "200"},
    )


def suite_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "golden.yaml"
    path.write_text(text)
    return path


def test_all_passed_exits_0_with_a_table(tmp_path: Path) -> None:
    """The bundled suite against the echoing model: a row per turn, the summary, exit 0."""
    with serving(agent_app(tmp_path / "echo")) as echo:
        result = golden(tmp_path, "--target", echo)
    assert result.exit_code == 0, result.output
    assert "golden suite local-smoke" in result.stdout
    assert "follow-up" in result.stdout
    assert f"local-smoke against {echo}: 3/3 cases passed" in result.stdout
    assert "FAIL" not in result.stdout


def test_a_failed_case_exits_1_naming_the_problem(tmp_path: Path, target: str) -> None:
    """One case failing a property: its row says FAIL and why; exit 1."""
    result = golden(tmp_path, "--target", target, "--file", str(suite_file(tmp_path, SUITE)))
    assert result.exit_code == 1, result.output
    assert "did not call current_time (called: calculator)" in result.stdout
    assert "1/2 cases passed" in result.stdout


def test_json_output(tmp_path: Path, target: str) -> None:
    """--json prints the report as JSON on stdout (nothing else there); exit 1 still."""
    result = golden(
        tmp_path, "--target", target, "--file", str(suite_file(tmp_path, SUITE)), "--json"
    )
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is False
    assert [case["name"] for case in data["cases"] if case["passed"]] == ["calculator"]
    assert data["cases"][0]["turns"][0]["tool_calls"] == ["calculator"]


def test_a_bad_file_exits_2_naming_the_line(tmp_path: Path, target: str) -> None:
    """A suite with a syntax error: exit 2, one red line naming the file and the line."""
    bad = suite_file(tmp_path, "name: x\ncases:\n  - name: [oops\n")
    result = golden(tmp_path, "--target", target, "--file", str(bad))
    assert result.exit_code == 2
    assert "not valid YAML" in result.stderr
    assert "line 4" in result.stderr
    assert "Traceback" not in result.output


def test_a_target_that_is_down_exits_2(tmp_path: Path) -> None:
    """Nothing listens at --target: exit 2 with the URL and what to check."""
    url = f"http://127.0.0.1:{free_port()}"
    result = golden(tmp_path, "--target", url)
    assert result.exit_code == 2
    assert url in result.stderr
    assert "Check that it is running" in result.stderr


def test_help_has_an_example() -> None:
    """`keel golden run --help` ends with an example."""
    result = CliRunner().invoke(app, ["golden", "run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example: keel golden run --target" in result.stdout
