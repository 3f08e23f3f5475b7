"""The hash-chained audit file: what a record holds, appends from many writers, and
verification that finds changed, removed, inserted, reordered and truncated records."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agentkeel.errors import AuditUnavailable, ConfigError
from agentkeel.telemetry.audit import audit, audited
from agentkeel.telemetry.audit_file import (
    GENESIS_HASH,
    AuditFile,
    audit_file_path,
    install_audit_file,
    record_hash,
)
from agentkeel.telemetry.audit_verify import verify_audit_file
from agentkeel.telemetry.correlation import set_correlation_id


def _write(path: Path, count: int) -> list[str]:
    file = AuditFile(path)
    for index in range(count):
        file.append(action=f"test.{index}", actor="tester", details={"n": index})
    return path.read_text().splitlines()


def test_audit_calls_land_in_the_file_with_every_field(tmp_path: Path) -> None:
    """audit() with the handler installed writes seq, ts, action, actor, outcome, source
    (service, remote), correlation id, details, prev and hash."""
    install_audit_file(tmp_path, service="agent")
    set_correlation_id("corr-123")
    try:
        audit("sessions.forget", actor="admin:sha256:abc", user_id="ana", source="10.0.0.7")
        audit("fence.up", actor="ops", outcome="failed")
    finally:
        set_correlation_id(None)
    first, second = (
        json.loads(line) for line in audit_file_path(tmp_path).read_text().splitlines()
    )
    assert first["seq"] == 1 and second["seq"] == 2
    assert first["action"] == "sessions.forget"
    assert first["actor"] == "admin:sha256:abc"
    assert first["outcome"] == "ok" and second["outcome"] == "failed"
    assert first["source"]["service"] == "agent"
    assert first["source"]["remote"] == "10.0.0.7"
    assert first["correlation_id"] == "corr-123"
    assert first["details"] == {"user_id": "ana"}
    assert first["prev"] == GENESIS_HASH
    assert second["prev"] == first["hash"] == record_hash(first)
    assert first["ts"].endswith("Z")
    assert verify_audit_file(audit_file_path(tmp_path)).ok


def test_audited_records_the_error_code_as_outcome(tmp_path: Path) -> None:
    """A block that raises is audited with the error's code, and the error goes on."""
    install_audit_file(tmp_path, service="memory")
    with pytest.raises(AuditUnavailable), audited("memory.restore", actor="ops"):
        raise AuditUnavailable("stand-in failure")
    record = json.loads(audit_file_path(tmp_path).read_text())
    assert record["outcome"] == "audit_unavailable"


def _append_many(path: str, writer: int) -> None:
    file = AuditFile(Path(path))
    for index in range(25):
        file.append(action="test.concurrent", actor=f"writer-{writer}", details={"i": index})


def test_writers_in_several_processes_keep_one_chain(tmp_path: Path) -> None:
    """Four processes appending at once leave 100 records in one unbroken chain."""
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    report = verify_audit_file(path)
    assert report.ok, report.problem
    assert report.records == 100


def test_verify_detects_a_changed_record(tmp_path: Path) -> None:
    """Editing a field of record 2 breaks its hash: reported at seq 2 as changed."""
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 4)
    changed = json.loads(lines[1])
    changed["actor"] = "someone-else"
    lines[1] = json.dumps(changed, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    report = verify_audit_file(path)
    assert not report.ok
    assert report.first_bad_seq == 2
    assert "changed" in (report.problem or "")


def test_verify_detects_a_removed_record(tmp_path: Path) -> None:
    """Deleting record 3 is reported as seq 3 missing."""
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 5)
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    report = verify_audit_file(path)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "removed" in (report.problem or "")


def test_verify_detects_reordered_records(tmp_path: Path) -> None:
    """Swapping records 2 and 3 is reported as reordered at seq 2."""
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 4)
    path.write_text("\n".join([lines[0], lines[2], lines[1], lines[3]]) + "\n")
    report = verify_audit_file(path)
    assert not report.ok
    assert report.first_bad_seq == 2
    assert "reordered" in (report.problem or "")


def test_verify_detects_an_inserted_record(tmp_path: Path) -> None:
    """A forged record with a valid hash of its own, slipped in after seq 2, breaks the
    chain at the record that follows it."""
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 4)
    second = json.loads(lines[1])
    forged = {**second, "action": "forged", "seq": 3, "prev": second["hash"]}
    forged["hash"] = record_hash(forged)
    path.write_text("\n".join([*lines[:2], json.dumps(forged, sort_keys=True), *lines[2:]]) + "\n")
    report = verify_audit_file(path)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert "inserted" in (report.problem or "")


def test_verify_reports_a_truncated_tail_and_writers_go_on(tmp_path: Path) -> None:
    """A last line cut off mid-write is reported as truncated; the next append starts a
    line of its own, so the damage stays visible and nothing is lost."""
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 3)
    path.write_text("\n".join(lines) + "\n" + lines[2][:30])
    report = verify_audit_file(path)
    assert not report.ok and report.truncated
    assert report.records == 3
    AuditFile(path).append(action="after", actor="tester")
    assert json.loads(path.read_text().splitlines()[-1])["seq"] == 4


def test_verify_with_an_anchored_head_detects_a_shortened_file(tmp_path: Path) -> None:
    """Removing the last records leaves a valid chain; the head kept elsewhere catches it."""
    path = tmp_path / "audit.jsonl"
    lines = _write(path, 4)
    head = verify_audit_file(path).head
    assert head == json.loads(lines[-1])["hash"]
    path.write_text("\n".join(lines[:2]) + "\n")
    assert verify_audit_file(path).ok
    report = verify_audit_file(path, expect_head=head)
    assert not report.ok
    assert "removed" in (report.problem or "")


def test_a_write_failure_is_logged_counted_and_refuses_the_action(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the file cannot be written, audit() raises AuditUnavailable (fail-closed), the
    failure is logged at ERROR and counted in agent_audit_write_failures_total."""
    registry = CollectorRegistry()
    handler = install_audit_file(tmp_path, service="router", registry=registry)
    path = audit_file_path(tmp_path)
    path.unlink()
    path.mkdir()  # a directory where the file should be: every append fails
    with pytest.raises(AuditUnavailable, match="could not be written"):
        audit("router.set_weights", actor="ops")
    assert registry.get_sample_value("agent_audit_write_failures_total") == 1
    assert any("AUDIT RECORD NOT WRITTEN" in r.getMessage() for r in caplog.records)
    handler.fail_closed = False
    audit("router.set_weights", actor="ops")  # logged and counted only
    assert registry.get_sample_value("agent_audit_write_failures_total") == 2


def test_install_refuses_an_unwritable_data_dir(tmp_path: Path) -> None:
    """A service that could not audit stops at start with a ConfigError naming the path."""
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    with pytest.raises(ConfigError, match="cannot be written"):
        install_audit_file(blocked, service="agent")


def test_the_file_is_private(tmp_path: Path) -> None:
    """The audit file is created 0600."""
    install_audit_file(tmp_path, service="agent")
    assert os.stat(audit_file_path(tmp_path)).st_mode & 0o777 == 0o600
