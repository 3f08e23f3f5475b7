"""GuardedModel and GuardedTools: the guardrails around one turn's model and tools."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.settings import RetrySettings
from agentkeel.errors import ModelUnavailable, TokenBudgetExhausted, Unavailable
from agentkeel.models.counting import bound_tokens, text_bound
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import Fail, ScriptedProvider, StepLike
from agentkeel.models.tokens import estimate_tokens
from agentkeel.models.types import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    TokenCallback,
    ToolCall,
    ToolSpec,
)
from agentkeel.resilience.budget import BudgetLimits, InMemoryLedger, TokenBudget
from agentkeel.resilience.clock import ManualClock
from agentkeel.resilience.ledger import Hold, ReserveResult
from agentkeel.resilience.ratelimit import RateLimiter
from agentkeel.runtime.guards import (
    GuardedModel,
    GuardedTools,
    StepLimitReached,
    TurnLog,
    trim_tool_results,
)
from agentkeel.runtime.types import TurnModel, TurnTools
from agentkeel.telemetry.metrics import AgentMetrics, ModelMetrics
from agentkeel.tools.local import LocalToolSet
from agentkeel.tools.types import ToolContext, ToolResult

AGENT = "support"
LOG = TurnLog(logging.getLogger("agentkeel.test.guards"), {"agent_id": AGENT})
USER = [ChatMessage(role="user", content="What is 2 + 2?")]


class Events:
    """An event sink that keeps what it receives."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, event: str, data: Mapping[str, Any]) -> None:
        self.items.append((event, dict(data)))

    def names(self) -> list[str]:
        return [name for name, _ in self.items]


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def gateway_for(
    script: Sequence[StepLike], *, registry: CollectorRegistry, context_window: int = 8192
) -> tuple[ScriptedProvider, ModelGateway]:
    clock = ManualClock()
    provider = ScriptedProvider(script=script, clock=clock, context_window=context_window)
    gateway = ModelGateway(
        providers=[provider],
        breakers={},
        retry=RetrySettings(max_attempts=1),
        metrics=ModelMetrics(registry),
        clock=clock,
    )
    return provider, gateway


def guarded_model(
    gateway: Any,
    registry: CollectorRegistry,
    *,
    max_steps: int = 5,
    budget: TokenBudget | None = None,
    sink: Events | None = None,
    trim_ratio: float = 0.85,
) -> GuardedModel:
    return GuardedModel(
        gateway=gateway,
        metrics=AgentMetrics(registry),
        log=LOG,
        agent_id=AGENT,
        session_id="s-1",
        user_id="u-1",
        max_steps=max_steps,
        max_output_tokens=100,
        context_trim_ratio=trim_ratio,
        budget=budget,
        sink=sink,
    )


# -- GuardedModel ---------------------------------------------------------------------


async def test_guarded_model_implements_turn_model() -> None:
    """The handle satisfies the TurnModel Protocol and reports the gateway's window."""
    registry = CollectorRegistry()
    _, gateway = gateway_for(["hi"], registry=registry, context_window=4096)
    model = guarded_model(gateway, registry)
    assert isinstance(model, TurnModel)
    assert model.context_window == 4096


async def test_step_limit_stops_before_calling_the_model() -> None:
    """Past max_steps the model is not called; StepLimitReached is raised and counted once."""
    registry = CollectorRegistry()
    provider, gateway = gateway_for(["one", "two", "three"], registry=registry)
    model = guarded_model(gateway, registry, max_steps=2)
    await model.complete(USER)
    await model.complete(USER)
    with pytest.raises(StepLimitReached) as info:
        await model.complete(USER)
    with pytest.raises(StepLimitReached):
        await model.complete(USER)
    assert len(provider.requests) == 2
    assert info.value.steps == 2
    assert "2 model steps" in info.value.reply
    assert sample(
        registry, "agent_guardrail_events_total", guardrail="step_limit", agent=AGENT, version="v1"
    ) == (1.0)


