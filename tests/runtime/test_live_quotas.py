"""Quotas and prices are live settings: a flag or an override that changes them takes
effect on the next model call, for the users it targets, even where the settings
leave every limit at 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.config.quotas import ModelPrice
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.types import ModelRequest
from tests.runtime.test_live_turns import LiveFactory, live  # noqa: F401  (the fixture)

ZERO = {
    "user_daily_tokens": 0,
    "user_monthly_tokens": 0,
    "org_daily_tokens": 0,
    "org_monthly_tokens": 0,
}


async def test_a_per_user_quota_override_applies_on_the_next_call(
    live: LiveFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A daily quota too small for any call refuses ana and bob; raising it for ana alone
    lets her next turn through while bob stays refused."""
    server = await live(
        data_dir=str(tmp_path),
        quotas={**ZERO, "user_daily_tokens": 10},
        guardrails={"session_token_budget": 0},
    )
    ana, bob = await server.session("ana"), await server.session("bob")
    for session in (ana, bob):
        refused = await server.say(session, "hello")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "quota_exhausted"
    server.layer.by_user["ana"] = {"quotas.user_daily_tokens": 100_000}
    assert (await server.say(ana, "hello")).status_code == 200
    assert (await server.say(bob, "hello")).status_code == 429


async def test_a_flag_can_turn_a_quota_on_where_the_settings_have_none(
    live: LiveFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With every limit 0 in the settings a flag still sets a monthly quota, and the next
    call is held to it (the budget is built whatever the settings say)."""
    server = await live(data_dir=str(tmp_path), quotas=ZERO, guardrails={"session_token_budget": 0})
    session = await server.session("ana")
    assert (await server.say(session, "hello")).status_code == 200
    server.layer.by_user["*"] = {"quotas.user_monthly_tokens": 10}
    refused = await server.say(session, "again")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exhausted" and "quotas.user_monthly_tokens" in error["message"]


async def test_calls_count_no_prompt_until_a_flag_turns_a_limit_on(
    live: LiveFactory,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every limit of the turn at 0, a model call neither counts its prompt (with a
    server tokenizer, a network call) nor reserves; a flag that sets a quota brings both
    back on the next call."""
    counted: list[ModelRequest] = []
    count = ModelGateway.prompt_tokens

    async def counting(self: ModelGateway, request: ModelRequest) -> int:
        counted.append(request)
        return await count(self, request)

    monkeypatch.setattr(ModelGateway, "prompt_tokens", counting)
    server = await live(data_dir=str(tmp_path), quotas=ZERO, guardrails={"session_token_budget": 0})
    session = await server.session("ana")
    assert (await server.say(session, "hello")).status_code == 200
    assert counted == []
    server.layer.by_user["*"] = {"quotas.user_monthly_tokens": 100_000}
    assert (await server.say(session, "again")).status_code == 200
    assert len(counted) == 1


async def test_a_flag_price_is_used_for_spend(
    live: LiveFactory,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A price the flag sets for the provider prices the next call; before it the model
    had none (0 spend)."""
    server = await live(data_dir=str(tmp_path), scripts={"a": []})
    session = await server.session("ana")
    assert (await server.say(session, "one")).status_code == 200
    labels = {"model": "scripted", "agent": "default", "version": "v1"}
    assert (server.registry.get_sample_value("agent_spend_dollars_total", labels) or 0) == 0
    price = ModelPrice(input_per_million=1_000_000, output_per_million=0)
    server.layer.by_user["*"] = {"pricing": {"a": price}}
    reply = await server.say(session, "two")
    assert reply.status_code == 200
    spent = server.registry.get_sample_value("agent_spend_dollars_total", labels)
    assert spent == reply.json()["usage"]["input_tokens"]
