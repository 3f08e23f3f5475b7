"""The guarded tools client: every agent tool call to an MCP server (or a local tool) passes it.

``GuardedToolsClient`` is a ``ToolSet`` over a ``CompositeToolSet`` (local
built-ins first, then the MCP servers of ``tools.servers``). Per call, in order:

1. the session's call budget (``tools.session_call_budget``): once spent, the
   call is refused and the result asks the turn to end its tool loop;
2. a rate limit per session and tool (``tools.calls_per_minute``, Redis when
   ``redis_url`` is set): a refusal the model reads ("429 rate limited");
3. a circuit breaker per source and tool: while open, calls fail fast with a
   message that says the tool is unavailable;
4. a timeout (``tools.call_timeout_s`` or the server's ``timeout_s``);
5. a cap on the result's size (``tools.max_result_chars``), with a marker.

The client never raises for a tool problem (a failed result says why in ``error``: a
reason the client wrote, or an exception's type and source, never the exception's
text, which may quote the call's arguments);
the turn's guarded handle adds the allowlist, the storm detector,
``agent_tool_calls_total{tool,status}``, the call's span and its one log line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from agentkeel.config.identity import IdentitySettings
from agentkeel.config.tools import McpServerSettings, ToolBreakerSettings, ToolsSettings
from agentkeel.errors import KeelError
from agentkeel.identity.assertion import CallerSigner
from agentkeel.identity.factory import build_caller_signer
from agentkeel.models.types import ToolSpec
from agentkeel.resilience.breaker import CircuitBreaker
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.resilience.ratelimit import RateLimiter
from agentkeel.resilience.retry import retry_after_seconds
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.metrics import BREAKER_STATE_VALUES, ToolMetrics
from agentkeel.tools.budget import SessionCallBudget
from agentkeel.tools.composite import CompositeToolSet
from agentkeel.tools.types import ToolContext, ToolResult, ToolSet

if TYPE_CHECKING:
    from agentkeel.tools.mcp_source import HttpClientFactory

logger = logging.getLogger("agentkeel.tools.client")

SESSION_BUDGET_REASON = "tool_session_budget"


class GuardedToolsClient:
    """Timeouts, breakers, rate limits, a session budget and a result cap over tool sources.

    >>> client = GuardedToolsClient(
    ...     tools=CompositeToolSet([("local", builtin_toolset(["calculator"]))]),
    ...     metrics=ToolMetrics(registry), call_timeout_s=10, max_result_chars=16000)
    >>> result = await client.call("calculator", {"expression": "2+2"}, context=context)
    """

    def __init__(
        self,
        *,
        tools: CompositeToolSet,
        metrics: ToolMetrics,
        call_timeout_s: float,
        max_result_chars: int,
        breaker: ToolBreakerSettings | None = None,
        timeouts: Mapping[str, float] | None = None,
        rate_limiter: RateLimiter | None = None,
        budget: SessionCallBudget | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.tools = tools
        self._metrics = metrics
        self._call_timeout_s = call_timeout_s
        self._timeouts = dict(timeouts or {})
        self._max_chars = max_result_chars
        self._breaker_settings = breaker or ToolBreakerSettings()
        self._limiter = rate_limiter
        self._budget = budget
        self._clock = clock or SystemClock()
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    async def list_tools(self) -> Sequence[ToolSpec]:
        return await self.tools.list_tools()

    def breaker(self, source: str, tool: str) -> CircuitBreaker:
        """The breaker of ``tool`` on ``source`` (created closed on first use)."""
        key = (source, tool)
        found = self._breakers.get(key)
        if found is None:

            def on_change(old: str, new: str) -> None:
                self._metrics.breaker_state.labels(source, tool).set(BREAKER_STATE_VALUES[new])
                self._metrics.breaker_transitions.labels(source, new).inc()
                log = logger.warning if new == "open" else logger.info
                log(
                    "tool breaker %s/%s: %s -> %s%s",
                    source,
                    tool,
                    old,
                    new,
                    f" ({found.last_open_reason})" if new == "open" and found else "",
                    extra={"tool": tool, "event": "breaker", "status": new},
                )

            found = CircuitBreaker.from_settings(
                f"{source}/{tool}", self._breaker_settings, self._clock, on_change
            )
            self._metrics.breaker_state.labels(source, tool).set(0)
            self._breakers[key] = found
        return found

    async def call(
        self, name: str, arguments: dict[str, Any], *, context: ToolContext
    ) -> ToolResult:
        """One guarded call; never raises for a tool problem."""
        source = self.tools.source_of(name)
        if source is None:
            await self.tools.list_tools()
            source = self.tools.source_of(name)
        if source is None:
            return await self.tools.call(name, arguments, context=context)
        refusal = await self._admit(name, context)
        if refusal is not None:
            self._metrics.server_calls.labels(source, refusal.status).inc()
            return refusal
        breaker = self.breaker(source, name)
        if not breaker.allow():
            wait = retry_after_seconds(breaker.retry_after())
            self._metrics.refusals.labels(name, "breaker_open").inc()
            self._metrics.server_calls.labels(source, "failure").inc()
            return ToolResult(
                status="failure",
                content=f"Tool '{name}' is unavailable right now: its server '{source}' failed "
                f"recently ({breaker.last_open_reason or 'breaker open'}); the next try is in "
                f"{wait}s. Answer without it, and tell the user the tool is unavailable.",
                error=f"breaker of {source}/{name} open",
            )
        result = await self._timed_call(source, name, arguments, context, breaker)
        self._metrics.server_calls.labels(source, result.status).inc()
        return self._capped(name, result)

    async def _admit(self, name: str, context: ToolContext) -> ToolResult | None:
        if self._budget is not None:
            decision = await self._budget.spend(context.session_id)
            if not decision.allowed:
                self._metrics.refusals.labels(name, "session_budget").inc()
                return ToolResult(
                    status="rejected",
                    content=f"Stopped calling tools: this session has used its budget of "
                    f"{decision.limit} tool calls (tools.session_call_budget).",
                    stop_reason=SESSION_BUDGET_REASON,
                )
        if self._limiter is not None:
            decision_rl = await self._limiter.hit(f"tool:{context.session_id}:{name}")
            if not decision_rl.allowed:
                self._metrics.refusals.labels(name, "rate_limited").inc()
                wait = retry_after_seconds(decision_rl.retry_after)
                return ToolResult(
                    status="rejected",
                    content=f"429 rate limited: '{name}' may be called at most "
                    f"{self._limiter.per_minute} times a minute in this session; retry in "
                    f"{wait}s or answer without it.",
                )
        return None

    async def _timed_call(
        self,
        source: str,
        name: str,
        arguments: dict[str, Any],
        context: ToolContext,
        breaker: CircuitBreaker,
    ) -> ToolResult:
        # No log line here: the turn's guarded handle logs each call once, with ``error``.
        timeout = self._timeouts.get(source, self._call_timeout_s)
        start = self._clock.monotonic()
        try:
            async with asyncio.timeout(timeout):
                result = await self.tools.call(name, arguments, context=context)
        except TimeoutError:
            breaker.record_failure()
            return ToolResult(
                status="timeout",
                content=f"Tool '{name}' did not answer within {timeout:g}s. Try again later or "
                "answer without it.",
                error=f"no answer from {source} within {timeout:g}s",
            )
        except asyncio.CancelledError:
            breaker.release()
            raise
        except KeelError as exc:
            breaker.record_failure()
            return ToolResult(
                status="failure",
                content=f"Tool '{name}' is unavailable: its server '{source}' cannot be reached. "
                "Answer without it, and tell the user the tool is unavailable.",
                error=exc.message,
            )
        except Exception as exc:
            breaker.record_failure()
            # The model reads the exception's text (redacted by the turn's sanitizer); the
            # log line and span get its type and source only: the text may quote arguments.
            return ToolResult(
                status="failure",
                content=f"{name} failed: {exc}",
                error=f"{type(exc).__name__} from {source}",
            )
        elapsed = max(0.0, self._clock.monotonic() - start)
        if result.status == "timeout":
            breaker.record_failure()
        else:
            # A tool that reports an error answered: the server is healthy.
            breaker.record_success(elapsed)
        self._metrics.server_duration.labels(source, name).observe(elapsed)
        return result

    def _capped(self, name: str, result: ToolResult) -> ToolResult:
        size = len(result.content)
        if size <= self._max_chars:
            return result
        self._metrics.truncated.labels(name).inc()
        marker = f"\n[truncated: {size - self._max_chars} of {size} characters cut]"
        keep = max(0, self._max_chars - len(marker))
        return dataclasses.replace(result, content=result.content[:keep] + marker)

    async def aclose(self) -> None:
        """Close every MCP connection, the rate limiter and the budget storage."""
        for _, source in self.tools.sources:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()
        if self._limiter is not None:
            await self._limiter.aclose()
        if self._budget is not None:
            await self._budget.aclose()


def build_tools_client(
    settings: ToolsSettings,
    *,
    local: ToolSet | None,
    metrics: ToolMetrics,
    redis_url: str | None = None,
    clock: Clock | None = None,
    http_client_factory: HttpClientFactory | None = None,
    identity: IdentitySettings | None = None,
    secrets: SecretResolver | None = None,
) -> GuardedToolsClient:
    """The client an agent replica uses: ``local`` tools first, then ``settings.servers``.

    A server's bearer token (``token_file`` / ``token_secret``) is read through
    ``secrets`` here; a server with an ``audience`` gets caller assertions signed
    with ``identity.signing_key_file``. A missing token or key raises here, so the
    replica stops before it listens. Nothing connects here; MCP servers are
    reached on first use. Close it with ``aclose()``.
    """
    clock = clock or SystemClock()
    secrets = secrets or SecretResolver()
    signer: CallerSigner | None = None
    if any(server.audience is not None for server in settings.servers):
        signer = build_caller_signer(
            identity or IdentitySettings(), secrets=secrets, time=clock.time
        )
    sources: list[tuple[str, ToolSet]] = []
    if local is not None:
        sources.append(("local", local))
    timeouts: dict[str, float] = {}
    if settings.servers:
        # The MCP SDK takes ~0.5 s to import; replicas without MCP servers never load it.
        from agentkeel.tools.mcp_source import McpToolSource
    for server in settings.servers:
        sources.append(
            (
                server.name,
                McpToolSource(
                    name=server.name,
                    url=server.url,
                    prefix=server.prefix,
                    connect_timeout_s=server.connect_timeout_s,
                    discovery_ttl_s=settings.discovery_ttl_s,
                    clock=clock,
                    metrics=metrics,
                    http_client_factory=http_client_factory,
                    bearer_token=_server_token(server, secrets),
                    signer=signer,
                    audience=server.audience,
                ),
            )
        )
        if server.timeout_s is not None:
            timeouts[server.name] = server.timeout_s
    storage = redis_url or "memory://"
    limiter = (
        RateLimiter(
            per_minute=settings.calls_per_minute, storage_uri=storage, key_prefix="agentkeel-tools"
        )
        if settings.calls_per_minute > 0
        else None
    )
    budget = (
        SessionCallBudget(limit=settings.session_call_budget, storage_uri=storage)
        if settings.session_call_budget > 0
        else None
    )
    return GuardedToolsClient(
        tools=CompositeToolSet(sources),
        metrics=metrics,
        call_timeout_s=settings.call_timeout_s,
        max_result_chars=settings.max_result_chars,
        breaker=settings.breaker,
        timeouts=timeouts,
        rate_limiter=limiter,
        budget=budget,
        clock=clock,
    )


def _server_token(server: McpServerSettings, secrets: SecretResolver) -> SecretStr | None:
    if server.token_file is None and server.token_secret is None:
        return None
    return secrets.resolve(server.token_secret, file=server.token_file)
