from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.settings import RetrySettings
from agentkeel.errors import ModelUnavailable, ProviderError, ProviderTimeout
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.openai_provider import OpenAIProvider
from agentkeel.models.scripted import CallTools, Fail, Say, ScriptedProvider
from agentkeel.models.types import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    TokenCallback,
    ToolSpec,
    Usage,
)
from agentkeel.resilience.breaker import CircuitBreaker
from agentkeel.resilience.clock import ManualClock
from agentkeel.telemetry.metrics import ModelMetrics
from tests.models.fake_endpoints import REPLY_TEXT, serve_fake_endpoints

RETRY = RetrySettings(
    max_attempts=3, initial_backoff_s=0.5, max_backoff_s=4.0, max_retry_after_s=30
)
QUESTION = ModelRequest(messages=[ChatMessage("user", "What is 2 + 2?")])


class Switchable:
    """A provider whose health the test flips; optionally streams a few tokens before failing."""

    system = "test"

    def __init__(self, name: str, *, clock: ManualClock, latency_s: float = 0.0) -> None:
        self.name = name
        self.model = f"{name}-model"
        self.context_window = 4096
        self.failing: ProviderError | None = None
        self.tokens_before_failing: list[str] = []
        self.latency_s = latency_s
        self.calls = 0
        self.closed = False
        self._clock = clock

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        self.calls += 1
        if self.latency_s:
            await self._clock.sleep(self.latency_s)
        if self.failing is not None:
            for token in self.tokens_before_failing:
                if on_token is not None:
                    await on_token(token)
            raise self.failing
        if on_token is not None:
            await on_token(f"from {self.name}")
        return ModelResponse(
            content=f"from {self.name}",
            usage=Usage(input_tokens=10, output_tokens=3),
            model=self.model,
            provider=self.name,
        )

    async def aclose(self) -> None:
        self.closed = True


def server_error(name: str) -> ProviderError:
    return ProviderError("HTTP 503 from test", provider=name, retryable=True, status_code=503)


def breaker(name: str, clock: ManualClock, **overrides: float) -> CircuitBreaker:
    options: dict[str, float] = {
        "failure_threshold": 3,
        "failure_window_s": 60,
        "latency_threshold_s": 2.0,
        "latency_window": 10,
        "min_latency_samples": 3,
        "open_s": 30,
    }
    options.update(overrides)
    return CircuitBreaker(
        name=name,
        clock=clock,
        failure_threshold=int(options["failure_threshold"]),
        failure_window_s=options["failure_window_s"],
        latency_threshold_s=options["latency_threshold_s"],
        latency_window=int(options["latency_window"]),
        min_latency_samples=int(options["min_latency_samples"]),
        open_s=options["open_s"],
    )


def make_gateway(
    *providers: object, clock: ManualClock, with_breakers: bool = True, **breaker_options: float
) -> tuple[ModelGateway, CollectorRegistry]:
    registry = CollectorRegistry()
    names = [p.name for p in providers]  # type: ignore[attr-defined]
    breakers = {n: breaker(n, clock, **breaker_options) for n in names} if with_breakers else {}
    gateway = ModelGateway(
        providers=providers,  # type: ignore[arg-type]
        breakers=breakers,
        retry=RETRY,
        metrics=ModelMetrics(registry),
        clock=clock,
        rng=random.Random(1),
    )
    return gateway, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_first_healthy_provider_answers_and_usage_is_metered() -> None:
    """The first provider answers; duration and GenAI token usage are recorded for it."""
    clock = ManualClock()
    local = Switchable("local", clock=clock, latency_s=0.4)
    backup = Switchable("backup", clock=clock)
    gateway, registry = make_gateway(local, backup, clock=clock)
    response = await gateway.complete(QUESTION)
    assert response.content == "from local"
    assert backup.calls == 0
    assert (
        sample(
            registry,
            "agent_model_request_duration_seconds_count",
            provider="local",
            model="local-model",
            version="v1",
        )
        == 1
    )
    assert sample(
        registry,
        "agent_model_request_duration_seconds_sum",
        provider="local",
        model="local-model",
        version="v1",
    ) == pytest.approx(0.4)
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "test",
        "gen_ai_request_model": "local-model",
    }
    assert (
        sample(registry, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="input") == 10
    )
    assert (
        sample(registry, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="output") == 3
    )
    assert sample(registry, "gen_ai_client_operation_duration_seconds_count", **genai) == 1
    assert sample(registry, "agent_model_breaker_state", provider="local") == 0


