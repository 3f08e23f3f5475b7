"""Usage and spend: the meter's price lookup and BYOK rule, and the whole path through the
agent server against the OpenAI stand-in (a user's own key, the platform's), read back
through ``GET /admin/usage`` with its query checks. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.config.quotas import ModelPrice
from agentkeel.errors import Unavailable
from agentkeel.models.types import ModelResponse, Usage
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.stores import SessionBackend
from agentkeel.runtime.usage import UsageMeter, UsageRecord
from agentkeel.telemetry.metrics import QuotaMetrics
from agentkeel.testing.openai_standin import OpenAIStandin

StoreFactory = Callable[[], Awaitable[SessionBackend]]

PLATFORM = "sk-platform-0123456789"
ANA_OWN = "sk-byok-ana-0123456789"
ADMIN = "usage-admin-token-" + "u" * 24
PRICE = ModelPrice(input_per_million=2.0, output_per_million=10.0)
# The stand-in reports 7 input and 5 output tokens per call.
CALL_SPEND = (7 * 2.0 + 5 * 10.0) / 1_000_000


class Recorder:
    """A UsageRecorder that keeps what it is given, or fails like a store that is down."""

    def __init__(self, *, fail: bool = False) -> None:
        self.records: list[UsageRecord] = []
        self.fail = fail

    async def record_usage(self, record: UsageRecord) -> None:
        if self.fail:
            raise Unavailable("the store is down", code="store_unavailable")
        self.records.append(record)


def meter(recorder: Recorder, registry: CollectorRegistry, **pricing: ModelPrice) -> UsageMeter:
    return UsageMeter(
        recorder=recorder,
        metrics=QuotaMetrics(registry),
        clock=ManualClock(),
        agent_id="support",
        provider_models={"openai": "gpt-4o-mini"},
        pricing=pricing,
    )


def reply(model: str = "gpt-4o-mini-2024-07-18", link: str = "platform") -> ModelResponse:
    return ModelResponse(
        content="hi",
        usage=Usage(input_tokens=1000, output_tokens=100),
        model=model,
        provider="openai",
        key_link=link,
    )


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- the meter ----------------------------------------------------------------------


async def test_the_price_is_found_by_model_then_configured_model_then_provider() -> None:
    """The reported model wins; without its price, the provider's configured model; then
    the provider's name. The call's table (the turn's) replaces the meter's own."""
    cheap = ModelPrice(input_per_million=1, output_per_million=1)
    dear = ModelPrice(input_per_million=100, output_per_million=100)
    the_meter = meter(Recorder(), CollectorRegistry())
    response = reply()
    assert the_meter.price_for(response, {"gpt-4o-mini-2024-07-18": cheap}) is cheap
    assert the_meter.price_for(response, {"gpt-4o-mini": cheap, "openai": dear}) is cheap
    assert the_meter.price_for(response, {"openai": dear}) is dear
    assert the_meter.price_for(response, {}) is None
    assert meter(Recorder(), CollectorRegistry(), openai=dear).price_for(response) is dear


async def test_a_platform_call_is_priced_counted_and_recorded() -> None:
    """Spend = input and output tokens at their prices, on the spend metric (by model and
    agent) and in the recorded row, for the UTC day of the meter's clock."""
    recorder, registry = Recorder(), CollectorRegistry()
    the_meter = meter(recorder, registry)
    charged = Usage(input_tokens=1000, output_tokens=100)
    record = await the_meter.record(
        reply(), charged=charged, user_id="ana", organization="acme", pricing={"openai": PRICE}
    )
    spend = (1000 * 2.0 + 100 * 10.0) / 1_000_000
    assert recorder.records == [record]
    assert (record.day, record.key_link, record.model) == (
        "2023-11-14",
        "platform",
        "gpt-4o-mini-2024-07-18",
    )
    assert (record.input_tokens, record.output_tokens) == (1000, 100)
    assert record.spend == pytest.approx(spend)
    spent = metric(
        registry,
        "agent_spend_dollars_total",
        model="gpt-4o-mini-2024-07-18",
        agent="support",
        version="v1",
    )
    assert spent == pytest.approx(spend)


async def test_byok_calls_count_tokens_but_never_spend() -> None:
    """A call on the user's own key (or the organization's) is recorded with its tokens and
    0 spend, counted in agent_byok_tokens_total by link, never in the spend metric."""
    recorder, registry = Recorder(), CollectorRegistry()
    the_meter = meter(recorder, registry, openai=PRICE)
    for link in ("byok", "org"):
        await the_meter.record(
            reply(link=link), charged=reply().usage, user_id="ana", organization="acme"
        )
    assert [(r.key_link, r.spend, r.input_tokens) for r in recorder.records] == [
        ("byok", 0.0, 1000),
        ("org", 0.0, 1000),
    ]
    model = "gpt-4o-mini-2024-07-18"
    labels = {"model": model, "agent": "support", "version": "v1"}
    assert metric(registry, "agent_spend_dollars_total", **labels) == 0.0
    for link in ("byok", "org"):
        assert metric(registry, "agent_byok_tokens_total", type="input", link=link, **labels) == (
            1000.0
        )
        assert metric(registry, "agent_byok_tokens_total", type="output", link=link, **labels) == (
            100.0
        )


async def test_a_model_without_a_price_counts_tokens_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No price: 0 spend, every call counted in agent_unpriced_calls_total, one warning per
    model that names the pricing setting."""
    recorder, registry = Recorder(), CollectorRegistry()
    the_meter = meter(recorder, registry)
    with caplog.at_level(logging.WARNING, logger="agentkeel.runtime.usage"):
        for _ in range(3):
            await the_meter.record(reply(), charged=reply().usage, user_id="a", organization=None)
    assert [r.spend for r in recorder.records] == [0.0, 0.0, 0.0]
    assert metric(registry, "agent_unpriced_calls_total", model="gpt-4o-mini-2024-07-18") == 3.0
    warnings = [r.getMessage() for r in caplog.records if "no price" in r.getMessage()]
    assert len(warnings) == 1 and "pricing" in warnings[0]


async def test_a_recorder_that_fails_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The call happened and its quota is settled: a usage row that cannot be written is a
    warning, never a failed turn."""
    the_meter = meter(Recorder(fail=True), CollectorRegistry(), openai=PRICE)
    with caplog.at_level(logging.WARNING, logger="agentkeel.runtime.usage"):
        record = await the_meter.record(
            reply(), charged=reply().usage, user_id="a", organization=None
        )
    assert record.spend > 0
    assert any("not recorded" in r.getMessage() for r in caplog.records)


# -- through the agent server -------------------------------------------------------


@dataclass
class Served:
    client: httpx.AsyncClient
    registry: CollectorRegistry
    store: SessionBackend
    standin: OpenAIStandin

    async def turn(self, user: str, text: str = "hello") -> httpx.Response:
        created = await self.client.post("/v1/sessions", json={"user_id": user})
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        return await self.client.post(f"/v1/sessions/{session_id}/messages", json={"content": text})

    async def admin(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(
            path, params=params, headers={"Authorization": f"Bearer {ADMIN}"}
        )


@pytest.fixture
def standin() -> Iterator[OpenAIStandin]:
    with OpenAIStandin(keys={PLATFORM, ANA_OWN}).serving() as server:
        yield server


@pytest.fixture
async def served(
    standin: OpenAIStandin, session_store_factory: StoreFactory, tmp_path: Path
) -> AsyncIterator[Served]:
    """An agent server whose one provider is the OpenAI stand-in, with ana's own key in
    the secrets directory, prices for the stand-in's model and a daily quota of 1000."""
    secrets = tmp_path / "secrets"
    (secrets / "byok" / "ana").mkdir(parents=True)
    (secrets / "byok" / "ana" / "openai").write_text(ANA_OWN)
    (secrets / "openai_platform").write_text(PLATFORM)
    (secrets / "admin_token").write_text(ADMIN)
    settings = load_settings(
        layers=[],
        overrides={
            "data_dir": str(tmp_path / "data"),
            "secrets_dir": str(secrets),
            "models": [
                {
                    "name": "openai",
                    "kind": "openai",
                    "model": "m",
                    "base_url": standin.base_url,
                    "api_key_secret": "openai_platform",
                }
            ],
            "retry": {"max_attempts": 1},
            "agent": {"tools": []},
            "guardrails": {"max_output_tokens": 32},
            "quotas": {"user_daily_tokens": 1000, "user_monthly_tokens": 50_000},
            "pricing": {"standin": PRICE.model_dump()},
        },
    ).settings
    registry = CollectorRegistry()
    store = await session_store_factory()
    app = create_app(settings, store=store, clock=ManualClock(), registry=registry)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent")
        )
        yield Served(client, registry, store, standin)


async def test_byok_usage_counts_for_the_user_and_never_as_platform_spend(
    served: Served,
) -> None:
    """ana's turn runs on her own key, bob's on the platform's: both are recorded per day
    with their tokens; only bob's costs the platform; /admin/usage lists both with their
    spend, BYOK tokens and daily quota headroom."""
    assert (await served.turn("ana")).status_code == 200
    assert (await served.turn("bob")).status_code == 200
    assert (await served.turn("bob")).status_code == 200
    assert served.standin.calls_by_key == {ANA_OWN: 1, PLATFORM: 2}

    labels = {"model": "standin", "agent": "default", "version": "v1"}
    spent = served.registry.get_sample_value("agent_spend_dollars_total", labels)
    assert spent == pytest.approx(2 * CALL_SPEND)
    own = served.registry.get_sample_value(
        "agent_byok_tokens_total", {**labels, "type": "input", "link": "byok"}
    )
    assert own == 7.0
    tokens = served.registry.get_sample_value(
        "agent_tokens_consumed_total", {**labels, "type": "input"}
    )
    assert tokens == 21.0  # kept as it was: every call's tokens, whoever's key

    response = await served.admin("/admin/usage", period="day", top=20)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["period"], report["start"], report["top"]) == ("day", "2023-11-14", 20)
    rows = {row["user"]: row for row in report["users"]}
    assert [row["user"] for row in report["users"]] == ["bob", "ana"]
    assert rows["bob"]["spend"] == pytest.approx(2 * CALL_SPEND)
    assert (rows["bob"]["total_tokens"], rows["bob"]["byok_tokens"]) == (24, 0)
    assert (rows["ana"]["spend"], rows["ana"]["byok_tokens"]) == (0.0, 12)
    assert rows["ana"]["quota"] == {"limit": 1000, "used": 12, "headroom": 988}

    user = (await served.admin("/admin/usage/users/ana", period="month")).json()
    assert user["usage"] == [
        {
            "day": "2023-11-14",
            "model": "standin",
            "input_tokens": 7,
            "output_tokens": 5,
            "total_tokens": 12,
            "calls": 1,
            "spend": 0.0,
            "byok_tokens": 12,
        }
    ]
    assert user["quota"] == {
        "user": {
            "day": {"limit": 1000, "used": 12, "headroom": 988},
            "month": {"limit": 50000, "used": 12, "headroom": 49988},
        }
    }


