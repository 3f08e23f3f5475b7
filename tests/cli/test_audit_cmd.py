"""``keel audit verify`` and ``keel audit show`` over a real audit file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app
from agentkeel.telemetry.audit_file import AuditFile, audit_file_path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    file = AuditFile(audit_file_path(tmp_path))
    file.append(action="router.set_weights", actor="router.admin_token:sha256:aa", details={})
    file.append(
        action="memory.fence.up",
        actor="admin:k1",
        outcome="ok",
        source={"service": "memory", "remote": "10.1.2.3"},
    )
    file.append(action="rollout.abort", actor="cli:ana", outcome="failed")
    return tmp_path


def test_verify_intact_exits_0_and_prints_the_head(data_dir: Path) -> None:
    """An untouched file: exit 0, the record count and the head hash."""
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "audit", "verify"])
    assert result.exit_code == 0, result.output
    last = json.loads(audit_file_path(data_dir).read_text().splitlines()[-1])
    assert "3 record(s)" in result.stdout
    assert last["hash"] in result.stdout


def test_verify_broken_exits_1_naming_the_first_bad_seq(data_dir: Path) -> None:
    """A changed record: exit 1, its seq and why."""
    path = audit_file_path(data_dir)
    path.write_text(path.read_text().replace("memory.fence.up", "memory.fence.down"))
    result = CliRunner().invoke(app, ["audit", "verify", "--file", str(path)])
    assert result.exit_code == 1
    assert "seq 2" in result.stderr and "changed" in result.stderr


def test_verify_with_a_head_that_is_gone_exits_1(data_dir: Path) -> None:
    """--head names a hash the file no longer holds: the end was cut off."""
    path = audit_file_path(data_dir)
    head = json.loads(path.read_text().splitlines()[-1])["hash"]
    path.write_text("\n".join(path.read_text().splitlines()[:2]) + "\n")
    result = CliRunner().invoke(app, ["audit", "verify", "--file", str(path), "--head", head])
    assert result.exit_code == 1
    assert "removed" in result.stderr


def test_show_filters_by_actor_action_and_time(data_dir: Path) -> None:
    """--who, --action and --since narrow the list; --json prints the records."""
    base = ["--data-dir", str(data_dir), "audit", "show", "--json"]
    runner = CliRunner()
    by_who = json.loads(runner.invoke(app, [*base, "--who", "admin:"]).stdout)
    assert [r["action"] for r in by_who] == ["memory.fence.up"]
    by_action = json.loads(runner.invoke(app, [*base, "--action", "rollout."]).stdout)
    assert [r["outcome"] for r in by_action] == ["failed"]
    recent = json.loads(runner.invoke(app, [*base, "--since", "1h"]).stdout)
    assert len(recent) == 3
    future = json.loads(runner.invoke(app, [*base, "--since", "2999-01-01T00:00:00Z"]).stdout)
    assert future == []


def test_show_prints_a_table_with_where_from(data_dir: Path) -> None:
    """The table names the service and the remote address."""
    result = CliRunner().invoke(
        app, ["--data-dir", str(data_dir), "audit", "show"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "memory.fence.up" in result.stdout
    assert "10.1.2.3" in result.stdout


def test_show_refuses_a_bad_since(data_dir: Path) -> None:
    """--since yesterday is neither a span nor an ISO time: one red line, exit 1."""
    result = CliRunner().invoke(
        app, ["--data-dir", str(data_dir), "audit", "show", "--since", "yesterday"]
    )
    assert result.exit_code == 1
    assert "neither a span" in result.stderr