async def test_tokens_are_reserved_before_and_settled_with_provider_usage() -> None:
    """The call reserves the prompt's upper bound + max_tokens, then settles what the
    provider reported."""
    registry = CollectorRegistry()
    ledger, budget = session_budget(daily=50_000)
    watching = ReservationWatcher(
        ledger, ModelResponse(content="4", model="m", usage=_usage(30, 2))
    )
    model = guarded_model(watching, registry, budget=budget)
    response = await model.complete(USER, max_tokens=50)
    assert watching.seen == [bound_tokens(USER) + 50]
    assert await ledger.reserved("session:s-1") == 0
    assert await ledger.used("session:s-1") == response.usage.total_tokens == 32
    assert await ledger.used(budget.user_key("u-1")) == 32
    assert model.usage.total_tokens == 32


async def test_the_gateway_counts_the_prompt_reserved_for() -> None:
    """A backend that counts tokens (the gateway) decides the reservation; the
    realistic estimate does not."""
    registry = CollectorRegistry()
    ledger, budget = session_budget()

    class Counting(ReservationWatcher):
        async def prompt_tokens(self, request: ModelRequest) -> int:
            return 777

    counting = Counting(ledger, ModelResponse(content="4", model="m", usage=_usage(30, 2)))
    await guarded_model(counting, registry, budget=budget).complete(USER, max_tokens=50)
    assert counting.seen == [777 + 50]


async def test_cjk_prompt_reserves_at_least_one_token_per_byte() -> None:
    """A CJK and emoji prompt reserves no less than its UTF-8 bytes plus max_tokens,
    where the four-characters estimate reserved a quarter of its characters."""
    registry = CollectorRegistry()
    ledger, budget = session_budget()
    text = "東京の天気はどうですか🌧️" * 10
    watching = ReservationWatcher(
        ledger, ModelResponse(content="雨", model="m", usage=_usage(30, 2))
    )
    messages = [ChatMessage(role="user", content=text)]
    await guarded_model(watching, registry, budget=budget).complete(messages, max_tokens=50)
    assert watching.seen[0] >= len(text.encode("utf-8")) + 50
    assert watching.seen[0] > 2 * (estimate_tokens(messages) + 50)


async def test_max_tokens_below_one_still_reserves_and_sends_a_cap() -> None:
    """A max_tokens of 0 or less is replaced by the guardrail cap or 1: the request
    always carries a positive cap and the reservation covers it."""
    registry = CollectorRegistry()
    provider, gateway = gateway_for(["hi", "hi"], registry=registry)
    model = guarded_model(gateway, registry)
    await model.complete(USER, max_tokens=0)
    await model.complete(USER, max_tokens=-5)
    assert [r.max_tokens for r in provider.requests] == [100, 1]


class FixedReply:
    """A model that gives the same response to every request."""

    context_window = 8192

    def __init__(self, response: ModelResponse) -> None:
        self.response = response

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        return self.response


def session_budget(*, daily: int = 0) -> tuple[InMemoryLedger, TokenBudget]:
    """A ledger and a budget of 10,000 tokens per session (``daily`` per user, 0 = none)."""
    ledger = InMemoryLedger()
    return ledger, TokenBudget(
        ledger=ledger,
        clock=ManualClock(),
        limits=BudgetLimits(session=10_000, user_daily_tokens=daily),
    )


class ReservationWatcher(FixedReply):
    """A fixed-reply model that records what session s-1 had reserved when it was called."""

    def __init__(self, ledger: InMemoryLedger, response: ModelResponse) -> None:
        super().__init__(response)
        self.ledger = ledger
        self.seen: list[int] = []

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        self.seen.append(await self.ledger.reserved("session:s-1"))
        return self.response


