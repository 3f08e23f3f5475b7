"""The guarded handles a turn carries: ``turn.model`` and ``turn.tools``.

``GuardedModel`` wraps the model gateway for one turn: it counts model steps
against ``max_steps_per_turn``, reserves tokens on the session's budget and the
user's and organization's quotas before each call (the turn's limits; a call
whose limits are all 0 neither counts its prompt nor touches the ledger) and
settles them with the provider's figures after, trims old tool results when the
context gets full, streams tokens to the turn's event sink, meters usage and
records each call's usage and spend (``usage.py``).

What a call is charged: the provider's figures when it reports them, else the
prompt bound plus the reply's byte bound; on top, attempts the gateway gave up
on after they streamed (``ModelResponse.discarded_streams``). A call that fails
after streaming is charged its prompt bound plus the byte bound of what it
streamed; one that fails before any token, nothing.

Two token counts, on purpose: trimming uses the realistic estimate
(``estimate_tokens``: does the prompt fit the window?), the reservation uses
an upper bound (``TokenCounter.prompt_tokens``, the gateway's: the provider's
own tokenizer or the UTF-8 byte bound) plus the call's ``max_tokens``, so a
reservation is never smaller than what the call can cost, in any script.

``GuardedTools`` wraps a ``ToolSet`` for one turn: allowlist, storm detection
(the same call over and over), a per-session rate limit, memory write
permission, metrics, events, an ``execute_tool {tool}`` span (its MCP requests carry
the span's ``traceparent``) and one ``tool_call`` log line per call (tool, status,
duration; WARNING with the reason when it did not succeed), never its arguments or
result.

Both take their limits from the turn's ``TurnSettings`` (flags and overrides
applied), which the runtime resolves at the start of the turn.

Neither raises for a tool problem: a refused tool call comes back as a
``ToolResult`` with status ``rejected`` that the model reads, so the loop ends
with a reply the user sees instead of an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from agentkeel.config.live import TurnSettings
from agentkeel.errors import QuotaExhausted, TokenBudgetExhausted
from agentkeel.models.counting import ByteBound, TokenCounter, text_bound, tool_call_bound
from agentkeel.models.tokens import estimate_tokens
from agentkeel.models.types import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    TokenCallback,
    ToolCall,
    ToolSpec,
    Usage,
)
from agentkeel.resilience.budget import BudgetLimits, Reservation, TokenBudget
from agentkeel.resilience.clock import Clock
from agentkeel.resilience.ratelimit import RateLimiter
from agentkeel.resilience.retry import retry_after_seconds
from agentkeel.runtime.usage import UsageMeter
from agentkeel.telemetry.log_categories import Category
from agentkeel.telemetry.metrics import AgentMetrics
from agentkeel.telemetry.tracing import Tracing, start_tool_span, tracing_off
from agentkeel.tools.memory_tools import MEMORY_WRITE_TOOLS
from agentkeel.tools.types import ToolContext, ToolResult, ToolSet

EventSink = Callable[[str, Mapping[str, Any]], Awaitable[None]]
"""Receives the turn's stream events: ``token``, ``tool_call``, ``tool_result``."""

TokenEstimator = Callable[[Sequence[ChatMessage], Sequence[ToolSpec]], int]

_DROPPED_PREFIX = "[dropped:"
_ANSWER_NOW = " Answer with the information you already have, without calling tools."


