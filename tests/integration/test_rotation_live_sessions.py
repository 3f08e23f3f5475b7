"""A provider key rotated under 100 live sessions, end to end: two real agent
replica apps (uvicorn, real sockets, one shared SQLite session store) with an
openai provider pointed at the OpenAI-compatible stand-in, the file secret
source, the HTTP services and session census the CLI uses, and the real journal.

The stand-in accepts both keys during the overlap and only the new one once the
old one is revoked at the "provider". Sessions keep turning during the whole
rotation and no turn fails; sessions started before the activation keep the old
key, sessions started after it get the new one, and after ``revoked`` every turn
uses the new key.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from agentkeel.config.settings import KeelSettings
from agentkeel.ops.rotation_services import HttpSecretHolder, ReplicaSessionCensus, rollout_guard
from agentkeel.runtime.app import create_app
from agentkeel.runtime.tool_agent import ToolAgent
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.rotation import Rotation, RotationTimings
from agentkeel.secrets.rotation_journal import RotationJournal, Step
from agentkeel.testing.openai_standin import OpenAIStandin
from tests.secrets.serving import serve

OLD = "sk-old-platform-0123456789"
NEW = "sk-new-platform-9876543210"
ADMIN = "admin-token-for-rotation-0123456789"
SESSIONS_BEFORE = 100
SESSIONS_AFTER = 20
WORKERS = 12


async def until(condition: Callable[[], bool], *, timeout_s: float = 60.0) -> None:
    """Wait (turns keep going meanwhile) until ``condition()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the turns did not get there in time"
        await asyncio.sleep(0.05)