async def test_retryable_error_is_retried_on_the_same_provider() -> None:
    """One 500 then success: answered by the same provider after one backoff, counted."""
    clock = ManualClock()
    local = ScriptedProvider(name="local", script=[Fail("server_error"), Say("ok")], clock=clock)
    backup = ScriptedProvider(name="backup", script=["backup"], clock=clock)
    gateway, registry = make_gateway(local, backup, clock=clock)
    response = await gateway.complete(QUESTION)
    assert response.content == "ok" and response.provider == "local"
    assert len(clock.slept) == 1 and 0 <= clock.slept[0] <= 0.5
    assert sample(registry, "agent_model_retries_total", provider="local") == 1
    assert (
        sample(
            registry,
            "agent_model_errors_total",
            provider="local",
            model="scripted",
            kind="server",
            version="v1",
        )
        == 1
    )
    assert (
        sample(registry, "agent_model_fallbacks_total", from_provider="local", to_provider="backup")
        == 0
    )


async def test_falls_back_after_retries_are_exhausted() -> None:
    """A provider that keeps failing is retried max_attempts times, then the next one answers."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = server_error("local")
    backup = Switchable("backup", clock=clock)
    gateway, registry = make_gateway(local, backup, clock=clock, failure_threshold=10)
    response = await gateway.complete(QUESTION)
    assert response.content == "from backup"
    assert local.calls == 3
    assert sample(registry, "agent_model_retries_total", provider="local") == 2
    assert (
        sample(registry, "agent_model_fallbacks_total", from_provider="local", to_provider="backup")
        == 1
    )
    assert (
        sample(
            registry,
            "agent_model_errors_total",
            provider="local",
            model="local-model",
            kind="server",
            version="v1",
        )
        == 3
    )


async def test_falls_back_mid_turn_when_the_first_provider_dies_between_calls() -> None:
    """Call 1 of a turn gets a tool call from the first provider; it then starts failing,
    and call 2 of the same turn is answered by the second provider."""
    clock = ManualClock()
    local = ScriptedProvider(
        name="local",
        script=[CallTools.one("calculator", expression="2 + 2"), Fail("server_error")],
        on_end="repeat",
        clock=clock,
    )
    backup = ScriptedProvider(name="backup", script=[Say("It is 4.")], clock=clock)
    gateway, registry = make_gateway(local, backup, clock=clock)

    first = await gateway.complete(QUESTION)
    assert first.provider == "local"
    assert first.tool_calls[0].name == "calculator"

    call = first.tool_calls[0]
    follow_up = ModelRequest(
        messages=[
            *QUESTION.messages,
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", "4", tool_call_id=call.id, name=call.name),
        ]
    )
    second = await gateway.complete(follow_up)
    assert second.provider == "backup"
    assert second.content == "It is 4."
    assert backup.requests[0].messages[-1].content == "4", "the fallback sees the whole turn"
    assert (
        sample(registry, "agent_model_fallbacks_total", from_provider="local", to_provider="backup")
        == 1
    )


async def test_open_breaker_skips_the_provider_and_updates_metrics() -> None:
    """Once its breaker opens, the provider is not called at all; the state is exported."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = server_error("local")
    backup = Switchable("backup", clock=clock)
    gateway, registry = make_gateway(local, backup, clock=clock)
    await gateway.complete(QUESTION)
    assert gateway.breaker_states() == {"local": "open", "backup": "closed"}
    assert sample(registry, "agent_model_breaker_state", provider="local") == 2
    assert (
        sample(registry, "agent_model_breaker_transitions_total", provider="local", state="open")
        == 1
    )
    calls_before = local.calls
    response = await gateway.complete(QUESTION)
    assert response.content == "from backup"
    assert local.calls == calls_before
    assert (
        sample(registry, "agent_model_fallbacks_total", from_provider="local", to_provider="backup")
        == 2
    )


async def test_half_open_probe_success_brings_the_provider_back() -> None:
    """After open_s one call probes the recovered provider and closes its breaker."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = server_error("local")
    backup = Switchable("backup", clock=clock)
    gateway, registry = make_gateway(local, backup, clock=clock)
    await gateway.complete(QUESTION)
    assert gateway.breaker_states()["local"] == "open"
    local.failing = None
    clock.advance(30)
    response = await gateway.complete(QUESTION)
    assert response.content == "from local"
    assert gateway.breaker_states()["local"] == "closed"
    assert sample(registry, "agent_model_breaker_state", provider="local") == 0
    for state in ("open", "half_open", "closed"):
        assert (
            sample(registry, "agent_model_breaker_transitions_total", provider="local", state=state)
            == 1
        )


async def test_failed_probe_is_not_retried_and_reopens() -> None:
    """A failing half-open probe reopens the breaker; the retry does not hammer the provider."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = server_error("local")
    backup = Switchable("backup", clock=clock)
    gateway, _ = make_gateway(local, backup, clock=clock)
    await gateway.complete(QUESTION)
    clock.advance(30)
    calls_before = local.calls
    response = await gateway.complete(QUESTION)
    assert response.content == "from backup"
    assert local.calls == calls_before + 1
    assert gateway.breaker_states()["local"] == "open"


