"""The replica's overrides layer and `GET /admin/config`: a user's live settings, with
sources, behind the admin token."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from agentkeel.config.layers import load_settings
from agentkeel.errors import ConfigError
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.telemetry.metrics import ModelMetrics

TOKEN = "admin-token-for-config-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Replica:
    app: Starlette
    client: httpx.AsyncClient
    clock: ManualClock
    registry: CollectorRegistry
    overrides: Path

    async def config(self, **params: str) -> httpx.Response:
        return await self.client.get("/admin/config", params=params, headers=AUTH)

    async def turns(self, user: str, count: int) -> list[int]:
        created = await self.client.post("/v1/sessions", json={"user_id": user})
        session = created.json()["session_id"]
        statuses = []
        for index in range(count):
            response = await self.client.post(
                f"/v1/sessions/{session}/messages", json={"content": f"turn {index}"}
            )
            statuses.append(response.status_code)
        return statuses

    def save(self, text: str) -> None:
        tmp = self.overrides.with_name("overrides.yaml.new")
        tmp.write_text(text)
        os.replace(tmp, self.overrides)

    async def until(self, ready: Callable[[dict[str, Any]], bool], **params: str) -> None:
        """Poll /admin/config?params until ``ready(body)``: the background check applied
        the file (or refused it)."""
        deadline = time.monotonic() + 10.0
        while not ready((await self.config(**params)).json()):
            assert time.monotonic() < deadline, "the overrides file was not checked in time"
            await asyncio.sleep(0.01)


ReplicaFactory = Callable[..., Awaitable[Replica]]


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[ReplicaFactory]:
    async with AsyncExitStack() as stack:

        async def start(
            overrides: str = "", *, flags: dict[str, Any] | None = None, **extra: Any
        ) -> Replica:
            data = tmp_path / "data"
            data.mkdir(exist_ok=True)
            (data / "overrides.yaml").write_text(overrides)
            if flags is not None:
                (data / "flags.json").write_text(json.dumps(flags))
            (tmp_path / "admin_token").write_text(TOKEN)
            loaded = load_settings(
                layers=[],
                overrides={
                    "data_dir": str(data),
                    "secrets_dir": None,
                    "store": {"url": f"sqlite:///{tmp_path / 'sessions.db'}"},
                    "server": {"admin_token_file": str(tmp_path / "admin_token")},
                    "models": [
                        {"name": "a", "kind": "scripted"},
                        {"name": "b", "kind": "scripted"},
                    ],
                    "model_chains": {"premium": ["b", "a"]},
                    "flags": {"poll_interval_s": 0.02},
                    **extra,
                },
            )
            settings = loaded.settings
            clock = ManualClock()
            registry = CollectorRegistry()
            gateway = ModelGateway(
                providers=[ScriptedProvider(name=n, clock=clock, on_end="echo") for n in "ab"],
                breakers={},
                retry=settings.retry,
                metrics=ModelMetrics(registry),
                clock=clock,
            )
            app = create_app(
                settings,
                gateway=gateway,
                clock=clock,
                registry=registry,
                run_sweeper=False,
                source_of=loaded.source_of,
            )
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
            )
            return Replica(app, client, clock, registry, data / "overrides.yaml")

        yield start


OVERRIDES = """
organizations:
  acme:
    agent.model_chain: premium
users:
  acme/bob:
    quotas.user_daily_tokens: 5000000
  alice:
    guardrails.max_turns_per_session: 1
"""


async def test_admin_config_shows_a_users_live_settings_with_sources(
    replica: ReplicaFactory,
) -> None:
    """bob of acme: acme's chain (org override), his quota (user override), the rest from
    the replica's fixed layers; the body names the user, organization and task."""
    server = await replica(OVERRIDES)
    response = await server.config(user="bob", org="acme", task="billing")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["user"], body["organization"], body["task"]) == ("bob", "acme", "billing")
    values = body["values"]
    assert values["agent.model_chain"] == {"value": "premium", "source": "org", "detail": "acme"}
    assert values["quotas.user_daily_tokens"] == {
        "value": 5_000_000,
        "source": "user",
        "detail": "acme/bob",
    }
    assert values["guardrails.max_turns_per_session"] == {
        "value": 50,
        "source": "default",
        "detail": None,
    }
    assert values["agent.tools"]["source"] == "default"
    assert set(values) >= {"pricing", "agent.memory_writes", "quotas.org_daily_tokens"}
    assert body["overrides"]["valid"] is True
    assert body["overrides"]["file"] == str(server.overrides)
    other = (await server.config(user="bob", org="globex")).json()["values"]
    assert other["agent.model_chain"]["source"] == "default"
    assert other["quotas.user_daily_tokens"]["source"] == "default"


async def test_admin_config_needs_the_admin_token(replica: ReplicaFactory) -> None:
    """No bearer token is 401, a wrong one 403; nothing of the settings is in either."""
    server = await replica(OVERRIDES)
    missing = await server.client.get("/admin/config", params={"user": "bob"})
    assert missing.status_code == 401
    wrong = await server.client.get(
        "/admin/config", params={"user": "bob"}, headers={"Authorization": "Bearer nope-nope"}
    )
    assert wrong.status_code == 403
    assert "premium" not in missing.text + wrong.text


async def test_admin_config_needs_a_user(replica: ReplicaFactory) -> None:
    """Without ?user= the route says what to pass."""
    server = await replica()
    response = await server.client.get("/admin/config", headers=AUTH)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_query"
    assert "user=" in response.json()["error"]["message"]


