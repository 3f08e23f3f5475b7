"""The watched overrides file: reloaded when it changes (by a background task, off the event
loop; a turn only reads the document in force), a bad change refused with the last good
overrides kept, each applied change audited once per data directory, in one record."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.config.live import TurnContext
from agentkeel.config.overrides import OverridesLayer, watch_overrides
from agentkeel.config.overrides_audit import (
    AcceptedOverrides,
    Document,
    override_changes,
    state_dir_for,
)
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import AuditUnavailable, ConfigError
from agentkeel.resilience.clock import ManualClock
from agentkeel.telemetry.metrics import OverridesMetrics

BOB = TurnContext(user_id="bob", organization="acme", agent_id="support", version="v1")


@pytest.fixture
def settings(tmp_path: Path) -> KeelSettings:
    return load_settings(
        layers=[],
        overrides={
            "data_dir": str(tmp_path / "data"),
            "flags": {"poll_interval_s": 2.0},
            "models": [{"name": "a", "kind": "scripted"}],
        },
    ).settings


def replace(path: Path, text: str) -> None:
    """Save ``text`` as an editor or a deploy tool would: a new file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def tokens(layer: OverridesLayer, context: TurnContext = BOB) -> Any:
    found = {k: v for lv in layer.values_for(context) for k, v in lv.values.items()}
    return found.get("quotas.user_daily_tokens")


def user_entry(value: object) -> str:
    return f"users:\n  acme/bob:\n    quotas.user_daily_tokens: {value}\n"


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def audits(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        r.__dict__["_audit"]
        for r in caplog.records
        if r.__dict__.get("category") == "audit" and r.__dict__["action"] == "overrides.changed"
    ]


class Watched:
    def __init__(self, settings: KeelSettings, *, actor: str = "replica:r1") -> None:
        self.clock = ManualClock()
        self.registry = CollectorRegistry()
        self.layer = watch_overrides(
            settings, clock=self.clock, actor=actor, metrics=OverridesMetrics(self.registry)
        )

    def later(self) -> None:
        """The background task's next check (its worker thread's work, done here)."""
        self.clock.advance(2.0)
        self.layer.check()

    def valid(self) -> float | None:
        return sample(self.registry, "agent_overrides_valid")

    def reloads(self, outcome: str) -> float | None:
        return sample(self.registry, "agent_overrides_reloads_total", outcome=outcome)