async def test_breaker_opening_during_retries_stops_them_and_keeps_the_cause() -> None:
    """When a provider's own failures open its breaker, retries stop there, and the
    error still names the failure that did it."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = server_error("local")
    gateway, _ = make_gateway(local, clock=clock, failure_threshold=2)
    with pytest.raises(ModelUnavailable) as info:
        await gateway.complete(QUESTION)
    assert local.calls == 2
    assert "local: HTTP 503 from test (breaker now open, retry in 30s)" in info.value.message


async def test_slow_provider_opens_its_breaker_on_latency() -> None:
    """Successful but slow replies (p95 over the threshold) open the breaker; calls move on."""
    clock = ManualClock()
    local = Switchable("local", clock=clock, latency_s=5.0)
    backup = Switchable("backup", clock=clock)
    gateway, _ = make_gateway(local, backup, clock=clock)
    for _ in range(3):
        assert (await gateway.complete(QUESTION)).content == "from local"
    assert gateway.breaker_states()["local"] == "open"
    assert (await gateway.complete(QUESTION)).content == "from backup"


async def test_long_retry_after_falls_back_without_waiting() -> None:
    """A 429 asking for more than max_retry_after_s goes to the next provider at once."""
    clock = ManualClock()
    local = ScriptedProvider(
        name="local", script=[Fail("rate_limited", retry_after=120)], clock=clock
    )
    backup = ScriptedProvider(name="backup", script=["from backup"], clock=clock)
    gateway, registry = make_gateway(local, backup, clock=clock)
    response = await gateway.complete(QUESTION)
    assert response.content == "from backup"
    assert clock.slept == []
    assert (
        sample(
            registry,
            "agent_model_errors_total",
            provider="local",
            model="scripted",
            kind="rate_limited",
            version="v1",
        )
        == 1
    )


async def test_short_retry_after_is_waited_out_on_the_same_provider() -> None:
    """A 429 with a short Retry-After is retried on the same provider after exactly that wait."""
    clock = ManualClock()
    local = ScriptedProvider(
        name="local", script=[Fail("rate_limited", retry_after=4), "ok"], clock=clock
    )
    backup = ScriptedProvider(name="backup", script=["from backup"], clock=clock)
    gateway, _ = make_gateway(local, backup, clock=clock)
    response = await gateway.complete(QUESTION)
    assert response.provider == "local"
    assert clock.slept == [4]


async def test_model_unavailable_lists_every_provider_and_why() -> None:
    """When the whole chain fails: 503 ModelUnavailable naming each provider's reason, with
    retry_after the soonest breaker probe."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = server_error("local")
    backup = Switchable("backup", clock=clock)
    gateway, _ = make_gateway(local, backup, clock=clock)
    await gateway.complete(QUESTION)  # opens local's breaker
    opened_at = clock.monotonic()
    clock.advance(18)
    backup.failing = ProviderTimeout("timeout after 30s", provider="backup", retryable=True)
    with pytest.raises(ModelUnavailable) as info:
        await gateway.complete(QUESTION)
    error = info.value
    assert error.status == 503
    assert "local: breaker open (retry in 12s)" in error.message
    assert "backup: timeout after 30s" in error.message
    # backup's own retries waited a little, bringing local's probe closer still.
    assert error.retry_after == pytest.approx(30 - (clock.monotonic() - opened_at))
    assert error.retry_after is not None and error.retry_after < 12


async def test_bad_request_falls_back_but_does_not_trip_the_breaker() -> None:
    """A 400 is the request's fault: the next provider is tried, the breaker stays closed."""
    clock = ManualClock()
    local = ScriptedProvider(
        name="local", script=[Fail("bad_request")], on_end="repeat", clock=clock
    )
    backup = ScriptedProvider(name="backup", script=[], clock=clock)
    gateway, _ = make_gateway(local, backup, clock=clock, failure_threshold=1)
    for _ in range(3):
        response = await gateway.complete(QUESTION)
        assert response.provider == "backup"
    assert gateway.breaker_states()["local"] == "closed"
    assert len(local.requests) == 3, "non-retryable errors are not retried"