async def test_turns_follow_the_overrides_file_as_it_changes(replica: ReplicaFactory) -> None:
    """alice's override holds her to one turn per session while carol keeps the default;
    an edit applies on the first turn after flags.poll_interval_s, without a restart."""
    server = await replica(OVERRIDES)
    assert await server.turns("alice", 2) == [200, 429]
    assert await server.turns("carol", 2) == [200, 200]
    server.save(OVERRIDES.replace("max_turns_per_session: 1", "max_turns_per_session: 3"))
    key = "guardrails.max_turns_per_session"
    await server.until(lambda body: body["values"][key]["value"] == 3, user="alice")
    assert await server.turns("alice", 4) == [200, 200, 200, 429]
    shown = (await server.config(user="alice")).json()["values"]
    assert shown["guardrails.max_turns_per_session"] == {
        "value": 3,
        "source": "user",
        "detail": "alice",
    }


async def test_a_bad_edit_keeps_the_last_good_overrides_and_says_why(
    replica: ReplicaFactory,
) -> None:
    """A refused edit: turns keep the last good overrides, /admin/config and the metric say
    the file on disk is not the one in force, and why."""
    server = await replica(OVERRIDES)
    server.save("users:\n  alice:\n    server.port: 1\n")
    await server.until(lambda body: body["overrides"]["valid"] is False, user="alice")
    assert await server.turns("alice", 2) == [200, 429]
    body = (await server.config(user="alice")).json()
    assert body["overrides"]["valid"] is False
    assert "'server.port' may not be changed" in body["overrides"]["error"]
    assert body["values"]["guardrails.max_turns_per_session"]["value"] == 1
    metrics = (await server.client.get("/metrics")).text
    assert "agent_overrides_valid 0.0" in metrics
    assert 'agent_overrides_reloads_total{outcome="rejected"} 1.0' in metrics


async def test_the_overrides_in_force_at_start_are_audited(
    replica: ReplicaFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The first replica to start audits the overrides that came into force, by name."""
    with caplog.at_level(logging.INFO, logger="agentkeel.audit"):
        await replica(OVERRIDES)
    [record] = [
        r.__dict__["_audit"]
        for r in caplog.records
        if r.__dict__.get("action") == "overrides.changed"
    ]
    assert {(c["entry"], c["key"]) for c in record["details"]["changes"]} == {
        ("organizations.acme", "agent.model_chain"),
        ("users.acme/bob", "quotas.user_daily_tokens"),
        ("users.alice", "guardrails.max_turns_per_session"),
    }
    assert record["actor"].startswith("replica:")
    assert json.dumps(record)  # plain JSON values, as the audit file stores them


async def test_a_bad_overrides_file_stops_the_replica_before_it_serves(
    replica: ReplicaFactory,
) -> None:
    """At start there is no last good document: the app is not built."""
    with pytest.raises(ConfigError, match=r"users\.alice"):
        await replica("users:\n  alice:\n    nope: 1\n")


FLAGS = {
    "flags": {
        "guardrails.max_output_tokens": {
            "state": "ENABLED",
            "variants": {"short": 200, "long": 800},
            "defaultVariant": "short",
        }
    }
}


async def test_a_user_override_wins_over_a_flag_on_the_replica(replica: ReplicaFactory) -> None:
    """The replica's order: the flag's value for everyone, bob of acme's override over it."""
    server = await replica(
        "users:\n  acme/bob:\n    guardrails.max_output_tokens: 300\n", flags=FLAGS
    )
    key = "guardrails.max_output_tokens"
    carol = (await server.config(user="carol", org="acme")).json()["values"][key]
    assert carol == {"value": 200, "source": "flag", "detail": "variant short"}
    bob = (await server.config(user="bob", org="acme")).json()["values"][key]
    assert bob == {"value": 300, "source": "user", "detail": "acme/bob"}


async def test_a_price_table_shows_the_layer_that_set_it(replica: ReplicaFactory) -> None:
    """pricing set below the live layers (here the command options) is reported with that
    layer, not as a default: its provenance is kept per entry."""
    server = await replica(pricing={"a": {"input_per_million": 1.0, "output_per_million": 2.0}})
    values = (await server.config(user="bob")).json()["values"]
    assert values["pricing"]["source"] == "cli"
    assert values["pricing"]["value"]["a"]["input_per_million"] == 1.0
    assert values["agent.tools"]["source"] == "default"


def evaluations(registry: CollectorRegistry) -> float:
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "agent_flag_evaluations_total"
    )


async def test_looking_at_a_users_settings_is_not_counted_as_a_turn(
    replica: ReplicaFactory,
) -> None:
    """GET /admin/config evaluates the flags without counting them in
    agent_flag_evaluations_total; a turn counts its evaluations."""
    server = await replica(flags=FLAGS)
    for _ in range(3):
        body = (await server.config(user="carol", org="acme")).json()
        assert body["values"]["guardrails.max_output_tokens"]["source"] == "flag"
    assert evaluations(server.registry) == 0
    assert await server.turns("carol", 1) == [200]
    assert evaluations(server.registry) == 1


async def test_admin_config_refuses_unknown_repeated_and_empty_parameters(
    replica: ReplicaFactory,
) -> None:
    """A misspelt parameter (?organization=), one given twice or an empty one is a 422
    invalid_query naming it, as /admin/usage answers, never silently ignored."""
    server = await replica(OVERRIDES)
    for query, needle in (
        ("user=bob&organization=acme", "unknown query parameter(s) organization"),
        ("user=bob&org=acme&org=globex", "org given more than once"),
        ("user=bob&org=", "?org= is empty"),
        ("user=", "?user= is empty"),
        ("org=acme", "?user= is required"),
        (f"user={'x' * 300}", "at most 256"),
    ):
        response = await server.client.get(f"/admin/config?{query}", headers=AUTH)
        assert response.status_code == 422, (query, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_query" and needle in error["message"], (query, error)
