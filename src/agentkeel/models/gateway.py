"""The model gateway: one ``complete`` over a chain of providers.

For each call the gateway walks the chain in order. A provider whose breaker is
open is skipped; a retryable error is retried on the same provider (backoff,
Retry-After); what still fails moves the call to the next provider. Each call
walks the chain afresh, so when a provider dies between two calls of one
turn, the second call simply lands on the next provider.

Streaming and fallback: tokens already passed to ``on_token`` by a provider
that then fails are not taken back. The next provider streams its reply from
the start, so a streaming client may see a reply restart. Nothing special is
emitted; clients that must not show this should not stream. Those tokens were
spent all the same: the reply that does come says how many attempts streamed
and failed before it (``ModelResponse.discarded_streams``) and a bound on what
they streamed, so budgets charge them.

A request may name the providers to walk (``ModelRequest.providers``, from the
turn's ``agent.model_chain``): only those, in that order.

Token counts for budgets: ``prompt_tokens`` asks each provider's
``TokenCounter`` (the universal byte bound for a provider without one) and
returns the largest, since any provider of the chain may end up answering.

Traces and logs: every attempt that reaches a provider is one ``chat {model}``
CLIENT span (GenAI conventions, ``semconv.py``) under the caller's span, so retries
and fallbacks show as siblings, and one ``model_call`` log line (provider, model,
tokens, duration, outcome; WARNING when it failed), never with message content.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from opentelemetry.trace import Span, SpanKind

from agentkeel.config.settings import RetrySettings
from agentkeel.errors import ModelUnavailable, ProviderError, ProviderRateLimited, ProviderTimeout
from agentkeel.models.counting import ByteBound, TokenCounter, text_bound
from agentkeel.models.trace_content import input_messages_json, output_messages_json
from agentkeel.models.types import ModelProvider, ModelRequest, ModelResponse, TokenCallback
from agentkeel.resilience.breaker import CircuitBreaker
from agentkeel.resilience.clock import Clock
from agentkeel.resilience.retry import RetryPolicy
from agentkeel.telemetry import semconv
from agentkeel.telemetry.metrics import BREAKER_STATE_VALUES, ModelMetrics
from agentkeel.telemetry.tracing import Tracing, mark_failed, tracing_off

logger = logging.getLogger(__name__)

OPERATION = semconv.OP_CHAT

# Errors that say the request was unacceptable rather than the endpoint being
# unwell; they still fall back (another model may accept it) but do not count
# against the provider's breaker, or one bad request could open it for everyone.
_REQUEST_FAULT_STATUSES = frozenset({400, 413, 422})


@dataclass(frozen=True, slots=True)
class _Attempt:
    provider: str
    reason: str
    retry_after: float | None = None


@dataclass(slots=True)
class _Discarded:
    """The attempts of one call that streamed text and then failed."""

    streams: int = 0
    output_bound: int = 0

    def add(self, text: str) -> None:
        self.streams += 1
        self.output_bound += text_bound(text)

    def charge(self, response: ModelResponse) -> ModelResponse:
        if not self.streams:
            return response
        return dataclasses.replace(
            response,
            discarded_streams=response.discarded_streams + self.streams,
            discarded_output_bound=response.discarded_output_bound + self.output_bound,
        )


@dataclass(slots=True)
class _Tap:
    """Passes one attempt's streamed text on, keeping it in case the attempt fails."""

    on_token: TokenCallback
    pieces: list[str] = field(default_factory=list)

    async def __call__(self, text: str) -> None:
        self.pieces.append(text)
        await self.on_token(text)


