"""The flag gate: a file that passes is accepted (and audited once per data directory),
one that fails is refused and the last good flags stay, a missing file is no flags."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.flag_accepted import FLAGS_CHANGED, AcceptedFlags
from agentkeel.config.flag_gate import FlagGate
from agentkeel.errors import AuditUnavailable
from agentkeel.telemetry.audit import AUDIT_PAYLOAD
from agentkeel.telemetry.metrics import FlagMetrics
from tests.config.flag_helpers import ACME_PREMIUM, chain_flag, flag_settings, write_flags


def make_gate(
    data_dir: Path, source: Path, actor: str = "replica:r1"
) -> tuple[FlagGate, CollectorRegistry]:
    registry = CollectorRegistry()
    gate = FlagGate(
        source=source,
        accepted=AcceptedFlags(data_dir=data_dir, source=source),
        settings=flag_settings(data_dir),
        actor=actor,
        metrics=FlagMetrics(registry),
    )
    return gate, registry


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def audits(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        getattr(record, AUDIT_PAYLOAD)
        for record in caplog.records
        if getattr(record, AUDIT_PAYLOAD, {}).get("action") == FLAGS_CHANGED
    ]


@pytest.fixture(autouse=True)
def _log_levels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentkeel.audit")
    caplog.set_level(logging.INFO, logger="agentkeel.flags")


def test_a_missing_file_at_start_is_no_flags_and_writes_nothing(tmp_path: Path) -> None:
    """No flag file: no flags, valid, and nothing written to the data directory."""
    gate, registry = make_gate(tmp_path, tmp_path / "flags.json")
    gate.start()
    assert dict(gate.document.flags) == {} and gate.valid and gate.error is None
    assert metric(registry, "agent_flags_valid") == 1
    assert not (tmp_path / "flags").exists()


def test_a_good_file_is_accepted_put_in_force_and_audited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file is copied (canonical) to the accepted copy with its state, the document is
    in force, the change is audited with the replica as actor, and the metrics say so."""
    source = tmp_path / "flags.json"
    write_flags(source, {"agent.model_chain": chain_flag()})
    gate, registry = make_gate(tmp_path, source)
    gate.start()
    assert list(gate.document.flags) == ["agent.model_chain"]
    accepted = gate.accepted
    assert accepted.file.read_bytes() == gate.document.content
    state = accepted.read_state()
    assert state is not None and state.sha256 == gate.document.sha256
    assert state.actor == "replica:r1"
    [record] = audits(caplog)
    assert record["actor"] == "replica:r1"
    [change] = record["details"]["changes"]
    assert (change["flag"], change["change"], change["from"]) == (
        "agent.model_chain",
        "added",
        None,
    )
    assert change["to"]["default_variant"] == "standard"
    assert metric(registry, "agent_flags_reloads_total", outcome="applied") == 1
    assert metric(registry, "agent_flags_valid") == 1
    assert metric(registry, "agent_flags_applied_timestamp_seconds") == gate.applied_at