async def test_admin_usage_checks_its_token_and_its_query(served: Served) -> None:
    """The routes want the admin token; top, period and unknown parameters are checked
    with a 422 invalid_query that names the parameter and what to give instead."""
    assert (await served.client.get("/admin/usage")).status_code == 401
    for params, needle in (
        ({"top": "0"}, "top='0'"),
        ({"top": "1001"}, "from 1 to 1000"),
        ({"top": "ten"}, "top='ten'"),
        ({"period": "week"}, "period=day"),
        ({"user": "ana"}, "unknown query parameter(s) user"),
        ({"org": ""}, "?org= is empty"),
    ):
        response = await served.admin("/admin/usage", **params)
        assert response.status_code == 422, (params, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_query" and needle in error["message"], error
    response = await served.admin("/admin/usage/users/ana", period="year")
    assert response.status_code == 422
    response = await served.admin("/admin/usage/users/ana", top="3")
    assert response.status_code == 422
    empty = (await served.admin("/admin/usage", org="nobody")).json()
    assert (empty["organization"], empty["users"]) == ("nobody", [])


@pytest.fixture
def quota_flag(tmp_path: Path) -> None:
    """A flag file in the served replica's data directory: a daily quota of 3000 for all."""
    flag_file = tmp_path / "data" / "flags.json"
    flag_file.parent.mkdir(parents=True, exist_ok=True)
    flag_file.write_text(
        '{"flags": {"quotas.user_daily_tokens": {"state": "ENABLED", '
        '"variants": {"more": 3000}, "defaultVariant": "more"}}}'
    )


@pytest.fixture
async def flagged(quota_flag: None, served: Served) -> Served:
    return served


async def test_usage_reports_resolve_quotas_without_counting_turns(flagged: Served) -> None:
    """/admin/usage reads each user's quota through the flags (3000 here) without counting
    those evaluations in agent_flag_evaluations_total."""

    def evaluations() -> float:
        return sum(
            sample.value
            for family in flagged.registry.collect()
            for sample in family.samples
            if sample.name == "agent_flag_evaluations_total"
        )

    assert (await flagged.turn("ana")).status_code == 200
    counted = evaluations()
    assert counted == 1
    top = (await flagged.admin("/admin/usage")).json()
    assert [row["quota"]["limit"] for row in top["users"]] == [3000]
    user = (await flagged.admin("/admin/usage/users/ana")).json()
    assert user["quota"]["user"]["day"]["limit"] == 3000
    assert evaluations() == counted