class ModelGateway:
    """Completes model requests over a chain of providers, with breakers, retries and fallback.

    >>> gateway = ModelGateway(providers=[local, backup], breakers=breakers,
    ...     retry=settings.retry, metrics=ModelMetrics(registry), clock=SystemClock())
    >>> response = await gateway.complete(ModelRequest(messages=[...]))

    A provider without an entry in ``breakers`` is always tried. A provider's
    optional ``system`` attribute (``openai``, ``anthropic``) labels the
    OpenTelemetry GenAI metrics; its name is used when it has none. A provider
    without an entry in ``counters`` has its prompts counted with ``ByteBound``.
    ``tracing`` records a ``chat`` span per attempt (default: none).
    """

    def __init__(
        self,
        *,
        providers: Sequence[ModelProvider],
        breakers: Mapping[str, CircuitBreaker],
        retry: RetrySettings,
        metrics: ModelMetrics,
        clock: Clock,
        rng: random.Random | None = None,
        counters: Mapping[str, TokenCounter] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        if not providers:
            raise ValueError("ModelGateway needs at least one provider.")
        self.providers = tuple(providers)
        counters = counters or {}
        # One bound serves every provider without a counter of its own: computed once a call.
        self._byte_bound = ByteBound()
        self._counters = tuple(
            dict.fromkeys(counters.get(p.name, self._byte_bound) for p in self.providers)
        )
        self._breakers = dict(breakers)
        self._metrics = metrics
        self._clock = clock
        self._retry_settings = retry
        self._rng = rng or random.Random()
        self._tracing = tracing or tracing_off()
        self._tracer = self._tracing.tracer(__name__)
        for provider in self.providers:
            breaker = self._breakers.get(provider.name)
            if breaker is None:
                continue
            metrics.breaker_state.labels(provider=provider.name).set(
                BREAKER_STATE_VALUES[breaker.state]
            )
            breaker.add_listener(self._breaker_listener(provider.name))

    @property
    def context_window(self) -> int:
        """The first provider's context window (the one most calls should land on)."""
        return self.providers[0].context_window

    async def prompt_tokens(self, request: ModelRequest) -> int:
        """An upper bound on the prompt tokens of ``request`` for whichever provider
        of the chain answers it: the largest of the providers' counts."""
        if len(self._counters) == 1:
            return await self._counters[0].prompt_tokens(request)
        # Server tokenizers answer over the network: ask them all at once.
        counts = await asyncio.gather(*(c.prompt_tokens(request) for c in self._counters))
        return max(counts)

    def breaker_states(self) -> dict[str, str]:
        """Each provider's breaker state; ``closed`` for a provider without a breaker."""
        return {
            p.name: (self._breakers[p.name].state if p.name in self._breakers else "closed")
            for p in self.providers
        }

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        """The first successful reply along the chain; ``ModelUnavailable`` when none.

        ``ModelUnavailable.retry_after`` is the soonest an open breaker will let
        a probe through (or a provider asked to be retried), when known.
        """
        attempts: list[_Attempt] = []
        discarded = _Discarded()
        previous: str | None = None
        for provider in self._chain(request.providers):
            breaker = self._breakers.get(provider.name)
            if breaker is not None and not breaker.allow():
                wait = breaker.retry_after()
                attempts.append(
                    _Attempt(provider.name, f"breaker open (retry in {math.ceil(wait)}s)", wait)
                )
                previous = provider.name
                continue
            if previous is not None:
                self._metrics.fallbacks.labels(
                    from_provider=previous, to_provider=provider.name
                ).inc()
                logger.warning(
                    "Model call falls back from %s to %s (%s)",
                    previous,
                    provider.name,
                    attempts[-1].reason if attempts else "skipped",
                )
            try:
                return discarded.charge(
                    await self._call(provider, breaker, request, on_token, discarded)
                )
            except ProviderError as exc:
                attempts.append(_Attempt(provider.name, exc.message, exc.retry_after))
                previous = provider.name
        raise self._unavailable(attempts)

    def _chain(self, names: tuple[str, ...] | None) -> Sequence[ModelProvider]:
        if names is None:
            return self.providers
        by_name = {p.name: p for p in self.providers}
        chain = [by_name[name] for name in names if name in by_name]
        if not chain:
            raise ModelUnavailable(
                f"The turn's model chain {list(names)} names none of this replica's "
                f"providers {list(by_name)}. Fix agent.model_chain (flag or override).",
            )
        return chain

    async def aclose(self) -> None:
        """Close every provider's connections, and its token counter's."""
        for provider in self.providers:
            await provider.aclose()
        for counter in self._counters:
            close = getattr(counter, "aclose", None)
            if close is not None:
                await close()

    async def _call(
        self,
        provider: ModelProvider,
        breaker: CircuitBreaker | None,
        request: ModelRequest,
        on_token: TokenCallback | None,
        discarded: _Discarded,
    ) -> ModelResponse:
        """One provider, with retries; every attempt's outcome goes to the breaker, and
        every failed attempt that streamed text to ``discarded``."""
        model = provider.model
        system = getattr(provider, "system", provider.name)
        last_error: ProviderError | None = None

        async def attempt() -> ModelResponse:
            nonlocal last_error
            # The breaker admitted the first attempt; a retry must ask again,
            # since earlier attempts may have opened it. Not retryable: stop here.
            if last_error is not None and breaker is not None and not breaker.allow():
                raise ProviderError(
                    f"{last_error.message} (breaker now open, "
                    f"retry in {math.ceil(breaker.retry_after())}s)",
                    provider=provider.name,
                    status_code=last_error.status_code,
                )
            with self._tracer.start_as_current_span(
                semconv.span_name(OPERATION, model),
                kind=SpanKind.CLIENT,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                if span.is_recording():
                    self._describe_request(span, provider, system, request)
                try:
                    return await self._attempt(
                        provider, breaker, system, request, on_token, discarded, span
                    )
                except ProviderError as exc:
                    last_error = exc
                    raise

        policy = RetryPolicy(
            settings=self._retry_settings,
            clock=self._clock,
            on_retry=lambda exc, n, wait: self._metrics.retries.labels(
                provider=provider.name
            ).inc(),
            rng=self._rng,
        )
        return await policy.run(attempt)

    async def _attempt(
        self,
        provider: ModelProvider,
        breaker: CircuitBreaker | None,
        system: str,
        request: ModelRequest,
        on_token: TokenCallback | None,
        discarded: _Discarded,
        span: Span,
    ) -> ModelResponse:
        """One attempt on ``provider`` inside its span: the breaker, metrics, the span's
        outcome and the ``model_call`` log line."""
        model = provider.model
        started = self._clock.monotonic()
        tap = _Tap(on_token) if on_token is not None else None
        try:
            response = await provider.complete(request, on_token=tap)
        except ProviderError as exc:
            elapsed = self._clock.monotonic() - started
            if tap is not None and tap.pieces:
                discarded.add("".join(tap.pieces))
            kind = _kind(exc)
            self._metrics.errors_for(provider.name, model, kind).inc()
            if breaker is not None:
                if exc.status_code in _REQUEST_FAULT_STATUSES:
                    breaker.release()
                else:
                    breaker.record_failure()
            mark_failed(span, kind, exc.message)
            logger.warning(
                "Model provider %s failed: %s",
                provider.name,
                exc.message,
                extra=_call_fields(provider.name, model, elapsed, kind),
            )
            raise
        except BaseException as exc:
            # Cancelled (or a bug): no verdict on the provider's health.
            if breaker is not None:
                breaker.release()
            mark_failed(span, type(exc).__qualname__)
            raise
        elapsed = self._clock.monotonic() - started
        if breaker is not None:
            breaker.record_success(elapsed)
        self._observe(provider.name, model, system, elapsed, response)
        if span.is_recording():
            self._describe_response(span, response, model)
        usage = response.usage
        logger.info(
            "model call to %s: %d input + %d output tokens",
            provider.name,
            usage.input_tokens,
            usage.output_tokens,
            extra={
                **_call_fields(provider.name, response.model or model, elapsed, "ok"),
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            },
        )
        return response

    def _describe_request(
        self, span: Span, provider: ModelProvider, system: str, request: ModelRequest
    ) -> None:
        span.set_attributes(
            {
                semconv.GEN_AI_OPERATION_NAME: OPERATION,
                semconv.GEN_AI_PROVIDER_NAME: system,
                semconv.KEEL_PROVIDER: provider.name,
                semconv.GEN_AI_REQUEST_MODEL: provider.model,
            }
        )
        if request.max_tokens is not None:
            span.set_attribute(semconv.GEN_AI_REQUEST_MAX_TOKENS, request.max_tokens)
        if request.temperature is not None:
            span.set_attribute(semconv.GEN_AI_REQUEST_TEMPERATURE, request.temperature)
        if self._tracing.capture_content:
            self._tracing.set_content(
                span, semconv.GEN_AI_INPUT_MESSAGES, input_messages_json(request.messages)
            )

    def _describe_response(self, span: Span, response: ModelResponse, model: str) -> None:
        span.set_attributes(
            {
                semconv.GEN_AI_RESPONSE_MODEL: response.model or model,
                semconv.GEN_AI_USAGE_INPUT_TOKENS: response.usage.input_tokens,
                semconv.GEN_AI_USAGE_OUTPUT_TOKENS: response.usage.output_tokens,
                semconv.GEN_AI_RESPONSE_FINISH_REASONS: (response.finish_reason,),
            }
        )
        if self._tracing.capture_content:
            self._tracing.set_content(
                span, semconv.GEN_AI_OUTPUT_MESSAGES, output_messages_json(response)
            )

    def _observe(
        self, provider: str, model: str, system: str, elapsed: float, response: ModelResponse
    ) -> None:
        m = self._metrics
        m.duration_for(provider, model).observe(elapsed)
        m.operation_duration_for(OPERATION, system, model).observe(elapsed)
        usage = response.usage
        m.token_usage_for(OPERATION, system, model, semconv.TOKEN_TYPE_INPUT).observe(
            usage.input_tokens
        )
        m.token_usage_for(OPERATION, system, model, semconv.TOKEN_TYPE_OUTPUT).observe(
            usage.output_tokens
        )

    def _breaker_listener(self, provider: str) -> _BreakerListener:
        return _BreakerListener(self._metrics, provider, self._breakers[provider])

    def _unavailable(self, attempts: Sequence[_Attempt]) -> ModelUnavailable:
        waits = [a.retry_after for a in attempts if a.retry_after is not None]
        # Breakers opened by this very call also say when it is worth coming back.
        waits += [b.retry_after() for b in self._breakers.values() if b.state != "closed"]
        retry_after = min(waits) if waits else None
        summary = "; ".join(f"{a.provider}: {a.reason}" for a in attempts)
        return ModelUnavailable(
            f"No model provider could answer. {summary}. Check the providers' health "
            "(GET /ready, agent_model_errors_total) or add a fallback provider to models.",
            retry_after=retry_after,
        )


class _BreakerListener:
    """Mirrors a breaker's transitions into metrics and logs."""

    def __init__(self, metrics: ModelMetrics, provider: str, breaker: CircuitBreaker) -> None:
        self._metrics = metrics
        self._provider = provider
        self._breaker = breaker

    def __call__(self, old: str, new: str) -> None:
        self._metrics.breaker_state.labels(provider=self._provider).set(BREAKER_STATE_VALUES[new])
        self._metrics.breaker_transitions.labels(provider=self._provider, state=new).inc()
        if new == "open":
            logger.warning(
                "Circuit breaker for model provider %s opened (%s); calls go to the next "
                "provider until a probe succeeds",
                self._provider,
                self._breaker.last_open_reason,
            )
        else:
            logger.info("Circuit breaker for model provider %s: %s -> %s", self._provider, old, new)


def _call_fields(provider: str, model: str, elapsed: float, outcome: str) -> dict[str, object]:
    """The fields of a ``model_call`` log line (``outcome``: ``ok`` or the error kind)."""
    return {
        "event": "model_call",
        "provider": provider,
        "model": model,
        "duration_ms": round(elapsed * 1000, 3),
        "outcome": outcome,
    }


def _kind(exc: ProviderError) -> str:
    """A bounded label for the metric: timeout, rate_limited, server, client, connection."""
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    if isinstance(exc, ProviderRateLimited) or exc.status_code == 429:
        return "rate_limited"
    if exc.status_code is None:
        return "connection" if exc.retryable else "other"
    if exc.status_code >= 500:
        return "server"
    return "client"