class TurnLog(logging.LoggerAdapter[logging.Logger]):
    """A logger adapter whose fields (session_id, turn, agent_id) merge with each
    call's own ``extra`` instead of replacing it, as the stdlib adapter does
    before Python 3.13."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class ModelBackend(Protocol):
    """What ``GuardedModel`` needs from the gateway. A backend that is also a
    ``TokenCounter`` (``ModelGateway`` is) counts the prompts reserved for;
    for any other the universal byte bound does."""

    @property
    def context_window(self) -> int: ...

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse: ...


class StepLimitReached(Exception):
    """Raised by ``GuardedModel.complete`` instead of calling the model once the
    turn has used ``max_steps_per_turn`` model calls. ``ToolAgent`` turns it into
    a reply; the runtime does the same for a custom agent that lets it through."""

    def __init__(self, *, steps: int) -> None:
        self.steps = steps
        self.reply = (
            f"I stopped working on this after {steps} model steps, the limit for one turn, "
            "before I had a final answer. Ask me to continue, or break the request into "
            "smaller parts."
        )
        super().__init__(f"step limit of {steps} model calls per turn reached")


@dataclass(frozen=True, slots=True)
class TrimResult:
    """Messages after trimming, and what was dropped."""

    messages: Sequence[ChatMessage]
    tokens: int
    dropped_tokens: int = 0
    dropped_results: int = 0


def trim_tool_results(
    messages: Sequence[ChatMessage],
    *,
    tools: Sequence[ToolSpec],
    limit: int,
    estimate: TokenEstimator = estimate_tokens,
) -> TrimResult:
    """Replace the content of the oldest tool results with a short marker until the
    prompt fits in ``limit`` tokens (or no tool result is left to drop).

    The tool messages stay, so every assistant tool call keeps its result and
    providers still accept the conversation.
    """
    total = estimate(messages, tools)
    if total <= limit:
        return TrimResult(messages=messages, tokens=total)
    out = list(messages)
    dropped_tokens = 0
    dropped_results = 0
    for index, message in enumerate(out):
        if total <= limit:
            break
        if message.role != "tool" or message.content.startswith(_DROPPED_PREFIX):
            continue
        before = estimate([message], ())
        marker = replace(
            message,
            content=f"{_DROPPED_PREFIX} an earlier tool result of about {before} tokens was "
            "removed to fit the context window]",
        )
        saved = before - estimate([marker], ())
        if saved <= 0:
            continue
        out[index] = marker
        total -= saved
        dropped_tokens += saved
        dropped_results += 1
    return TrimResult(
        messages=out, tokens=total, dropped_tokens=dropped_tokens, dropped_results=dropped_results
    )


class GuardedModel:
    """The model handle of one turn (implements ``TurnModel``)."""

    def __init__(
        self,
        *,
        gateway: ModelBackend,
        metrics: AgentMetrics,
        log: logging.LoggerAdapter[logging.Logger],
        agent_id: str,
        session_id: str,
        user_id: str,
        max_steps: int,
        max_output_tokens: int,
        context_trim_ratio: float,
        budget: TokenBudget | None = None,
        sink: EventSink | None = None,
        estimate: TokenEstimator = estimate_tokens,
        counter: TokenCounter | None = None,
        organization: str | None = None,
        settings: TurnSettings | None = None,
        usage: UsageMeter | None = None,
    ) -> None:
        self._gateway = gateway
        self._settings = settings
        self._usage_meter = usage
        self._chain = settings.model_chain if settings is not None else None
        if counter is None:
            counter = gateway if isinstance(gateway, TokenCounter) else ByteBound()
        self._counter = counter
        self._metrics = metrics
        self._log = log
        self._agent_id = agent_id
        self._session_id = session_id
        self._user_id = user_id
        self._organization = organization
        self._max_steps = max_steps
        self._max_output_tokens = max_output_tokens
        self._trim_ratio = context_trim_ratio
        self._budget = budget
        self._sink = sink
        self._estimate = estimate
        self.steps = 0
        """Model calls made in this turn."""
        self.usage = Usage()
        """Provider-reported tokens summed over this turn's calls."""
        self.step_limit_hit = False

    @property
    def context_window(self) -> int:
        return self._gateway.context_window

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[ToolSpec] = (),
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ModelResponse:
        """One guarded model call. Raises ``StepLimitReached`` instead of calling the
        model past the step limit, ``TokenBudgetExhausted`` (429) when the session's budget
        cannot cover the call, ``QuotaExhausted`` (429) when a user or organization quota
        cannot, and whatever the gateway raises (``ModelUnavailable``)."""
        if self.steps >= self._max_steps:
            if not self.step_limit_hit:
                self.step_limit_hit = True
                self._metrics.guardrails_for("step_limit", self._agent_id).inc()
                self._log.warning(
                    "step limit reached: %d model calls in this turn; ending the turn with a reply",
                    self.steps,
                    extra={"event": "guardrail", "reason": "step_limit"},
                )
            raise StepLimitReached(steps=self.steps)
        # Never unbounded: the reservation is the prompt bound plus this cap.
        limit = max(1, min(max_tokens or self._max_output_tokens, self._max_output_tokens))
        window = self._gateway.context_window
        trimmed = trim_tool_results(
            messages, tools=tools, limit=int(window * self._trim_ratio), estimate=self._estimate
        )
        if trimmed.dropped_results:
            self._metrics.guardrails_for("context_trimmed", self._agent_id).inc()
            self._log.info(
                "context trimmed: dropped %d tokens from the %d oldest tool result(s); "
                "the prompt is now about %d of %d tokens",
                trimmed.dropped_tokens,
                trimmed.dropped_results,
                trimmed.tokens,
                window,
                extra={"event": "guardrail", "reason": "context_trimmed"},
            )
        utilization = trimmed.tokens / window
        self._metrics.context_utilization_for(self._agent_id).set(utilization)
        self._metrics.context_utilization_calls_for(self._agent_id).observe(utilization)
        request = ModelRequest(
            messages=trimmed.messages,
            tools=tools,
            max_tokens=limit,
            temperature=temperature,
            providers=self._chain,
        )
        limits = self._limits()
        prompt_bound: int | None = None
        reservation = None
        if self._budget is not None and not limits.unlimited:
            prompt_bound = await self._counter.prompt_tokens(request)
            reservation = await self._reserve(prompt_bound + limit, limits)
        self.steps += 1
        stream = _StreamTap(self._sink) if self._sink is not None else None
        try:
            response = await self._gateway.complete(request, on_token=stream)
        except BaseException:
            if reservation is not None and self._budget is not None:
                # Tokens streamed before the failure were spent; none streamed, none spent.
                spent = 0
                if stream is not None and stream.pieces and prompt_bound is not None:
                    spent = prompt_bound + stream.bound()
                await self._budget.settle(reservation, spent)
            raise
        if prompt_bound is None and (not response.usage.total_tokens or response.discarded_streams):
            prompt_bound = await self._counter.prompt_tokens(request)
        charged = _charged(response, prompt_bound or 0)
        used = charged.total_tokens
        if reservation is not None and self._budget is not None:
            await self._budget.settle(reservation, used)
        if reservation is not None and used > reservation.amount:
            self._log.warning(
                "model %s reported %d tokens for a call that reserved %d; the token budget "
                "can be overspent by the difference. Configure models[].tokenizer for this "
                "provider, or lower guardrails.max_output_tokens if it ignores max_tokens",
                response.model or response.provider or "unknown",
                used,
                reservation.amount,
                extra={"event": "guardrail", "reason": "token_budget_underestimated"},
            )
        self.usage = self.usage + response.usage
        model = response.model or response.provider or "unknown"
        if response.usage.input_tokens:
            self._metrics.tokens_for(model, "input", self._agent_id).inc(
                response.usage.input_tokens
            )
        if response.usage.output_tokens:
            self._metrics.tokens_for(model, "output", self._agent_id).inc(
                response.usage.output_tokens
            )
        if self._usage_meter is not None:
            await self._usage_meter.record(
                response,
                charged=charged,
                user_id=self._user_id,
                organization=self._organization,
                pricing=self._settings.pricing if self._settings is not None else None,
            )
        return response

    def _limits(self) -> BudgetLimits:
        """The call's limits: the turn's live settings, else the budget's own."""
        settings = self._settings
        if settings is not None:
            return BudgetLimits.from_settings(
                settings.quotas, session=settings.guardrails.session_token_budget
            )
        return self._budget.limits if self._budget is not None else BudgetLimits()

    async def _reserve(self, amount: int, limits: BudgetLimits) -> Reservation | None:
        if self._budget is None:
            return None
        try:
            return await self._budget.reserve(
                self._session_id,
                self._user_id,
                amount,
                organization=self._organization,
                limits=limits,
            )
        except TokenBudgetExhausted:
            self._metrics.guardrails_for("token_budget", self._agent_id).inc()
            raise
        except QuotaExhausted as exc:
            self._metrics.guardrails_for("quota_exhausted", self._agent_id).inc()
            self._log.warning(
                "quota exhausted: the %s's %s quota of %d tokens has no room for this call",
                exc.scope,
                exc.period,
                exc.limit,
                extra={"event": "guardrail", "reason": "quota_exhausted"},
            )
            raise