def test_a_change_is_audited_once_with_from_and_to_across_replicas(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas sharing a data directory both put the edit in force; only the one that
    accepted it first writes the audit record, naming the default variant's from and to."""
    source = tmp_path / "flags.json"
    write_flags(source, {"agent.model_chain": chain_flag()})
    first, _ = make_gate(tmp_path, source, actor="replica:r1")
    second, _ = make_gate(tmp_path, source, actor="replica:r2")
    first.start()
    second.start()
    caplog.clear()
    write_flags(source, {"agent.model_chain": chain_flag("premium")})
    for gate in (second, first):
        assert gate.changed()
        gate.check()
    assert first.document.sha256 == second.document.sha256
    assert first.document.flags["agent.model_chain"].default_variant == "premium"
    [record] = audits(caplog)
    assert record["actor"] == "replica:r2"
    assert record["details"]["changes"] == [
        {
            "flag": "agent.model_chain",
            "change": "default_variant",
            "from": "standard",
            "to": "premium",
        }
    ]


def test_a_bad_file_is_refused_and_the_last_good_flags_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that fails validation: an error log with every problem, valid 0, a rejected
    reload, no audit, the accepted copy untouched; fixing it puts it in force."""
    source = tmp_path / "flags.json"
    write_flags(source, {"agent.model_chain": chain_flag()})
    gate, registry = make_gate(tmp_path, source)
    gate.start()
    good = gate.document
    copy = gate.accepted.file.read_bytes()
    caplog.clear()
    write_flags(
        source,
        {
            "agent.model_chain": chain_flag("gold"),
            "server.port": {"state": "ENABLED", "variants": {"a": 1}},
        },
    )
    gate.check()
    assert gate.document is good and gate.accepted.file.read_bytes() == copy
    assert not gate.valid and gate.error is not None
    assert "defaultVariant 'gold'" in gate.error and "'server.port'" in gate.error
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "the last good flags stay in force" in error.getMessage()
    assert "defaultVariant 'gold'" in error.getMessage() and "server.port" in error.getMessage()
    assert metric(registry, "agent_flags_valid") == 0
    assert metric(registry, "agent_flags_reloads_total", outcome="rejected") == 1
    assert audits(caplog) == []
    write_flags(source, {"agent.model_chain": chain_flag("premium")})
    gate.check()
    assert gate.valid and gate.error is None
    assert gate.document.flags["agent.model_chain"].default_variant == "premium"
    assert metric(registry, "agent_flags_valid") == 1


def test_a_file_that_disappears_keeps_the_last_good_flags_until_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Deleting the file keeps the flags in force with a warning (valid 0); when it
    reappears it is validated and applied."""
    source = tmp_path / "flags.json"
    write_flags(source, {"agent.model_chain": chain_flag()})
    gate, registry = make_gate(tmp_path, source)
    gate.start()
    source.unlink()
    assert gate.changed()
    gate.check()
    assert list(gate.document.flags) == ["agent.model_chain"]
    assert not gate.valid and "disappeared" in (gate.error or "")
    assert any(
        r.levelno == logging.WARNING and "has disappeared" in r.getMessage() for r in caplog.records
    )
    assert metric(registry, "agent_flags_valid") == 0
    write_flags(source, {"agent.model_chain": chain_flag(targeting=ACME_PREMIUM)})
    gate.check()
    assert gate.valid
    assert gate.document.flags["agent.model_chain"].targeting == ACME_PREMIUM


def test_a_refused_file_at_start_keeps_the_flags_accepted_before(tmp_path: Path) -> None:
    """A restart while the file is bad: the accepted copy of the earlier run is in force."""
    source = tmp_path / "flags.json"
    write_flags(source, {"agent.model_chain": chain_flag("premium")})
    earlier, _ = make_gate(tmp_path, source)
    earlier.start()
    source.write_text("{not json")
    gate, registry = make_gate(tmp_path, source)
    gate.start()
    assert not gate.valid and "not valid JSON" in (gate.error or "")
    assert gate.document.flags["agent.model_chain"].default_variant == "premium"
    assert metric(registry, "agent_flags_valid") == 0


def test_a_change_nobody_can_audit_is_not_put_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: when the audit record cannot be written the accepted copy is left as it
    was and the old flags stay; the next check tries again."""
    source = tmp_path / "flags.json"
    write_flags(source, {"agent.model_chain": chain_flag()})
    gate, _ = make_gate(tmp_path, source)
    gate.start()
    copy = gate.accepted.file.read_bytes()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AuditUnavailable("the audit file is not writable")

    monkeypatch.setattr("agentkeel.config.flag_accepted.audit", refuse)
    write_flags(source, {"agent.model_chain": chain_flag("premium")})
    gate.check()
    assert gate.accepted.file.read_bytes() == copy
    assert gate.document.flags["agent.model_chain"].default_variant == "standard"
    monkeypatch.undo()
    assert gate.changed()
    gate.check()
    assert gate.document.flags["agent.model_chain"].default_variant == "premium"


def test_the_audit_record_is_written_before_any_replica_can_read_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the change's audit record is being written, the accepted copy (what every
    replica applies) still holds the old document: nothing unaudited is ever visible."""
    from agentkeel.telemetry.audit import audit as real_audit

    source = tmp_path / "flags.json"
    write_flags(source, {"agent.model_chain": chain_flag()})
    gate, _ = make_gate(tmp_path, source)
    gate.start()
    before = gate.accepted.file.read_bytes()
    seen: list[bytes] = []

    def watching(*args: Any, **kwargs: Any) -> None:
        seen.append(gate.accepted.file.read_bytes())
        real_audit(*args, **kwargs)

    monkeypatch.setattr("agentkeel.config.flag_accepted.audit", watching)
    write_flags(source, {"agent.model_chain": chain_flag("premium")})
    gate.check()
    assert seen == [before]
    assert gate.document.flags["agent.model_chain"].default_variant == "premium"
    assert gate.accepted.file.read_bytes() == gate.document.content
    assert [p.name for p in gate.accepted.directory.iterdir() if p.name.endswith(".tmp")] == []


def test_the_accepted_copy_lives_per_source_path(tmp_path: Path) -> None:
    """Two flag files in one data directory have two accepted copies."""
    one = AcceptedFlags(data_dir=tmp_path, source=tmp_path / "a.json")
    two = AcceptedFlags(data_dir=tmp_path, source=tmp_path / "b.json")
    assert one.directory != two.directory
    assert one.directory.parent == tmp_path / "flags"


async def test_a_check_that_fails_unexpectedly_does_not_stop_the_watch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected error in a check is logged with its traceback and the gate keeps
    checking: the next change still comes into force."""
    import asyncio
    import time

    source = tmp_path / "flags.json"
    write_flags(source, {"agent.model_chain": chain_flag()})
    gate, _ = make_gate(tmp_path, source)
    gate.start()
    check = gate.check
    failures = [RuntimeError("a bug")]

    def flaky() -> None:
        if failures:
            raise failures.pop()
        check()

    gate.check = flaky  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(gate.run(interval_s=0.01))
    try:
        write_flags(source, {"agent.model_chain": chain_flag("premium")})
        deadline = time.monotonic() + 10.0
        while gate.document.flags["agent.model_chain"].default_variant != "premium":
            assert time.monotonic() < deadline, "the gate stopped watching"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not failures
    assert "checking the flag file" in caplog.text and "a bug" in caplog.text