def test_a_change_applies_at_the_next_check_and_a_turn_never_reads_the_file(
    settings: KeelSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn (values_for) only reads the document in force, however long since the last
    check; the check applies the change, counts the reload and stamps applied_at."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    watched = Watched(settings)
    replace(path, user_entry(2000))
    watched.clock.advance(60.0)

    def no_file_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("a turn touched the overrides file")

    with monkeypatch.context() as patched:
        patched.setattr(watched.layer, "check", no_file_work)
        patched.setattr("agentkeel.config.overrides.file_stamp", no_file_work)
        assert tokens(watched.layer) == 1000
    watched.later()
    assert tokens(watched.layer) == 2000
    assert watched.reloads("applied") == 1
    assert watched.valid() == 1
    assert watched.layer.applied_at == watched.clock.time()


async def test_the_background_task_applies_a_change_off_the_event_loop(tmp_path: Path) -> None:
    """start() checks the file every poll_interval_s in a worker thread: an edit comes into
    force with no turn asking, and aclose() stops the checks."""
    fast = load_settings(
        layers=[],
        overrides={
            "data_dir": str(tmp_path / "data"),
            "flags": {"poll_interval_s": 0.02},
            "models": [{"name": "a", "kind": "scripted"}],
        },
    ).settings
    path = fast.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    layer = watch_overrides(fast, clock=ManualClock(), actor="replica:r1")
    threads: set[int] = set()
    check = layer.check

    def checked_in() -> bool:
        threads.add(threading.get_ident())
        return check()

    layer.check = checked_in  # type: ignore[method-assign]
    await layer.start()
    try:
        replace(path, user_entry(2000))
        deadline = time.monotonic() + 10.0
        while tokens(layer) != 2000:
            assert time.monotonic() < deadline, "the change was not applied in time"
            await asyncio.sleep(0.01)
        assert threads and threading.get_ident() not in threads
    finally:
        await layer.aclose()
    replace(path, user_entry(3000))
    layer.check()  # closed: checks nothing any more
    assert tokens(layer) == 2000


async def test_aclose_waits_for_a_check_in_its_worker_thread(settings: KeelSettings) -> None:
    """A check still running when aclose is called finishes before aclose returns; none
    runs after."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    watched = Watched(settings)
    entered, release = threading.Event(), threading.Event()
    read = watched.layer._read

    def slow_read() -> bytes:
        entered.set()
        assert release.wait(10.0)
        return read()

    watched.layer._read = slow_read  # type: ignore[method-assign]
    replace(path, user_entry(2000))
    checking = asyncio.ensure_future(asyncio.to_thread(watched.layer.check))
    assert await asyncio.to_thread(entered.wait, 10.0)
    closing = asyncio.ensure_future(watched.layer.aclose())
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done, "aclose returned while a check was still running"
    release.set()
    await closing
    assert checking.done() and await checking is True
    assert tokens(watched.layer) == 2000


def test_a_bad_change_is_refused_and_the_last_good_overrides_stay(
    settings: KeelSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A change that fails validation is logged with the reason, counted as rejected and sets
    agent_overrides_valid to 0; turns keep the last good values until a good file returns."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    watched = Watched(settings)
    replace(path, "users:\n  acme/bob:\n    server.port: 1\n")
    with caplog.at_level(logging.ERROR, logger="agentkeel.config.overrides"):
        watched.later()
        assert tokens(watched.layer) == 1000
    assert watched.valid() == 0
    assert watched.reloads("rejected") == 1
    assert not watched.layer.valid
    assert watched.layer.error is not None and "'server.port' may not" in watched.layer.error
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "users.acme/bob" in logged and "last good overrides stay" in logged
    # Checked again later, the same bad content is not reported twice.
    watched.later()
    tokens(watched.layer)
    assert watched.reloads("rejected") == 1
    replace(path, user_entry(3000))
    watched.later()
    assert tokens(watched.layer) == 3000
    assert watched.valid() == 1 and watched.layer.error is None


def test_back_to_the_content_in_force_is_valid_again(settings: KeelSettings) -> None:
    """Reverting a refused edit to the content in force clears the error without a reload."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    watched = Watched(settings)
    replace(path, "users: [\n")
    watched.later()
    tokens(watched.layer)
    assert watched.valid() == 0
    replace(path, user_entry(1000))
    watched.later()
    assert tokens(watched.layer) == 1000
    assert watched.valid() == 1
    assert watched.reloads("applied") == 0


def test_a_file_that_disappears_keeps_the_last_good_overrides(
    settings: KeelSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A deleted file is a warning, not "no overrides": removing them is an empty file."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    watched = Watched(settings)
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="agentkeel.config.overrides"):
        watched.later()
        assert tokens(watched.layer) == 1000
    assert watched.valid() == 0
    assert "disappeared" in caplog.text
    replace(path, "")
    watched.later()
    assert tokens(watched.layer) is None
    assert watched.valid() == 1


def test_no_file_at_start_then_one_appears(settings: KeelSettings) -> None:
    """Without a file there are no overrides; one that appears later applies."""
    watched = Watched(settings)
    assert tokens(watched.layer) is None
    assert watched.valid() == 1
    replace(settings.data_dir / "overrides.yaml", user_entry(42))
    watched.later()
    assert tokens(watched.layer) == 42


def test_a_bad_file_at_start_stops_the_start(settings: KeelSettings) -> None:
    """There is no last good document to keep yet: the replica does not start."""
    replace(settings.data_dir / "overrides.yaml", "organizations:\n  acme:\n    nope: 1\n")
    with pytest.raises(ConfigError, match=r"organizations\.acme"):
        Watched(settings)


def changed(record: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
    return [(c["entry"], c["key"], c["from"], c["to"]) for c in record["details"]["changes"]]


def test_an_applied_change_writes_one_audit_record_listing_each_key(
    settings: KeelSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """A change of the file is one `overrides.changed` record whose changes name each entry
    and key with from and to; a key added has from null, a key removed has to null."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000) + "  alice:\n    agent.memory_writes: false\n")
    watched = Watched(settings)
    with caplog.at_level(logging.INFO, logger="agentkeel.audit"):
        watched.layer.record()
        [first] = audits(caplog)
        assert changed(first) == [
            ("users.acme/bob", "quotas.user_daily_tokens", None, 1000),
            ("users.alice", "agent.memory_writes", None, False),
        ]
        caplog.clear()
        replace(path, user_entry(2000) + "organizations:\n  acme:\n    agent.tools: []\n")
        watched.later()
    [record] = audits(caplog)
    assert changed(record) == [
        ("organizations.acme", "agent.tools", None, []),
        ("users.acme/bob", "quotas.user_daily_tokens", 1000, 2000),
        ("users.alice", "agent.memory_writes", False, None),
    ]
    assert record["actor"] == "replica:r1"
    assert record["details"]["file"] == str(path)
    assert record["details"]["previous_sha256"] == first["details"]["sha256"]


def test_an_audit_that_fails_is_written_whole_once_by_the_next_check(
    settings: KeelSettings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit file fails once: nothing of the change is recorded or applied; the next
    check records every key of it exactly once."""
    from agentkeel.telemetry.audit import audit as real_audit

    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    watched = Watched(settings)
    watched.layer.record()
    calls = 0

    def flaky(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise AuditUnavailable("the audit file is not writable")
        real_audit(*args, **kwargs)

    monkeypatch.setattr("agentkeel.config.overrides_audit.audit", flaky)
    replace(path, user_entry(2000) + "  alice:\n    agent.tools: []\n")
    with caplog.at_level(logging.INFO, logger="agentkeel.audit"):
        caplog.clear()
        watched.later()  # the first call: recorded and applied
        assert tokens(watched.layer) == 2000
        replace(path, user_entry(3000) + "  alice:\n    agent.tools: [calculator]\n")
        watched.later()  # the second call fails: not applied
        assert tokens(watched.layer) == 2000
        watched.later()
        assert tokens(watched.layer) == 3000
    keys = [(entry, key, to) for r in audits(caplog) for entry, key, _, to in changed(r)]
    assert sorted(keys) == sorted(
        [
            ("users.acme/bob", "quotas.user_daily_tokens", 2000),
            ("users.alice", "agent.tools", []),
            ("users.acme/bob", "quotas.user_daily_tokens", 3000),
            ("users.alice", "agent.tools", ["calculator"]),
        ]
    )


def test_replicas_sharing_a_data_dir_audit_a_change_once(
    settings: KeelSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas watching one file: the first to apply a change audits it, the other
    applies it silently; a restart audits nothing already recorded."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    one, two = Watched(settings, actor="replica:r1"), Watched(settings, actor="replica:r2")
    with caplog.at_level(logging.INFO, logger="agentkeel.audit"):
        one.layer.record()
        two.layer.record()
        assert [a["actor"] for a in audits(caplog)] == ["replica:r1"]
        caplog.clear()
        replace(path, user_entry(2000))
        two.later()
        one.later()
        assert tokens(two.layer) == 2000
        assert tokens(one.layer) == 2000
        assert [(a["actor"], changed(a)[0][3]) for a in audits(caplog)] == [("replica:r2", 2000)]
        caplog.clear()
        Watched(settings, actor="replica:r3").layer.record()
        assert audits(caplog) == []


def test_a_change_made_while_no_replica_ran_is_audited_at_the_next_start(
    settings: KeelSettings, caplog: pytest.LogCaptureFixture
) -> None:
    """The first replica to start compares the file with the document last audited."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    Watched(settings).layer.record()
    replace(path, user_entry(5000))
    with caplog.at_level(logging.INFO, logger="agentkeel.audit"):
        caplog.clear()
        Watched(settings, actor="replica:r9").layer.record()
    assert [(c[2], c[3]) for a in audits(caplog) for c in changed(a)] == [(1000, 5000)]


def test_no_file_and_no_history_writes_nothing(settings: KeelSettings) -> None:
    """A replica without an overrides file leaves no state behind in the data directory."""
    Watched(settings).layer.record()
    assert not (settings.data_dir / "overrides").exists()


def test_a_change_whose_audit_cannot_be_written_is_not_applied_yet(
    settings: KeelSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit is fail-closed: the change waits (last good in force) and applies on a later
    check once its record can be written."""
    path = settings.data_dir / "overrides.yaml"
    replace(path, user_entry(1000))
    watched = Watched(settings)
    watched.layer.record()
    replace(path, user_entry(2000))

    def unavailable(*args: object, **kwargs: object) -> None:
        raise AuditUnavailable("the audit file is not writable")

    monkeypatch.setattr("agentkeel.config.overrides_audit.audit", unavailable)
    watched.later()
    assert tokens(watched.layer) == 1000
    monkeypatch.undo()
    watched.later()
    assert tokens(watched.layer) == 2000


def test_without_a_writable_data_dir_each_replica_audits_its_own_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the shared record cannot be kept, the change is audited against what this
    replica had in force."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    accepted = AcceptedOverrides(
        state_dir=blocker / "overrides", source=tmp_path / "o.yaml", actor="replica:r1"
    )
    before: Document = {"organizations": {}, "users": {"bob": {"agent.tools": []}}}
    after: Document = {"organizations": {}, "users": {"bob": {"agent.tools": ["calculator"]}}}
    with caplog.at_level(logging.INFO):
        caplog.clear()
        changes = accepted.record(after, "d1", previous=before)
    assert [(c.before, c.after) for c in changes] == [([], ["calculator"])]
    assert len(audits(caplog)) == 1


def test_override_changes_compare_entries_and_keys() -> None:
    """Unchanged keys are no change; a whole entry removed is one change per key."""
    before: Document = {
        "users": {"bob": {"a": 1, "b": 2}},
        "organizations": {"acme": {"c": 3}},
    }
    after: Document = {
        "users": {"bob": {"a": 1, "b": 5}},
        "organizations": {},
    }
    assert [(c.entry, c.key, c.before, c.after) for c in override_changes(before, after)] == [
        ("organizations.acme", "c", 3, None),
        ("users.bob", "b", 2, 5),
    ]


def test_the_state_directory_is_per_file(tmp_path: Path) -> None:
    """Two overrides files in one data directory keep separate audit records."""
    assert state_dir_for(tmp_path, Path("/a/o.yaml")) != state_dir_for(tmp_path, Path("/b/o.yaml"))


def test_a_refused_file_that_disappears_is_no_overrides_again(settings: KeelSettings) -> None:
    """No file at start, a bad one appears (refused), then it goes: nothing is wrong any
    more; the same bad file coming back is refused again."""
    path = settings.data_dir / "overrides.yaml"
    watched = Watched(settings)
    replace(path, "users: [\n")
    watched.later()
    tokens(watched.layer)
    assert watched.valid() == 0
    path.unlink()
    watched.later()
    tokens(watched.layer)
    assert watched.valid() == 1
    replace(path, "users: [\n")
    watched.later()
    tokens(watched.layer)
    assert watched.valid() == 0
    assert watched.reloads("rejected") == 2