class RecordingStandin(OpenAIStandin):
    """Also records which key served each session's calls (the turn names its session)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, str, str]] = []
        """(phase, session id, key) per accepted or refused call."""
        self.phase = "before"

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        session = str(body["messages"][-1]["content"]).split()[-1]
        self.calls.append((self.phase, session, key))
        return await super()._complete(request)


def replica_settings(tmp_path: Path, base_url: str, index: int) -> KeelSettings:
    return KeelSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "secrets_dir": str(tmp_path / "secrets"),
            "store": {"url": f"sqlite:///{tmp_path / 'data' / 'sessions.db'}"},
            "server": {
                "admin_token_file": str(tmp_path / "admin_token"),
                "replica_id": f"replica-{index}",
            },
            "agent": {"tools": [], "system_prompt": None},
            "models": [
                {
                    "name": "openai",
                    "kind": "openai",
                    "model": "standin",
                    "base_url": base_url,
                    "api_key_secret": "openai_api_key",
                    "supports_tools": False,
                    "tokenizer": "bytes",
                }
            ],
            "guardrails": {
                "max_turns_per_session": 100_000,
                "tool_calls_per_minute": 0,
                "session_token_budget": 0,
            },
            "quotas": {"user_daily_tokens": 0},
            "retry": {"max_attempts": 1},
        }
    )


async def test_a_provider_key_rotates_under_100_live_sessions_without_a_failed_call(
    tmp_path: Path,
) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "openai_api_key").write_text(OLD + "\n")
    (tmp_path / "admin_token").write_text(ADMIN + "\n")
    started: dict[str, float] = {}
    standin = RecordingStandin(keys={OLD, NEW})  # the provider issued the new key first
    with standin.serving(), contextlib.ExitStack() as stack:
        urls = []
        for index in (1, 2):
            settings = replica_settings(tmp_path, standin.base_url, index)
            agent = ToolAgent.from_settings(settings)
            app = create_app(settings, agent=agent, run_sweeper=False)
            urls.append(stack.enter_context(serve(app, f"replica-{index}")))
        failures: list[str] = []
        turns = {"n": 0}
        stop = asyncio.Event()
        sessions: list[str] = []
        lock = asyncio.Lock()

        async with httpx.AsyncClient(timeout=30) as client:

            async def start_session(i: int) -> str:
                response = await client.post(
                    f"{urls[i % 2]}/v1/sessions", json={"user_id": f"user-{i}"}
                )
                assert response.status_code == 201, response.text
                data = response.json()
                started[data["session_id"]] = datetime.fromisoformat(data["created_at"]).timestamp()
                return str(data["session_id"])

            async def turn_loop(worker: int) -> None:
                i = 0
                while not stop.is_set():
                    async with lock:
                        mine = sessions[worker::WORKERS]
                    if not mine:
                        await asyncio.sleep(0.01)
                        continue
                    session = mine[i % len(mine)]
                    url = urls[(i + worker) % 2]  # any replica serves any session
                    i += 1
                    response = await client.post(
                        f"{url}/v1/sessions/{session}/messages",
                        json={"content": f"hello from {session}"},
                    )
                    turns["n"] += 1
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text[:200]}")

            for i in range(SESSIONS_BEFORE):
                sessions.append(await start_session(i))
            workers = [asyncio.create_task(turn_loop(w)) for w in range(WORKERS)]
            await asyncio.sleep(0.5)

            async def after_step(step: Step) -> None:
                if step == "activated":
                    standin.phase = "overlap"
                    new = [await start_session(1000 + i) for i in range(SESSIONS_AFTER)]
                    async with lock:
                        sessions.extend(new)
                    # Turns on both generations at once, until every new session had one.
                    await until(
                        lambda: {s for p, s, _ in standin.calls if p == "overlap"} >= set(new)
                    )
                elif step == "drained":
                    standin.phase = "revoking"  # services drop the old key: either is fine
                elif step == "revoked":
                    await asyncio.sleep(0.3)  # the operator revokes at the provider later
                    standin.set_keys({NEW})
                    standin.phase = "revoked"
                    await until(
                        lambda: (
                            sum(1 for p, _, _ in standin.calls if p == "revoked")
                            > 2 * SESSIONS_BEFORE
                        )
                    )

            token_file = tmp_path / "admin_token"
            async with RotationJournal(tmp_path / "data" / "rotations.db") as journal:
                rotation = Rotation(
                    source=FileSecretSource(root=secrets_dir),
                    journal=journal,
                    holders=[HttpSecretHolder(url, token_file=token_file) for url in urls],
                    census=ReplicaSessionCensus(urls, token_file=token_file),
                    active_rollout=rollout_guard(tmp_path / "data"),
                    actor="test",
                    timings=RotationTimings(deadline_s=1.5, accept_timeout_s=20, poll_s=0.2),
                    provider="openai",
                    after_step=after_step,
                )
                new_file = tmp_path / "new.key"
                new_file.write_text(NEW)
                outcome = await rotation.run(
                    "openai_api_key", new_value=lambda: new_file.read_text()
                )
            stop.set()
            await asyncio.gather(*workers)

    assert outcome.status == "done"
    assert failures == []
    assert turns["n"] > 2 * (SESSIONS_BEFORE + SESSIONS_AFTER)
    assert outcome.record is not None
    # Every old session was still open when the short deadline passed.
    assert outcome.record.detail["still_open"] >= SESSIONS_BEFORE
    old_sessions = set(list(started)[:SESSIONS_BEFORE])
    new_sessions = set(started) - old_sessions
    overlap = [(s, k) for phase, s, k in standin.calls if phase == "overlap"]
    assert {k for s, k in overlap if s in old_sessions} == {OLD}
    assert {k for s, k in overlap if s in new_sessions} == {NEW}
    assert {s for s, _ in overlap} >= new_sessions
    after = [(s, k) for phase, s, k in standin.calls if phase == "revoked"]
    assert after and {k for _, k in after} == {NEW}
    assert {s for s, _ in after} & old_sessions
    before = [k for phase, _, k in standin.calls if phase == "before"]
    assert set(before) == {OLD}
    assert not standin.rejected_by_key
    secret = FileSecretSource(root=secrets_dir).read("openai_api_key")
    assert secret is not None and secret.generations == (2,)
    assert (secrets_dir / "openai_api_key").read_text().strip() == NEW