async def test_unreported_usage_is_charged_the_bound_not_the_estimate() -> None:
    """An endpoint that reports no usage is charged the prompt bound plus the reply's
    byte bound, so non-English replies are not under-counted."""
    registry = CollectorRegistry()
    ledger, budget = session_budget()
    silent = FixedReply(ModelResponse(content="答えは四です", model="m"))
    await guarded_model(silent, registry, budget=budget).complete(USER, max_tokens=50)
    assert await ledger.used("session:s-1") == bound_tokens(USER) + text_bound("答えは四です")


async def test_usage_above_the_reservation_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A provider that bills more than was reserved (a wrong counter, max_tokens
    ignored) is charged in full, and a warning says the budget can be overspent."""
    registry = CollectorRegistry()
    ledger, budget = session_budget()
    greedy = FixedReply(ModelResponse(content="...", model="greedy", usage=_usage(5000, 10)))

    with caplog.at_level(logging.WARNING, logger="agentkeel.test.guards"):
        await guarded_model(greedy, registry, budget=budget).complete(USER, max_tokens=50)
    assert await ledger.used("session:s-1") == 5010
    lines = [r.getMessage() for r in caplog.records if "reserved" in r.getMessage()]
    assert len(lines) == 1
    assert "greedy reported 5010 tokens" in lines[0]


async def test_a_failed_call_settles_with_zero() -> None:
    """When the gateway fails the reservation is released and nothing is charged."""
    registry = CollectorRegistry()
    ledger = InMemoryLedger()
    budget = TokenBudget(ledger=ledger, clock=ManualClock(), limits=BudgetLimits(session=10_000))

    class Down:
        context_window = 8192

        async def complete(
            self, request: ModelRequest, *, on_token: TokenCallback | None = None
        ) -> ModelResponse:
            raise ModelUnavailable("every provider failed")

    model = guarded_model(Down(), registry, budget=budget)
    with pytest.raises(ModelUnavailable):
        await model.complete(USER)
    assert await ledger.reserved("session:s-1") == 0
    assert await ledger.used("session:s-1") == 0


async def test_a_call_that_fails_after_streaming_is_charged_what_it_streamed() -> None:
    """A provider that streams part of a reply and then fails has spent the prompt and
    those tokens: the call settles the prompt bound plus the byte bound of the streamed
    text, and releases the rest of its reservation."""
    registry = CollectorRegistry()
    _, gateway = gateway_for([Fail("server_error", streamed="答えは 4 です")], registry=registry)
    ledger, budget = session_budget(daily=50_000)
    events = Events()
    model = guarded_model(gateway, registry, budget=budget, sink=events)
    with pytest.raises(ModelUnavailable):
        await model.complete(USER, max_tokens=50)
    streamed = "".join(data["text"] for _, data in events.items)
    assert streamed == "答えは 4 です"
    spent = bound_tokens(USER) + text_bound(streamed)
    assert await ledger.used("session:s-1") == await ledger.used(budget.user_key("u-1")) == spent
    assert await ledger.reserved("session:s-1") == 0


async def test_a_call_that_fails_before_any_token_is_charged_nothing() -> None:
    """A streaming call whose provider fails before the first token settles 0."""
    registry = CollectorRegistry()
    _, gateway = gateway_for([Fail("server_error")], registry=registry)
    ledger, budget = session_budget()
    model = guarded_model(gateway, registry, budget=budget, sink=Events())
    with pytest.raises(ModelUnavailable):
        await model.complete(USER, max_tokens=50)
    assert (await ledger.used("session:s-1"), await ledger.reserved("session:s-1")) == (0, 0)


async def test_a_fallback_after_a_broken_stream_charges_both_attempts() -> None:
    """When the first provider streams and dies and the gateway falls back, the reply's
    usage is the second provider's alone; the call is charged that plus the first
    attempt's prompt bound and streamed text, and the sink saw both streams."""
    registry = CollectorRegistry()
    clock = ManualClock()
    broken = ScriptedProvider(
        name="a", script=[Fail("server_error", streamed="The ans")], clock=clock
    )
    backup = ScriptedProvider(name="b", script=["The answer is 4."], clock=clock)
    gateway = ModelGateway(
        providers=[broken, backup],
        breakers={},
        retry=RetrySettings(max_attempts=1),
        metrics=ModelMetrics(registry),
        clock=clock,
    )
    ledger, budget = session_budget()
    events = Events()
    response = await guarded_model(gateway, registry, budget=budget, sink=events).complete(
        USER, max_tokens=50
    )
    assert "".join(data["text"] for _, data in events.items) == "The ansThe answer is 4."
    assert (response.provider, response.discarded_streams) == ("b", 1)
    assert response.discarded_output_bound == text_bound("The ans")
    expected = response.usage.total_tokens + bound_tokens(USER) + text_bound("The ans")
    assert await ledger.used("session:s-1") == expected


