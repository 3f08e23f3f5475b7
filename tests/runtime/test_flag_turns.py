"""Feature flags in a running agent server: a flag file edit changes the next turn of a
live session, a bad file keeps the last good flags and says why (error log,
``GET /admin/flags``, ``agent_flags_valid``), and ``/admin/flags`` needs the admin token."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.telemetry.metrics import ModelMetrics
from tests.config.flag_helpers import ACME_PREMIUM, chain_flag, flag_settings, write_flags

TOKEN = "agent-admin-token-for-flags-0123456789"


@dataclass
class Server:
    client: httpx.AsyncClient
    providers: Mapping[str, ScriptedProvider]
    registry: CollectorRegistry
    flag_file: Path

    async def session(self, user: str = "ana") -> str:
        response = await self.client.post("/v1/sessions", json={"user_id": user})
        assert response.status_code == 201, response.text
        return str(response.json()["session_id"])

    async def say(self, session: str) -> None:
        response = await self.client.post(
            f"/v1/sessions/{session}/messages", json={"content": "hi"}
        )
        assert response.status_code == 200, response.text

    def served(self) -> dict[str, int]:
        return {name: len(p.requests) for name, p in self.providers.items()}

    async def admin_flags(self) -> dict[str, Any]:
        response = await self.client.get(
            "/admin/flags", headers={"authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def until(condition: Callable[[], Any], *, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` (a coroutine function) until it is true, or fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "the flags were not applied in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    (tmp_path / "admin_token").write_text(TOKEN)
    flag_file = tmp_path / "data" / "flags.json"
    write_flags(flag_file, {"agent.model_chain": chain_flag()})
    settings = flag_settings(tmp_path / "data", secrets_dir=str(tmp_path), agent={"tools": []})
    clock = ManualClock()
    registry = CollectorRegistry()
    providers = {name: ScriptedProvider(name=name, script=[], clock=clock) for name in ("a", "b")}
    gateway = ModelGateway(
        providers=list(providers.values()),
        breakers={},
        retry=settings.retry,
        metrics=ModelMetrics(registry),
        clock=clock,
    )
    app = create_app(settings, gateway=gateway, registry=registry, run_sweeper=False)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
        )
        yield Server(client, providers, registry, flag_file)


async def test_a_flag_edit_changes_the_next_turn_of_a_live_session(server: Server) -> None:
    """The session's first turn uses the default variant's chain (a); the turn after the
    file serves premium uses b; once premium is only acme's, ana (no organization) is
    back on a."""
    session = await server.session("ana")
    await server.say(session)
    assert server.served() == {"a": 1, "b": 0}
    write_flags(server.flag_file, {"agent.model_chain": chain_flag("premium")})

    async def applied() -> bool:
        flags = (await server.admin_flags())["flags"]
        return bool(flags["agent.model_chain"]["default_variant"] == "premium")

    await until(applied)
    await server.say(session)
    assert server.served() == {"a": 1, "b": 1}
    write_flags(server.flag_file, {"agent.model_chain": chain_flag(targeting=ACME_PREMIUM)})

    async def targeted() -> bool:
        return bool((await server.admin_flags())["flags"]["agent.model_chain"]["targeting"])

    await until(targeted)
    await server.say(session)
    assert server.served() == {"a": 2, "b": 1}


async def test_a_bad_flag_file_keeps_the_last_good_flags_and_says_why(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Must-show: a refused file leaves the last good flags serving turns, and the error
    log, /admin/flags (valid false, the error with each problem) and agent_flags_valid 0
    say why; a fixed file is valid again."""
    caplog.set_level(logging.INFO, logger="agentkeel.flags")
    write_flags(server.flag_file, {"agent.model_chain": chain_flag("premium")})

    async def premium() -> bool:
        report = await server.admin_flags()
        return bool(report["flags"]["agent.model_chain"]["default_variant"] == "premium")

    await until(premium)
    session = await server.session()
    await server.say(session)
    assert server.served() == {"a": 0, "b": 1}

    write_flags(
        server.flag_file,
        {
            "agent.model_chain": chain_flag("standard", targeting={"if": [True, "gold"]}),
            "agent.tools": {
                "state": "ENABLED",
                "variants": {"x": "calculator"},
                "defaultVariant": "x",
            },
        },
    )

    async def refused() -> bool:
        return (await server.admin_flags())["valid"] is False

    await until(refused)
    report = await server.admin_flags()
    assert report["source"] == "file" and report["file"] == str(server.flag_file)
    assert "can return 'gold'" in report["error"] and "'agent.tools'" in report["error"]
    assert report["flags"]["agent.model_chain"]["default_variant"] == "premium"
    metrics = (await server.client.get("/metrics")).text
    assert "agent_flags_valid 0.0" in metrics
    assert 'agent_flags_reloads_total{outcome="rejected"} 1.0' in metrics
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("the last good flags stay in force" in m and "'gold'" in m for m in errors), errors
    await server.say(session)
    assert server.served() == {"a": 0, "b": 2}  # still the last good flags

    write_flags(server.flag_file, {"agent.model_chain": chain_flag("standard")})

    async def valid_again() -> bool:
        return (await server.admin_flags())["valid"] is True

    await until(valid_again)
    await server.say(session)
    assert server.served() == {"a": 1, "b": 2}
    assert "agent_flags_valid 1.0" in (await server.client.get("/metrics")).text


async def test_admin_flags_needs_the_admin_token(server: Server) -> None:
    """Without the token 401, with a wrong one 403; with it, the flags in force."""
    assert (await server.client.get("/admin/flags")).status_code == 401
    wrong = await server.client.get("/admin/flags", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 403
    report = await server.admin_flags()
    assert report["valid"] is True and report["error"] is None
    assert report["applied_at"] is not None and len(report["sha256"]) == 64
    assert report["flags"] == {
        "agent.model_chain": {
            "state": "ENABLED",
            "default_variant": "standard",
            "variants": {"standard": "a", "premium": "b-first"},
            "targeting": False,
        }
    }


async def test_flags_off_and_live_layers_passed_leave_no_flags(tmp_path: Path) -> None:
    """flags.source: none builds no flags; /admin/flags says source none."""
    (tmp_path / "admin_token").write_text(TOKEN)
    settings = flag_settings(tmp_path, secrets_dir=str(tmp_path), flags={"source": "none"})
    for app in (
        create_app(settings, registry=CollectorRegistry(), run_sweeper=False),
        create_app(
            flag_settings(tmp_path, secrets_dir=str(tmp_path)),
            registry=CollectorRegistry(),
            run_sweeper=False,
            live_layers=[],
        ),
    ):
        assert app.state.flags is None
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
                response = await client.get(
                    "/admin/flags", headers={"authorization": f"Bearer {TOKEN}"}
                )
        assert response.json()["source"] == "none"
    assert not (tmp_path / "flags").exists()