def _charged(response: ModelResponse, prompt_bound: int) -> Usage:
    """What a call is charged: the provider's figures; for an endpoint that reports no
    usage, the bound of the prompt and of the reply, never a guess. Attempts that streamed
    and failed before this reply add the prompt bound each and the bound of their text."""
    usage = response.usage
    if not usage.total_tokens:
        usage = Usage(
            input_tokens=prompt_bound,
            output_tokens=text_bound(response.content)
            + sum(tool_call_bound(call) for call in response.tool_calls),
        )
    if response.discarded_streams:
        usage = usage + Usage(
            input_tokens=prompt_bound * response.discarded_streams,
            output_tokens=response.discarded_output_bound,
        )
    return usage


class _StreamTap:
    """Passes a call's streamed text to the turn's sink, keeping it: if the call fails,
    what it streamed was spent."""

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self.pieces: list[str] = []

    async def __call__(self, text: str) -> None:
        if text:
            self.pieces.append(text)
            await self._sink("token", {"text": text})

    def bound(self) -> int:
        """An upper bound on the tokens streamed so far."""
        return text_bound("".join(self.pieces))


class GuardedTools:
    """The tools handle of one turn (implements ``TurnTools``)."""

    def __init__(
        self,
        *,
        toolset: ToolSet | None,
        context: ToolContext,
        metrics: AgentMetrics,
        log: logging.LoggerAdapter[logging.Logger],
        clock: Clock,
        allowed: Sequence[str] | None = None,
        storm_threshold: int = 3,
        rate_limiter: RateLimiter | None = None,
        sink: EventSink | None = None,
        memory_writes: bool = True,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracing = tracing or tracing_off()
        self._tracer = self._tracing.tracer("agentkeel.runtime.tools")
        self._toolset = toolset
        self._context = context
        self._memory_writes = memory_writes
        self._metrics = metrics
        self._log = log
        self._clock = clock
        self._allowed = frozenset(allowed) if allowed is not None else None
        self._storm_threshold = storm_threshold
        self._limiter = rate_limiter
        self._sink = sink
        self._specs: tuple[ToolSpec, ...] | None = None
        self._known: frozenset[str] = frozenset()
        self._seen: dict[str, int] = {}
        self._stopped: str | None = None
        self.calls: list[dict[str, Any]] = []
        """Every call of this turn: name, arguments, status, duration_ms."""

    @property
    def stopped(self) -> str | None:
        return self._stopped

    async def list_tools(self) -> Sequence[ToolSpec]:
        """The tools this agent may call: the tool set filtered by the allowlist."""
        if self._specs is None:
            specs = tuple(await self._toolset.list_tools()) if self._toolset is not None else ()
            self._known = frozenset(spec.name for spec in specs)
            self._specs = tuple(
                spec for spec in specs if self._allowed is None or spec.name in self._allowed
            )
        return self._specs

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one tool call through the guardrails; never raises for a tool problem."""
        await self.list_tools()
        label = call.name if call.name in self._known else "unknown"
        if self._sink is not None:
            await self._sink(
                "tool_call", {"id": call.id, "name": call.name, "arguments": call.arguments}
            )
        with start_tool_span(
            self._tracing,
            self._tracer,
            tool=call.name,
            arguments=call.arguments,
            call_id=call.id,
        ) as span:
            start = self._clock.monotonic()
            result = await self._guarded_call(call)
            elapsed = max(0.0, self._clock.monotonic() - start)
            duration_ms = round(elapsed * 1000, 3)
            span.finish(status=result.status, result=result.content, error=result.error)
            self._log.log(
                logging.INFO if result.status == "success" else logging.WARNING,
                "tool call %s: %s%s",
                call.name,
                result.status,
                f" ({result.error})" if result.error else "",
                extra={
                    "event": "tool_call",
                    "category": Category.TOOL_CALL,
                    "tool": call.name,
                    "status": result.status,
                    "duration_ms": duration_ms,
                },
            )
        self._metrics.tool_calls_for(label, result.status).inc()
        if result.status != "rejected":
            self._metrics.tool_duration_for(label).observe(elapsed)
        self.calls.append(
            {
                "name": call.name,
                "arguments": call.arguments,
                "status": result.status,
                "duration_ms": duration_ms,
            }
        )
        if self._sink is not None:
            await self._sink(
                "tool_result",
                {
                    "id": call.id,
                    "name": call.name,
                    "status": result.status,
                    "content": result.content,
                    "duration_ms": duration_ms,
                },
            )
        return result

    async def _guarded_call(self, call: ToolCall) -> ToolResult:
        if self._stopped is not None:
            return ToolResult(
                status="rejected", content=self._stopped + _ANSWER_NOW, error="tool_loop_stopped"
            )
        if not self._memory_writes and call.name in MEMORY_WRITE_TOOLS:
            self._metrics.guardrails_for("memory_write_off", self._context.agent_id).inc()
            return ToolResult(
                status="rejected",
                content=f"tool '{call.name}' writes memory, and memory writes are off for "
                "this turn; answer without storing anything",
                error="memory_write_off",
            )
        if call.name not in self._known or (
            self._allowed is not None and call.name not in self._allowed
        ):
            names = ", ".join(spec.name for spec in self._specs or ()) or "none"
            return ToolResult(
                status="rejected",
                content=f"tool '{call.name}' is not available to this agent; "
                f"the tools it may use are: {names}",
                error="tool_not_allowed",
            )
        key = f"{call.name}\x00{_canonical(call.arguments)}"
        count = self._seen.get(key, 0) + 1
        self._seen[key] = count
        if count >= self._storm_threshold:
            self._stopped = (
                f"Stopped calling tools: '{call.name}' was called {count} times in this turn "
                "with the same arguments."
            )
            self._metrics.guardrails_for("tool_storm", self._context.agent_id).inc()
            self._log.warning(
                "tool storm: %s called %d times with the same arguments in one turn; "
                "stopping the tool loop",
                call.name,
                count,
                extra={"tool": call.name, "event": "guardrail", "reason": "tool_storm"},
            )
            return ToolResult(
                status="rejected", content=self._stopped + _ANSWER_NOW, error="tool_storm"
            )
        if self._limiter is not None:
            decision = await self._limiter.hit(f"tools:{self._context.session_id}")
            if not decision.allowed:
                self._metrics.guardrails_for("tool_rate_limit", self._context.agent_id).inc()
                wait = retry_after_seconds(decision.retry_after)
                return ToolResult(
                    status="rejected",
                    content=f"rate limited, retry in {wait}s",
                    error="tool_rate_limit",
                )
        assert self._toolset is not None  # a known name implies a tool set
        try:
            result = await self._toolset.call(
                call.name, dict(call.arguments), context=self._context
            )
        except Exception as exc:
            # A broken tool source must not fail the turn: the model reads the failure
            # (redacted, by the sanitizer's tool set); the log line and span get its type
            # only, since an exception's text may quote the call's arguments.
            return ToolResult(
                status="failure", content=f"{call.name} failed: {exc}", error=type(exc).__name__
            )
        if result.stop_reason is not None:
            # The tool source's own guardrail (the session's call budget) ends the loop.
            self._stopped = result.content
            self._metrics.guardrails_for(result.stop_reason, self._context.agent_id).inc()
            self._log.warning(
                "tool loop stopped (%s): %s",
                result.stop_reason,
                result.content,
                extra={"tool": call.name, "event": "guardrail", "reason": result.stop_reason},
            )
            return ToolResult(
                status=result.status,
                content=result.content + _ANSWER_NOW,
                error=result.error or result.stop_reason,
            )
        return result


def _canonical(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