async def test_a_ledger_that_cannot_settle_does_not_fail_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A settle that keeps failing (a ledger outage right after the call) is logged and
    the model's reply still comes back."""
    registry = CollectorRegistry()

    class Unsettled(InMemoryLedger):
        async def settle(self, keys: Sequence[str], reserved: int, used: int) -> None:
            raise Unavailable("Redis budget ledger failed", code="ledger_unavailable")

    budget = TokenBudget(
        ledger=Unsettled(), clock=ManualClock(), limits=BudgetLimits(session=10_000)
    )
    _, gateway = gateway_for(["4"], registry=registry)
    with caplog.at_level(logging.ERROR, logger="agentkeel.resilience.budget"):
        response = await guarded_model(gateway, registry, budget=budget).complete(USER)
    assert response.content == "4"
    assert any("session:s-1" in r.getMessage() for r in caplog.records)


async def test_a_call_whose_limits_are_all_zero_neither_counts_nor_reserves() -> None:
    """With every limit of the call at 0 the prompt is not counted (a server tokenizer
    would be a network call) and the ledger is not touched; a limit above 0 brings both
    back."""
    registry = CollectorRegistry()

    class Counting(ReservationWatcher):
        counted = 0

        async def prompt_tokens(self, request: ModelRequest) -> int:
            self.counted += 1
            return 100

    class Recording(InMemoryLedger):
        calls = 0

        async def reserve(self, holds: Sequence[Hold], amount: int) -> ReserveResult:
            self.calls += 1
            return await super().reserve(holds, amount)

    ledger = Recording()
    free = TokenBudget(ledger=ledger, clock=ManualClock(), limits=BudgetLimits())
    counting = Counting(ledger, ModelResponse(content="4", model="m", usage=_usage(30, 2)))
    await guarded_model(counting, registry, budget=free).complete(USER, max_tokens=50)
    assert (counting.counted, ledger.calls) == (0, 0)
    capped = TokenBudget(
        ledger=ledger, clock=ManualClock(), limits=BudgetLimits(user_monthly_tokens=1000)
    )
    await guarded_model(counting, CollectorRegistry(), budget=capped).complete(USER, max_tokens=50)
    assert (counting.counted, ledger.calls) == (1, 1)


async def test_exhausted_budget_refuses_the_call_and_counts_it() -> None:
    """A budget that cannot cover the prompt bound + max_tokens raises 429 without a
    model call."""
    registry = CollectorRegistry()
    provider, gateway = gateway_for(["hi"], registry=registry)
    budget = TokenBudget(
        ledger=InMemoryLedger(), clock=ManualClock(), limits=BudgetLimits(session=50)
    )
    model = guarded_model(gateway, registry, budget=budget)
    with pytest.raises(TokenBudgetExhausted) as info:
        await model.complete(USER, max_tokens=100)
    assert info.value.status == 429
    assert provider.requests == []
    assert (
        sample(
            registry,
            "agent_guardrail_events_total",
            guardrail="token_budget",
            agent=AGENT,
            version="v1",
        )
        == 1.0
    )