async def test_stream_restarts_on_the_fallback_provider() -> None:
    """Tokens streamed before a provider failed stay sent; the next provider streams anew."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = ProviderError("stream broke", provider="local", retryable=False)
    local.tokens_before_failing = ["partial "]
    backup = Switchable("backup", clock=clock)
    gateway, _ = make_gateway(local, backup, clock=clock)
    tokens: list[str] = []

    async def on_token(token: str) -> None:
        tokens.append(token)

    response = await gateway.complete(QUESTION, on_token=on_token)
    assert response.content == "from backup"
    assert tokens == ["partial ", "from backup"]
    # The broken stream was spent: the reply says so, for the budgets to charge it.
    assert (response.discarded_streams, response.discarded_output_bound) == (1, len("partial "))


async def test_retried_streams_that_broke_are_reported_with_the_reply() -> None:
    """Each attempt that streamed and then failed (retries on one provider too) counts in
    the reply's discarded streams; attempts that failed before streaming, and calls
    without a stream, count nothing."""
    clock = ManualClock()
    flaky = ScriptedProvider(
        name="flaky",
        script=[
            Fail("server_error", streamed="one two"),
            Fail("server_error"),
            Fail("server_error", streamed="three"),
            "done",
        ],
        clock=clock,
        cursor="global",
    )
    gateway = ModelGateway(
        providers=[flaky],
        breakers={},
        retry=RetrySettings(max_attempts=4, initial_backoff_s=0.01),
        metrics=ModelMetrics(CollectorRegistry()),
        clock=clock,
    )
    tokens: list[str] = []

    async def on_token(token: str) -> None:
        tokens.append(token)

    response = await gateway.complete(QUESTION, on_token=on_token)
    assert (response.content, response.discarded_streams) == ("done", 2)
    assert response.discarded_output_bound == len("one two") + len("three")
    assert "".join(tokens) == "one twothreedone"
    silent = await gateway.complete(QUESTION)
    assert silent.discarded_streams == 0


async def test_cancelled_probe_frees_the_breaker() -> None:
    """A probe call cancelled mid-flight does not leave the breaker refusing everyone."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = server_error("local")
    gateway, _ = make_gateway(local, clock=clock)
    with pytest.raises(ModelUnavailable):
        await gateway.complete(QUESTION)
    clock.advance(30)
    local.failing = None

    started = asyncio.Event()
    release = asyncio.Event()
    original = local.complete

    async def hanging(
        request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        started.set()
        await release.wait()
        return await original(request, on_token=on_token)

    local.complete = hanging  # type: ignore[method-assign]
    task = asyncio.create_task(gateway.complete(QUESTION))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    local.complete = original  # type: ignore[method-assign]
    assert (await gateway.complete(QUESTION)).content == "from local"
    assert gateway.breaker_states()["local"] == "closed"


async def test_providers_without_breakers_are_always_tried() -> None:
    """A provider missing from the breakers mapping is called every time."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    local.failing = server_error("local")
    gateway, _ = make_gateway(local, clock=clock, with_breakers=False)
    for _ in range(3):
        with pytest.raises(ModelUnavailable):
            await gateway.complete(QUESTION)
    assert local.calls == 9
    assert gateway.breaker_states() == {"local": "closed"}


async def test_context_window_and_aclose() -> None:
    """context_window is the first provider's; aclose closes every provider."""
    clock = ManualClock()
    local = Switchable("local", clock=clock)
    backup = ScriptedProvider(name="backup", script=[], clock=clock, context_window=100)
    gateway, _ = make_gateway(local, backup, clock=clock)
    assert gateway.context_window == 4096
    await gateway.aclose()
    assert local.closed


async def test_gateway_over_a_provider_without_tool_support() -> None:
    """A local model without function calling (supports_tools=False) behind the gateway
    answers a request that offers tools; no tool definitions reach the endpoint."""
    clock = ManualClock()
    with serve_fake_endpoints() as endpoints:
        local = OpenAIProvider(
            name="local",
            model="text",
            base_url=f"{endpoints.base_url}/v1",
            api_key=None,
            context_window=2048,
            timeout_s=5.0,
            supports_tools=False,
        )
        gateway, _ = make_gateway(local, clock=clock)
        request = ModelRequest(
            messages=QUESTION.messages, tools=[ToolSpec("calculator", "Evaluates arithmetic.")]
        )
        try:
            response = await gateway.complete(request)
        finally:
            await gateway.aclose()
    assert response.content == REPLY_TEXT
    assert "tools" not in endpoints.last.body
