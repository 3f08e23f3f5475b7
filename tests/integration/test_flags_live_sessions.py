"""A model-chain flag flipped under 100 live sessions, end to end: two real agent replica
apps (uvicorn, real sockets, one shared data directory and SQLite session store) with two
scripted providers, the flag file watched by both, and ``keel flags set`` run mid-load.

Sessions keep turning during the whole flip and no turn fails; every turn that starts
once both replicas report the new flags is answered by the other model, on every
session; the change is audited once (by the command, not again by the replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app as keel
from agentkeel.config.layers import load_settings
from agentkeel.runtime.app import create_app
from agentkeel.telemetry.audit import AUDIT_PAYLOAD
from agentkeel.telemetry.audit_file import audit_file_path
from agentkeel.telemetry.audit_verify import read_audit_records
from tests.config.flag_helpers import write_flags
from tests.secrets.serving import serve

SESSIONS = 100
WORKERS = SESSIONS  # one client per session: all 100 sessions turn at once
ADMIN = "admin-token-for-flag-flips-0123456789"


@dataclass(frozen=True)
class TurnRecord:
    session: str
    started: float
    finished: float
    reply: str


def write_config(tmp_path: Path) -> Path:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(f'on_end: repeat\nsteps:\n  - say: "from {name}"\n')
    config = tmp_path / "keel.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
secrets_dir: {tmp_path / "secrets"}
store: {{url: "sqlite:///{tmp_path / "data" / "sessions.db"}"}}
agent: {{tools: [], system_prompt: null}}
models:
  - {{name: a, kind: scripted, script: {tmp_path / "a.yaml"}, latency_s: 0.002}}
  - {{name: b, kind: scripted, script: {tmp_path / "b.yaml"}, latency_s: 0.002}}
model_chains:
  standard: [a]
  premium: [b, a]
guardrails: {{max_turns_per_session: 100000, tool_calls_per_minute: 0, session_token_budget: 0}}
quotas: {{user_daily_tokens: 0}}
flags: {{poll_interval_s: 0.1}}
"""
    )
    return config


async def test_a_flag_flip_under_100_live_sessions_changes_the_next_turn_of_every_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Must-show: `keel flags set agent.model_chain premium` in the middle of a 100-session
    load; 0 failed turns, every session's turns after the replicas applied it answered by
    the other model, one audit record of the change (standard -> premium, cli actor)."""
    caplog.set_level(logging.INFO, logger="agentkeel.audit")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin_token").write_text(ADMIN)
    config = write_config(tmp_path)
    write_flags(
        tmp_path / "data" / "flags.json",
        {
            "agent.model_chain": {
                "state": "ENABLED",
                "variants": {"standard": "standard", "premium": "premium"},
                "defaultVariant": "standard",
            }
        },
    )
    with contextlib.ExitStack() as stack:
        urls = []
        for index in (1, 2):
            settings = load_settings(
                config_path=config, overrides={"server": {"replica_id": f"replica-{index}"}}
            ).settings
            app = create_app(settings, run_sweeper=False)
            urls.append(stack.enter_context(serve(app, f"replica-{index}")))
        records: list[TurnRecord] = []
        failures: list[str] = []
        stop = asyncio.Event()
        # Idle connections are dropped before uvicorn's 5 s keep-alive timeout would close
        # them under a request in flight (a reset that would count as a failed turn).
        limits = httpx.Limits(max_connections=2 * SESSIONS, keepalive_expiry=1.0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def admin_flags(url: str) -> dict[str, Any]:
                response = await client.get(
                    f"{url}/admin/flags", headers={"authorization": f"Bearer {ADMIN}"}
                )
                assert response.status_code == 200, response.text
                body: dict[str, Any] = response.json()
                return body

            sessions = []
            for i in range(SESSIONS):
                response = await client.post(
                    f"{urls[i % 2]}/v1/sessions", json={"user_id": f"user-{i}"}
                )
                assert response.status_code == 201, response.text
                sessions.append(str(response.json()["session_id"]))

            async def turn_loop(worker: int) -> None:
                mine = sessions[worker::WORKERS]
                i = 0
                while not stop.is_set():
                    session = mine[i % len(mine)]
                    url = urls[(i + worker) % 2]  # any replica serves any session
                    i += 1
                    started = time.monotonic()
                    response = await client.post(
                        f"{url}/v1/sessions/{session}/messages", json={"content": "hello"}
                    )
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    reply = str(response.json()["reply"])
                    records.append(TurnRecord(session, started, time.monotonic(), reply))

            def turned_since(moment: float) -> set[str]:
                return {r.session for r in records if r.started >= moment}

            async def until(condition: Any, timeout_s: float = 60.0) -> None:
                deadline = time.monotonic() + timeout_s
                while not condition():
                    assert time.monotonic() < deadline, "the load did not get there in time"
                    await asyncio.sleep(0.02)

            workers = [asyncio.create_task(turn_loop(w)) for w in range(WORKERS)]
            try:
                await until(lambda: turned_since(0.0) == set(sessions))
                flip_started = time.monotonic()
                result = await asyncio.to_thread(
                    CliRunner().invoke,
                    keel,
                    ["--config", str(config), "flags", "set", "agent.model_chain", "premium"],
                )
                assert result.exit_code == 0, result.output
                assert "default variant standard -> premium" in result.stdout
                while True:
                    reports = [await admin_flags(url) for url in urls]
                    variants = {r["flags"]["agent.model_chain"]["default_variant"] for r in reports}
                    if variants == {"premium"}:
                        break
                    assert time.monotonic() - flip_started < 10, reports
                    await asyncio.sleep(0.01)
                applied = time.monotonic()
                await until(lambda: turned_since(applied) == set(sessions))
            finally:
                stop.set()
                await asyncio.gather(*workers)

    assert failures == []
    before = [r for r in records if r.finished < flip_started]
    after = [r for r in records if r.started >= applied]
    assert before and {r.reply for r in before} == {"from a"}
    assert {r.session for r in after} == set(sessions)
    assert {r.reply for r in after} == {"from b"}, [r for r in after if r.reply != "from b"][:5]
    audit_records = [
        r
        for r in read_audit_records(audit_file_path(tmp_path / "data"))
        if r["action"] == "flags.changed"
    ]
    assert len(audit_records) == 1, audit_records
    [record] = audit_records
    assert record["actor"].startswith("cli:")
    assert record["details"]["changes"] == [
        {
            "flag": "agent.model_chain",
            "change": "default_variant",
            "from": "standard",
            "to": "premium",
        }
    ]
    logged = [
        getattr(r, AUDIT_PAYLOAD)
        for r in caplog.records
        if getattr(r, AUDIT_PAYLOAD, {}).get("action") == "flags.changed"
    ]
    # The first acceptance at start (by one replica) and the command's flip, nothing more.
    assert [entry["actor"] for entry in logged][-1].startswith("cli:")
    assert len(logged) == 2, json.dumps(logged, default=str)[:2000]
    print(
        f"{len(records)} turns, {len(after)} after the flip; applied "
        f"{(applied - flip_started) * 1000:.0f} ms after keel flags set started"
    )