async def test_tokens_stream_to_the_sink_and_are_metered() -> None:
    """Streamed fragments reach the sink in order; usage lands in the token counter."""
    registry = CollectorRegistry()
    _, gateway = gateway_for(["The answer is 4."], registry=registry)
    events = Events()
    model = guarded_model(gateway, registry, sink=events)
    response = await model.complete(USER)
    assert set(events.names()) == {"token"}
    assert "".join(data["text"] for _, data in events.items) == "The answer is 4."
    input_total = sample(
        registry,
        "agent_tokens_consumed_total",
        model="scripted",
        type="input",
        agent=AGENT,
        version="v1",
    )
    output_total = sample(
        registry,
        "agent_tokens_consumed_total",
        model="scripted",
        type="output",
        agent=AGENT,
        version="v1",
    )
    assert input_total == response.usage.input_tokens > 0
    assert output_total == response.usage.output_tokens > 0


def _tool_exchange(number: int, size: int) -> list[ChatMessage]:
    call = ToolCall(id=f"c{number}", name="lookup", arguments={"n": number})
    return [
        ChatMessage(role="assistant", content="", tool_calls=(call,)),
        ChatMessage(role="tool", content="x" * size, tool_call_id=f"c{number}", name="lookup"),
    ]


async def test_context_trimming_drops_the_oldest_tool_results_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over context_trim_ratio the oldest tool result is replaced by a marker (pairing
    kept), the newer one stays, and one log line says how many tokens went."""
    registry = CollectorRegistry()
    provider, gateway = gateway_for(["done"], registry=registry, context_window=400)
    model = guarded_model(gateway, registry, trim_ratio=0.85)
    messages = [*USER, *_tool_exchange(1, 800), *_tool_exchange(2, 800)]
    assert estimate_tokens(messages) > 340
    with caplog.at_level(logging.INFO, logger="agentkeel.test.guards"):
        await model.complete(messages)
    sent = provider.requests[0].messages
    tool_messages = [m for m in sent if m.role == "tool"]
    assert tool_messages[0].content.startswith("[dropped:")
    assert tool_messages[0].tool_call_id == "c1"
    assert tool_messages[1].content == "x" * 800
    assert len(sent) == len(messages)
    lines = [r.getMessage() for r in caplog.records if "context trimmed" in r.getMessage()]
    assert len(lines) == 1
    assert "from the 1 oldest tool result" in lines[0]
    assert (
        sample(
            registry,
            "agent_guardrail_events_total",
            guardrail="context_trimmed",
            agent=AGENT,
            version="v1",
        )
        == 1.0
    )
    ratio = sample(registry, "agent_context_utilization_ratio", agent=AGENT, version="v1")
    assert 0 < ratio <= 0.85


def test_trim_leaves_a_conversation_without_tool_results_alone() -> None:
    """With nothing to drop the messages come back unchanged, even over the limit."""
    messages = [ChatMessage(role="user", content="y" * 4000)]
    result = trim_tool_results(messages, tools=(), limit=10)
    assert result.messages == messages
    assert result.dropped_results == 0


def test_trim_drops_as_many_results_as_needed() -> None:
    """When one result is not enough, the next oldest goes too, and no more."""
    messages = [*USER, *_tool_exchange(1, 800), *_tool_exchange(2, 800), *_tool_exchange(3, 80)]
    result = trim_tool_results(messages, tools=(), limit=150)
    contents = [m.content for m in result.messages if m.role == "tool"]
    assert contents[0].startswith("[dropped:")
    assert contents[1].startswith("[dropped:")
    assert contents[2] == "x" * 80
    assert result.dropped_results == 2
    assert result.tokens <= 150


# -- GuardedTools ---------------------------------------------------------------------


class Counting:
    """Tool functions that count their executions."""

    def __init__(self) -> None:
        self.runs = 0

    def functions(self) -> list[Any]:
        def lookup(key: int, extra: str = "") -> str:
            """Look a key up."""
            self.runs += 1
            return f"value {key}"

        def explode() -> str:
            """Fails."""
            raise RuntimeError("disk on fire")

        return [lookup, explode]


def guarded_tools(
    registry: CollectorRegistry,
    counting: Counting,
    *,
    allowed: Sequence[str] | None = None,
    limiter: RateLimiter | None = None,
    sink: Events | None = None,
    threshold: int = 3,
) -> GuardedTools:
    return GuardedTools(
        toolset=LocalToolSet(counting.functions()),
        context=ToolContext(agent_id=AGENT, session_id="s-1", user_id="u-1", turn=1),
        metrics=AgentMetrics(registry),
        log=LOG,
        clock=ManualClock(),
        allowed=allowed,
        storm_threshold=threshold,
        rate_limiter=limiter,
        sink=sink,
    )


def call(name: str, number: int = 1, **arguments: Any) -> ToolCall:
    return ToolCall(id=f"call_{number}", name=name, arguments=arguments)


async def test_guarded_tools_implements_turn_tools() -> None:
    """The handle satisfies the TurnTools Protocol and starts unstopped."""
    tools = guarded_tools(CollectorRegistry(), Counting())
    assert isinstance(tools, TurnTools)
    assert tools.stopped is None


async def test_tool_outside_the_allowlist_is_rejected() -> None:
    """Only allowed tools are listed; calling another is a rejected result, not a run."""
    registry = CollectorRegistry()
    counting = Counting()
    tools = guarded_tools(registry, counting, allowed=["explode"])
    assert [spec.name for spec in await tools.list_tools()] == ["explode"]
    result = await tools.call(call("lookup", key=1))
    assert result.status == "rejected"
    assert "'lookup' is not available to this agent" in result.content
    assert "explode" in result.content
    assert counting.runs == 0
    assert (
        sample(registry, "agent_tool_calls_total", tool="lookup", status="rejected", version="v1")
        == 1.0
    )


async def test_tool_storm_stops_at_the_threshold_with_one_metric_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The Nth identical call is not run; stopped is set; the guardrail metric and the
    warning happen exactly once, however many calls follow."""
    registry = CollectorRegistry()
    counting = Counting()
    tools = guarded_tools(registry, counting, threshold=3)
    with caplog.at_level(logging.WARNING, logger="agentkeel.test.guards"):
        first = await tools.call(call("lookup", 1, key=7))
        second = await tools.call(call("lookup", 2, key=7))
        third = await tools.call(call("lookup", 3, key=7))
        fourth = await tools.call(call("lookup", 4, key=8))
    assert (first.status, second.status) == ("success", "success")
    assert third.status == "rejected"
    assert fourth.status == "rejected"
    assert counting.runs == 2
    assert tools.stopped is not None
    assert "'lookup' was called 3 times" in tools.stopped
    assert (
        sample(
            registry,
            "agent_guardrail_events_total",
            guardrail="tool_storm",
            agent=AGENT,
            version="v1",
        )
        == 1.0
    )
    storm_lines = [r for r in caplog.records if "tool storm" in r.getMessage()]
    assert len(storm_lines) == 1
    assert storm_lines[0].levelno == logging.WARNING
    assert storm_lines[0].__dict__["tool"] == "lookup"
    assert "3 times" in storm_lines[0].getMessage()


async def test_storm_counts_only_identical_calls_with_canonical_arguments() -> None:
    """Different arguments do not add up; key order does not make calls different."""
    registry = CollectorRegistry()
    counting = Counting()
    tools = guarded_tools(registry, counting, threshold=3)
    for key in (1, 2, 1, 2):
        assert (await tools.call(call("lookup", key=key))).status == "success"
    assert tools.stopped is None
    await tools.call(ToolCall(id="a", name="lookup", arguments={"key": 5, "extra": "e"}))
    await tools.call(ToolCall(id="b", name="lookup", arguments={"extra": "e", "key": 5}))
    third = await tools.call(ToolCall(id="c", name="lookup", arguments={"key": 5, "extra": "e"}))
    assert third.status == "rejected"
    assert counting.runs == 6


async def test_rate_limited_tool_call_is_a_rejected_result() -> None:
    """Over the per-session rate the call is refused with a retry hint, never an exception."""
    registry = CollectorRegistry()
    counting = Counting()
    limiter = RateLimiter(per_minute=1)
    tools = guarded_tools(registry, counting, limiter=limiter)
    try:
        ok = await tools.call(call("lookup", key=1))
        refused = await tools.call(call("lookup", key=2))
    finally:
        await limiter.aclose()
    assert ok.status == "success"
    assert refused.status == "rejected"
    assert refused.content.startswith("rate limited, retry in ")
    assert refused.content.endswith("s")
    assert counting.runs == 1
    assert (
        sample(
            registry,
            "agent_guardrail_events_total",
            guardrail="tool_rate_limit",
            agent=AGENT,
            version="v1",
        )
        == 1.0
    )


async def test_tool_failures_and_unknown_tools_are_metered_with_bounded_labels() -> None:
    """A raising tool is a failure result; a made-up tool name is labelled 'unknown'."""
    registry = CollectorRegistry()
    tools = guarded_tools(registry, Counting())
    failed = await tools.call(call("explode"))
    assert failed.status == "failure"
    assert "disk on fire" in failed.content
    await tools.call(call("rm_rf_everything"))
    assert (
        sample(registry, "agent_tool_calls_total", tool="explode", status="failure", version="v1")
        == 1.0
    )
    assert (
        sample(registry, "agent_tool_calls_total", tool="unknown", status="rejected", version="v1")
        == 1.0
    )
    assert (
        registry.get_sample_value(
            "agent_tool_calls_total",
            {"tool": "rm_rf_everything", "status": "rejected", "version": "v1"},
        )
        is None
    )


async def test_tool_events_and_call_records() -> None:
    """Each call emits tool_call then tool_result and is recorded for the turn."""
    events = Events()
    tools = guarded_tools(CollectorRegistry(), Counting(), sink=events)
    await tools.call(call("lookup", 9, key=3))
    assert events.names() == ["tool_call", "tool_result"]
    assert events.items[0][1] == {"id": "call_9", "name": "lookup", "arguments": {"key": 3}}
    result_event = events.items[1][1]
    assert result_event["id"] == "call_9"
    assert result_event["status"] == "success"
    assert result_event["content"] == "value 3"
    assert tools.calls == [
        {"name": "lookup", "arguments": {"key": 3}, "status": "success", "duration_ms": 0.0}
    ]


async def test_a_tool_source_that_raises_does_not_fail_the_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ToolSet whose call raises (a remote source down) gives a failure result: the
    model reads the exception's text, while the call's log line (and span) get only its
    type, since the text may quote the arguments."""

    class Flaky:
        async def list_tools(self) -> Sequence[ToolSpec]:
            return [ToolSpec(name="remote", description="remote tool")]

        async def call(
            self, name: str, arguments: dict[str, Any], *, context: ToolContext
        ) -> ToolResult:
            raise ConnectionError(f"tool server unreachable for {arguments['account']}")

    tools = GuardedTools(
        toolset=Flaky(),
        context=ToolContext(agent_id=AGENT, session_id="s", user_id="u", turn=1),
        metrics=AgentMetrics(CollectorRegistry()),
        log=LOG,
        clock=ManualClock(),
    )
    caplog.set_level(logging.INFO, logger=LOG.logger.name)
    result = await tools.call(call("remote", account="acct-4417-private"))
    assert result.status == "failure"
    assert "tool server unreachable for acct-4417-private" in result.content
    assert result.error == "ConnectionError"
    (line,) = [r for r in caplog.records if getattr(r, "event", None) == "tool_call"]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == "tool call remote: failure (ConnectionError)"
    assert "acct-4417" not in str(line.__dict__)


def _usage(input_tokens: int, output_tokens: int) -> Any:
    from agentkeel.models.types import Usage

    return Usage(input_tokens=input_tokens, output_tokens=output_tokens)
