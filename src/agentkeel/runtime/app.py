"""The agent server's HTTP API (v1) as a Starlette app: ``create_app(settings)``.

Routes are plain Starlette endpoints over ``AgentService``; request bodies are
pydantic models. Bodies over 1 MiB are refused before parsing (413), malformed
JSON is a 400 ``invalid_json``, a well-formed body with wrong fields a 422
``invalid_request`` that names them. Every error renders as
``{"error": {"code", "message"}}``.

A turn runs in its own task: a client that disconnects, mid-stream or while
waiting for JSON, does not stop it, and it is stored as usual.

The session lifecycle's admin routes (``/admin/sessions/live``, ``…/prune``,
``…/forget``) live in ``session_admin.py``; the sweeper runs in the lifespan.

Every ``/v1`` route first learns its caller (``caller.py``: the router's
assertion, the replica's own front door, or anonymous with auth off), checks the
route's scope (``chat``; ``sessions:read`` for GET) and then acts only on
sessions the caller owns: any other session is answered as an unknown one. A
turn's task starts inside its ``CallContext`` (the session's user and
organization, for the model key chain).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentkeel.config.feature_flags import build_feature_flags
from agentkeel.config.live import LiveLayer, LiveSettings
from agentkeel.config.overrides import OverridesLayer, watch_overrides
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import (
    ConfigError,
    KeelError,
    Unavailable,
)
from agentkeel.identity.caller_limits import CallerLimits
from agentkeel.identity.forwarded import FrontDoorVerifier, build_front_door_verifier
from agentkeel.identity.frontdoor import FrontDoor
from agentkeel.identity.principal import CALLER_HEADER, Scope
from agentkeel.models.factory import build_gateway
from agentkeel.resilience.budget import BudgetLimits, TokenBudget
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.resilience.ledger import BudgetLedger, InMemoryLedger
from agentkeel.resilience.ratelimit import RateLimiter
from agentkeel.runtime.caller import Caller, RequestCallers
from agentkeel.runtime.config_admin import config_admin_routes
from agentkeel.runtime.draining import DrainState
from agentkeel.runtime.flag_admin import flag_admin_routes
from agentkeel.runtime.guards import EventSink, ModelBackend
from agentkeel.runtime.lifecycle import SessionLifecycle, replica_id_for
from agentkeel.runtime.loader import load_agent
from agentkeel.runtime.sanitize import OutputSanitizer
from agentkeel.runtime.secrets_report import replica_secrets_routes
from agentkeel.runtime.service import FEEDBACK_MAX, FEEDBACK_MIN, AgentService, TurnOutcome
from agentkeel.runtime.session_admin import session_admin_routes
from agentkeel.runtime.store import SessionRecord, SessionStore, TurnRecord
from agentkeel.runtime.stores import PostgresSessionStore, SqliteSessionStore, open_store
from agentkeel.runtime.stores.redis_ledger import RedisLedger
from agentkeel.runtime.tool_agent import ToolAgent
from agentkeel.runtime.types import Agent
from agentkeel.runtime.usage import UsageMeter, UsageRecorder
from agentkeel.runtime.usage_admin import usage_admin_routes
from agentkeel.secrets.call_context import CallContext, call_context
from agentkeel.secrets.factory import process_secret_source
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.redact import SecretRedactor
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.secrets.source import SecretSource
from agentkeel.telemetry.audit import audited, credential_id
from agentkeel.telemetry.metrics import (
    AgentMetrics,
    FlagMetrics,
    HttpMetrics,
    ModelMetrics,
    OverridesMetrics,
    QuotaMetrics,
    ToolMetrics,
)
from agentkeel.telemetry.middleware import CorrelationMiddleware, HttpMetricsMiddleware
from agentkeel.telemetry.trace_context import TraceContextMiddleware, TrustCaller
from agentkeel.telemetry.tracing import Redact, Tracing, process_tracing
from agentkeel.tools.builtins import BUILTIN_NAMES, builtin_toolset
from agentkeel.tools.client import GuardedToolsClient, build_tools_client
from agentkeel.tools.types import ToolSet
from agentkeel.web.auth import AdminToken, bearer_token, request_source
from agentkeel.web.bodies import parse_body as _parse
from agentkeel.web.errors import (
    endpoint as _endpoint,
)
from agentkeel.web.errors import (
    error_body,
    error_response,
    http_exception_handler,
    internal_error_response,
    keel_error_handler,
    retry_after_header,
)

if TYPE_CHECKING:
    from agentkeel.memory.client import MemoryClient

logger = logging.getLogger("agentkeel.runtime")

MAX_BODY_BYTES = 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_COMMENT_CHARS = 4000

_T = TypeVar("_T")
_Model = TypeVar("_Model", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]


# -- request bodies ---------------------------------------------------------------


class CreateSessionBody(BaseModel):
    """``POST /v1/sessions``."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Whose session; may be left out with a credential bound to one user.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _metadata_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_METADATA_BYTES:
            raise ValueError(
                f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed"
            )
        return value


class MessageBody(BaseModel):
    """``POST /v1/sessions/{id}/messages``."""

    model_config = ConfigDict(extra="forbid")

    content: str


class RewindBody(BaseModel):
    """``POST /v1/sessions/{id}/rewind``: the turn to continue from (0 = the start)."""

    model_config = ConfigDict(extra="forbid")

    turn: int = Field(ge=0, strict=True)


class FeedbackBody(BaseModel):
    """``POST /v1/sessions/{id}/feedback``: a score from 0 (bad) to 5 (excellent)."""

    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=FEEDBACK_MIN, le=FEEDBACK_MAX)
    turn: int | None = Field(default=None, ge=1, strict=True)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)


# -- the app ----------------------------------------------------------------------


class _Runtime:
    """What the routes share: built in ``create_app``, opened in the lifespan."""

    def __init__(
        self, *, settings: KeelSettings, drain: DrainState, callers: RequestCallers
    ) -> None:
        self.settings = settings
        self.drain = drain
        self.callers = callers
        self.service: AgentService | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    def require_service(self) -> AgentService:
        if self.service is None:
            raise Unavailable(
                "The agent server is still starting (its store and model gateway are not "
                "open yet). Retry in a moment.",
                retry_after=1,
                code="starting",
            )
        return self.service

    def spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        """Run ``coro`` in a task that outlives the request that started it."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(_retrieve)
        return task


def _retrieve(task: asyncio.Task[Any]) -> None:
    # The service already logged and counted a failed turn; a client that went away
    # never reads the result, and asyncio would warn that nobody did.
    if not task.cancelled():
        task.exception()


def create_app(
    settings: KeelSettings,
    *,
    agent: Agent | None = None,
    gateway: ModelBackend | None = None,
    store: SessionStore | None = None,
    toolset: ToolSet | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    rate_limiter: RateLimiter | None = None,
    memory: Any | None = None,
    run_sweeper: bool = True,
    known: KnownSecrets | None = None,
    live_layers: Sequence[LiveLayer] | None = None,
    source_of: Callable[[str], str] | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """Build the agent server for ``settings``.

    Anything not passed in is built from the settings, opened in the lifespan
    and closed with it: the store (``settings.store_url()``), the model gateway
    (``build_gateway``), the tools (``builtin_toolset(settings.agent.tools)``),
    the tool rate limiter (Redis when ``redis_url`` is set) and the agent
    (``agent.entrypoint`` or a ``ToolAgent``) and, when ``memory_client.url`` is
    set, the ``MemoryClient`` agents get as ``turn.memory`` (its outbox is
    ``<data_dir>/memory-outbox/agent-<id>-<replica>.db``). A store or memory
    handle passed in must be open already; the caller closes what it passed.
    ``run_sweeper=False`` leaves out the background task that ends idle sessions
    and purges old ones (tests drive ``app.state.service.lifecycle`` instead).
    ``known`` collects every secret value the app reads (one is made when not
    given); replies, tool results and, through ``app.state.redactor``, the
    process's logs are scanned for them (``guardrails.redact_secrets``).
    ``live_layers`` replaces the live layers built from the settings (feature flags,
    then per-organization and per-user overrides) that each turn's settings go through.
    ``source_of`` (``LoadedSettings.source_of``) names the layer of each base value in
    ``GET /admin/config``. ``tracing`` records the turns' spans (default: the process's,
    ``telemetry/tracing.py``; content on them goes through the app's redactor). A
    request's ``traceparent`` makes its turn part of the caller's trace when the caller
    is trusted (``_trace_trust``); a client's ``baggage`` is never adopted.

    ``app.state`` exposes ``registry``, ``drain``, ``turn_tasks`` (turns running),
    ``known_secrets``, ``redactor`` (``None`` when redaction is off), ``flags`` (the
    ``FeatureFlags``; ``None`` with ``flags.source: none`` or ``live_layers``) and,
    once started, ``service``.

    >>> app = create_app(load_settings().settings)
    """
    clock = clock or SystemClock()
    registry = registry if registry is not None else CollectorRegistry()
    tracing = tracing or process_tracing(capture_content=settings.tracing.capture_content)
    version = settings.agent.version
    agent_metrics = AgentMetrics(registry, version=version)
    quota_metrics = QuotaMetrics(registry, version=version)
    redis_ledger = _redis_ledger(settings)
    http_metrics = HttpMetrics(registry)
    drain = DrainState(metrics=agent_metrics, clock=clock)
    agent_metrics.draining.set(0)
    known = known if known is not None else KnownSecrets()
    secrets = SecretResolver(secrets_dir=settings.secrets_dir, known=known)
    redactor = _redactor(settings, known, agent_metrics)
    if redactor is not None:
        # Content on spans goes through the same redactor as replies and log lines.
        tracing = tracing.redacting(_span_redaction(redactor))
    front_door, caller_limits = _build_front_door(settings, secrets)
    verifier = build_front_door_verifier(settings, secrets=secrets)
    callers = RequestCallers(
        auth_enabled=settings.auth.enabled,
        front_door=front_door,
        verifier=verifier,
        limits=caller_limits,
        allow_request_keys=settings.secrets.key_chain.allow_request_keys,
    )
    runtime = _Runtime(settings=settings, drain=drain, callers=callers)
    guardrails = settings.guardrails
    # Build what can fail on bad configuration now, so a typo in agent.tools or
    # agent.entrypoint stops the process before it listens.
    the_agent: Agent
    if agent is not None:
        the_agent = agent
    elif settings.agent.entrypoint:
        the_agent = load_agent(settings.agent.entrypoint)
    else:
        the_agent = ToolAgent.from_settings(settings)
    local_tools: ToolSet | None = toolset
    tool_metrics: ToolMetrics | None = None
    if toolset is None:
        # With MCP servers configured, agent.tools is the allowlist across every
        # source; only the built-in names among it are served in-process.
        names = (
            [name for name in settings.agent.tools if name in BUILTIN_NAMES]
            if settings.tools.servers
            else settings.agent.tools
        )
        local_tools = builtin_toolset(names, clock=clock)
        tool_metrics = ToolMetrics(registry)
    model_metrics = ModelMetrics(registry, version=version) if gateway is None else None
    secret_source = process_secret_source(settings, secrets.known)
    admin = _admin_token(settings, secrets, secret_source)
    owned_memory = (
        _build_memory(settings, registry=registry, clock=clock, tracing=tracing)
        if memory is None
        else None
    )
    # Lowest first: feature flags, then per-organization and per-user overrides.
    flags = None
    overrides: OverridesLayer | None = None
    layers: list[LiveLayer] = list(live_layers) if live_layers is not None else []
    if live_layers is None:
        actor = f"replica:{replica_id_for(settings.server)}"
        flags = build_feature_flags(settings, metrics=FlagMetrics(registry), actor=actor)
        if flags is not None:
            layers.append(flags)
        overrides = watch_overrides(
            settings, clock=clock, metrics=OverridesMetrics(registry), actor=actor
        )
        layers.append(overrides)
    live = LiveSettings(settings, layers=layers, source_of=source_of)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if overrides is not None:
                # Here, not when built: the process's audit file is installed by now.
                await overrides.start()
                stack.push_async_callback(overrides.aclose)
            if flags is not None:
                await flags.start()
                stack.push_async_callback(flags.aclose)
            if front_door is not None:
                stack.push_async_callback(front_door.aclose)
            if caller_limits is not None:
                stack.push_async_callback(caller_limits.aclose)
            the_memory = memory
            if owned_memory is not None:
                await owned_memory.open()
                # Closed last (the stack unwinds in reverse), after the turns finished:
                # a short last try, then what is left waits in the outbox for the next start.
                stack.push_async_callback(owned_memory.aclose, flush_timeout_s=2.0)
                the_memory = owned_memory
            the_store = store
            if the_store is None:
                backend = open_store(settings.store_url(), pool_size=settings.store.pool_size)
                await backend.open()
                stack.push_async_callback(backend.aclose)
                the_store = backend
            the_gateway = gateway
            if the_gateway is None:
                assert model_metrics is not None
                built = build_gateway(
                    settings,
                    metrics=model_metrics,
                    clock=clock,
                    secrets=secrets,
                    source=secret_source,
                    tracing=tracing,
                )
                stack.push_async_callback(built.aclose)
                the_gateway = built
            limiter = rate_limiter
            if limiter is None and guardrails.tool_calls_per_minute > 0:
                limiter = RateLimiter(
                    per_minute=guardrails.tool_calls_per_minute,
                    storage_uri=settings.redis_url or "memory://",
                )
                stack.push_async_callback(limiter.aclose)
            tools = local_tools
            if tool_metrics is not None:
                client = build_tools_client(
                    settings.tools,
                    local=local_tools,
                    metrics=tool_metrics,
                    redis_url=settings.redis_url,
                    clock=clock,
                    identity=settings.identity,
                    secrets=secrets,
                )
                stack.push_async_callback(client.aclose)
                await _check_tools(client, settings)
                tools = client
            # Always built: a flag or an override may set a limit the settings leave at 0.
            # A call whose limits are all 0 costs nothing here (GuardedModel skips it).
            ledger: BudgetLedger
            if redis_ledger is not None:
                await redis_ledger.open()
                stack.push_async_callback(redis_ledger.aclose)
                ledger = redis_ledger
            else:
                ledger = _ledger_for(the_store)
            _log_ledger(settings, ledger)
            budget = TokenBudget(
                ledger=ledger,
                clock=clock,
                limits=BudgetLimits.from_settings(
                    settings.quotas, session=settings.guardrails.session_token_budget
                ),
                observer=quota_metrics,
            )
            usage = UsageMeter(
                recorder=the_store if isinstance(the_store, UsageRecorder) else None,
                metrics=quota_metrics,
                clock=clock,
                agent_id=settings.agent.id,
                provider_models={m.name: m.model for m in settings.models},
                pricing=settings.pricing,
            )
            replica = replica_id_for(settings.server)
            lifecycle = SessionLifecycle(
                store=the_store,
                settings=settings.sessions,
                metrics=agent_metrics,
                clock=clock,
                replica=replica,
                version=settings.agent.version,
                memory=the_memory,
                ledger=redis_ledger,
            )
            service = AgentService(
                agent=the_agent,
                agent_id=settings.agent.id,
                version=settings.agent.version,
                store=the_store,
                gateway=the_gateway,
                guardrails=guardrails,
                metrics=agent_metrics,
                clock=clock,
                toolset=tools,
                allowed_tools=settings.agent.tools,
                budget=budget,
                rate_limiter=limiter,
                drain=drain,
                memory=the_memory,
                replica=replica,
                lifecycle=lifecycle,
                sanitizer=OutputSanitizer(redactor) if redactor is not None else None,
                live=live,
                usage=usage,
                tracing=tracing,
            )
            await lifecycle.refresh_gauges()
            if run_sweeper and lifecycle.tick_s > 0:
                sweeper = asyncio.get_running_loop().create_task(lifecycle.run())
                stack.push_async_callback(_cancel, sweeper)
            runtime.service = service
            app.state.service = service
            logger.info(
                "agent server ready: agent %s version %s",
                settings.agent.id,
                settings.agent.version,
                extra={"agent_id": settings.agent.id, "version": settings.agent.version},
            )
            try:
                yield
            finally:
                runtime.service = None
                await _finish_tasks(runtime, limit_s=settings.server.drain_timeout_s)

    def check_admin(request: Request) -> None:
        admin.check(request.headers.get("authorization"))

    # Starlette tries routes in order, and turns are most of the traffic.
    routes = [
        Route(
            "/v1/sessions/{session_id}/messages",
            _endpoint(_post_message(runtime)),
            methods=["POST"],
        ),
        Route("/health", _endpoint(_health(runtime)), methods=["GET"]),
        Route("/ready", _endpoint(_ready(runtime)), methods=["GET"]),
        Route("/metrics", _metrics(runtime, registry), methods=["GET"]),
        Route("/v1/sessions", _endpoint(_create_session(runtime)), methods=["POST"]),
        Route("/v1/sessions/{session_id}", _endpoint(_get_session(runtime)), methods=["GET"]),
        Route("/v1/sessions/{session_id}", _endpoint(_end_session(runtime)), methods=["DELETE"]),
        Route("/v1/sessions/{session_id}/rewind", _endpoint(_rewind(runtime)), methods=["POST"]),
        Route(
            "/v1/sessions/{session_id}/feedback",
            _endpoint(_feedback(runtime)),
            methods=["POST"],
        ),
        Route("/admin/drain", _endpoint(_admin_drain(runtime, admin)), methods=["POST"]),
        *session_admin_routes(runtime.require_service, check_admin=check_admin),
        *replica_secrets_routes(settings, source=secret_source, admin=admin, registry=registry),
        *flag_admin_routes(flags, check_admin=check_admin),
        *config_admin_routes(live, check_admin=check_admin, overrides=overrides),
        *usage_admin_routes(
            runtime.require_service, check_admin=check_admin, quotas=settings.quotas
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                TraceContextMiddleware, trust=_trace_trust(settings, verifier), baggage=False
            ),
            Middleware(CorrelationMiddleware),
            Middleware(HttpMetricsMiddleware, metrics=http_metrics),
        ],
        exception_handlers={HTTPException: http_exception_handler, KeelError: keel_error_handler},
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.drain = drain
    app.state.settings = settings
    app.state.service = None
    app.state.turn_tasks = runtime.tasks
    app.state.known_secrets = known
    app.state.redactor = redactor
    app.state.flags = flags
    return app


def _build_front_door(
    settings: KeelSettings, secrets: SecretResolver
) -> tuple[FrontDoor | None, CallerLimits | None]:
    """With ``auth.enabled``, the replica's own front door and the caller limits it
    applies (shared through Redis when ``redis_url`` is set); neither otherwise."""
    if not settings.auth.enabled:
        return None, None
    door = FrontDoor(settings.auth, secrets=secrets, data_dir=settings.data_dir)
    limits = CallerLimits(settings.auth.limits, storage_uri=settings.redis_url or "memory://")
    return door, limits


def _trace_trust(settings: KeelSettings, verifier: FrontDoorVerifier | None) -> TrustCaller | None:
    """Whose trace context the replica adopts: anyone's with ``tracing.trust_incoming``
    (``None``: no check); else only a request the router vouched for with a valid
    front-door assertion (the router already dropped its client's context unless it
    trusts it). A client that reaches the replica directly, with auth on or off, then
    starts a trace of its own: it cannot pick trace ids or force sampling."""
    if settings.tracing.trust_incoming:
        return None

    def vouched_for(headers: Headers) -> bool:
        assertion = headers.get(CALLER_HEADER)
        if assertion is None or verifier is None:
            return False
        try:
            verifier.verify(assertion)  # cached: the caller check verifies it again
        except KeelError:
            return False
        return True

    return vouched_for


def _span_redaction(redactor: SecretRedactor) -> Redact:
    # Not counted: a secret on a span is also in the reply, a tool result or the input.
    return lambda text: redactor.redact(text, where="span", record=False)


def _redactor(
    settings: KeelSettings, known: KnownSecrets, metrics: AgentMetrics
) -> SecretRedactor | None:
    guardrails = settings.guardrails
    if not guardrails.redact_secrets:
        return None
    return SecretRedactor(
        known=known,
        kinds=guardrails.redact_kinds,
        extra_patterns=guardrails.redact_patterns,
        on_redaction=lambda kind, where: metrics.output_redactions.labels(kind, where).inc(),
    )


def _build_memory(
    settings: KeelSettings, *, registry: CollectorRegistry, clock: Clock, tracing: Tracing
) -> MemoryClient | None:
    """The ``turn.memory`` handle when ``memory_client.url`` is set; built here so a
    missing token file stops the process before it listens."""
    url = settings.memory_client.url
    if not url:
        return None
    # Imported only when configured: the memory client brings the memory package
    # and its SDKs, a good part of a replica's start-up time.
    from agentkeel.memory.client import build_memory_client
    from agentkeel.memory.metrics import MemoryClientMetrics

    replica = settings.server.replica_id or f"port{settings.server.port}"
    return build_memory_client(
        settings.memory_client,
        url=url,
        name=f"agent-{settings.agent.id}-{replica}",
        data_dir=settings.data_dir,
        secrets_dir=settings.secrets_dir,
        metrics=MemoryClientMetrics(registry, version=settings.agent.version),
        clock=clock,
        tracing=tracing,
    )


async def _check_tools(client: GuardedToolsClient, settings: KeelSettings) -> None:
    """Discover the MCP servers' tools once at startup: a name clash stops the process
    (``ConfigError``); an unreachable server or an allowlisted tool nobody offers is
    logged, and the replica starts anyway (the server may come up later)."""
    if not settings.tools.servers:
        return
    unreachable = await client.tools.check()
    for name in unreachable:
        logger.warning(
            "MCP server %s is unreachable at startup; its tools are offered once it answers",
            name,
            extra={"event": "tool_discovery"},
        )
    if unreachable:
        return
    offered = {spec.name for spec in await client.list_tools()}
    missing = [name for name in settings.agent.tools if name not in offered]
    if missing:
        logger.warning(
            "agent.tools lists %s, which no tool source offers; check the names and tools.servers",
            ", ".join(repr(name) for name in missing),
            extra={"event": "config"},
        )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


CANCELLED_TURNS_WAIT_S = 5.0
"""How long shutdown waits for cancelled turns to unwind (their ``finally`` settles the
token budget) before the store and the ledger close under them."""


async def _finish_tasks(
    runtime: _Runtime, *, limit_s: float, cancel_wait_s: float = CANCELLED_TURNS_WAIT_S
) -> None:
    """Let turns still running (a streaming client went away) commit before the
    store closes; cancel them after ``limit_s`` seconds, then wait up to
    ``cancel_wait_s`` for them to unwind, so they settle their reservations while the
    ledger is still open."""
    pending = [task for task in runtime.tasks if not task.done()]
    if not pending:
        return
    logger.info("waiting for %d turn(s) to finish before shutting down", len(pending))
    _, still = await asyncio.wait(pending, timeout=limit_s)
    if not still:
        return
    for task in still:
        task.cancel()
    logger.warning("cancelled %d turn(s) still running after %.0fs", len(still), limit_s)
    _, stuck = await asyncio.wait(still, timeout=cancel_wait_s)
    if stuck:
        logger.error(
            "%d cancelled turn(s) did not unwind within %.0fs; their token reservations may "
            "stay held",
            len(stuck),
            cancel_wait_s,
        )


def _redis_ledger(settings: KeelSettings) -> RedisLedger | None:
    """The Redis ledger ``quotas.ledger`` names (``auto``: when ``redis_url`` is set), built
    now so that ``redis`` without a ``redis_url`` stops the process before it listens."""
    choice = settings.quotas.ledger
    if choice == "store" or (choice == "auto" and not settings.redis_url):
        return None
    if not settings.redis_url:
        raise ConfigError(
            "quotas.ledger is 'redis' but redis_url is not set; set redis_url "
            "(redis://host:port/db), or quotas.ledger: store to keep budgets in the session store."
        )
    return RedisLedger(url=settings.redis_url, prefix=settings.quotas.redis_prefix)


def _log_ledger(settings: KeelSettings, ledger: BudgetLedger) -> None:
    """Say at start where token budgets and quotas are counted: with ``quotas.ledger:
    auto`` that follows ``redis_url``, which an operator may have set for rate limits."""
    choice = settings.quotas.ledger
    if isinstance(ledger, RedisLedger):
        where = ledger.where
        why = f"quotas.ledger: {choice}" + (" with redis_url set" if choice == "auto" else "")
        detail = "; while Redis is down, model calls fail with 503 ledger_unavailable"
    elif isinstance(ledger, InMemoryLedger):
        where, why = "this replica's memory", "the session store keeps no budgets"
        detail = "; replicas do not share them"
    else:
        where = _store_name(ledger)
        why = f"quotas.ledger: {choice}" + (", no redis_url" if choice == "auto" else "")
        detail = ""
    logger.info(
        "token budgets and quotas are counted in %s (%s)%s",
        where,
        why,
        detail,
        extra={"event": "config"},
    )


def _store_name(store: object) -> str:
    if isinstance(store, SqliteSessionStore):
        return f"the SQLite session store {store.path}"
    if isinstance(store, PostgresSessionStore):
        return f"the PostgreSQL session store {store.where}"
    return f"the session store {type(store).__name__}"


def _ledger_for(store: SessionStore) -> BudgetLedger:
    """The store itself when it keeps token budgets (every built-in store does), so
    replicas share them; otherwise this process's memory."""
    if isinstance(store, BudgetLedger):
        return store
    logger.warning(
        "the session store %s keeps no token budgets; budgets are per replica",
        type(store).__name__,
    )
    return InMemoryLedger()


# -- probes and metrics -----------------------------------------------------------


def _health(runtime: _Runtime) -> Endpoint:
    settings = runtime.settings

    async def health(request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "agent_id": settings.agent.id, "version": settings.agent.version}
        )

    return health


def _ready(runtime: _Runtime) -> Endpoint:
    async def ready(request: Request) -> Response:
        if runtime.drain.draining:
            return JSONResponse(
                error_body(
                    "draining",
                    f"This replica is draining ({runtime.drain.reason}); "
                    f"{runtime.drain.in_flight} turn(s) still in flight.",
                ),
                status_code=503,
                headers=retry_after_header(runtime.drain.retry_after_s),
            )
        runtime.require_service()
        return JSONResponse({"status": "ready", "version": runtime.settings.agent.version})

    return ready


def _metrics(runtime: _Runtime, registry: CollectorRegistry) -> Endpoint:
    async def metrics(request: Request) -> Response:
        service = runtime.service
        if service is not None:
            try:
                await service.lifecycle.refresh_if_stale()
            except KeelError as exc:
                logger.warning("live-session gauges not refreshed: %s", exc.message)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


# -- sessions ---------------------------------------------------------------------


def _create_session(runtime: _Runtime) -> Endpoint:
    async def create_session(request: Request) -> Response:
        principal = (await _caller(runtime, request, "chat")).principal
        service = runtime.require_service()
        body = await _parse(request, CreateSessionBody)
        user_id = principal.acting_user(body.user_id)
        record = await service.create_session(
            user_id, body.metadata, organization=principal.organization
        )
        return JSONResponse(
            {
                "session_id": record.session_id,
                "user_id": record.user_id,
                "organization": record.organization,
                "agent_id": record.agent_id,
                "version": record.version,
                "created_at": _iso(record.created_at),
            },
            status_code=201,
        )

    return create_session


def _get_session(runtime: _Runtime) -> Endpoint:
    async def get_session(request: Request) -> Response:
        principal = (await _caller(runtime, request, "sessions:read")).principal
        service = runtime.require_service()
        session, turns = await service.get_session(request.path_params["session_id"], principal)
        return JSONResponse(_session_json(session, turns))

    return get_session


def _end_session(runtime: _Runtime) -> Endpoint:
    async def end_session(request: Request) -> Response:
        principal = (await _caller(runtime, request, "chat")).principal
        service = runtime.require_service()
        session = await service.end_session(request.path_params["session_id"], principal)
        return JSONResponse(
            {
                "session_id": session.session_id,
                "ended_at": _iso(session.ended_at) if session.ended_at else None,
                "end_reason": session.end_reason,
                "turn_count": session.turn_count,
            }
        )

    return end_session


def _rewind(runtime: _Runtime) -> Endpoint:
    async def rewind(request: Request) -> Response:
        principal = (await _caller(runtime, request, "chat")).principal
        service = runtime.require_service()
        body = await _parse(request, RewindBody)
        session = await service.rewind(request.path_params["session_id"], body.turn, principal)
        return JSONResponse(
            {
                "session_id": session.session_id,
                "head": session.head,
                "turn_count": session.turn_count,
            }
        )

    return rewind


def _feedback(runtime: _Runtime) -> Endpoint:
    async def feedback(request: Request) -> Response:
        principal = (await _caller(runtime, request, "chat")).principal
        service = runtime.require_service()
        body = await _parse(request, FeedbackBody)
        record = await service.feedback(
            request.path_params["session_id"],
            body.score,
            turn=body.turn,
            comment=body.comment,
            principal=principal,
        )
        return JSONResponse(
            {
                "session_id": record.session_id,
                "score": record.score,
                "turn": record.turn,
                "comment": record.comment,
                "created_at": _iso(record.created_at),
            },
            status_code=201,
        )

    return feedback


# -- turns ------------------------------------------------------------------------


def _post_message(runtime: _Runtime) -> Endpoint:
    async def post_message(request: Request) -> Response:
        caller = await _caller(runtime, request, "chat")
        service = runtime.require_service()
        body = await _parse(request, MessageBody)
        session_id = request.path_params["session_id"]
        # Before the turn's task and its session lock: someone else's session is a 404
        # here, exactly as an unknown one, never a 409 for a turn running on it.
        session = await service.owned_session(session_id, caller.principal)
        if "text/event-stream" in request.headers.get("accept", ""):
            return await _stream_turn(runtime, service, caller, session, body.content)
        task = await _start_turn(runtime, service, caller, session, body.content)
        # Shielded: a client that goes away must not cancel a turn mid-commit.
        outcome = await asyncio.shield(task)
        return JSONResponse(outcome.to_dict())

    return post_message


async def _caller(runtime: _Runtime, request: Request, scope: Scope) -> Caller:
    """The request's verified caller, holding ``scope`` (401/403/429 otherwise)."""
    caller = await runtime.callers.identify(request.headers)
    caller.principal.require(scope)
    return caller


async def _start_turn(
    runtime: _Runtime,
    service: AgentService,
    caller: Caller,
    session: SessionRecord,
    content: str,
    sink: EventSink | None = None,
) -> asyncio.Task[TurnOutcome]:
    """Take the caller's turn slot and start the turn's task inside its call context
    (a task copies the context variables when it is created); the slot is released
    when the task ends, however it ends."""
    slot = await runtime.callers.start_turn(caller)
    context = CallContext(
        user_id=session.user_id,
        organization=session.organization,
        session_started_at=session.created_at,
        request_keys=caller.request_keys,
    )
    try:
        with call_context(context):
            task = runtime.spawn(service.run_turn(session.session_id, content, sink=sink))
    except BaseException:
        slot.release()
        raise
    task.add_done_callback(lambda _: slot.release())
    return task


_DONE: Any = object()


async def _stream_turn(
    runtime: _Runtime,
    service: AgentService,
    caller: Caller,
    session: SessionRecord,
    content: str,
) -> Response:
    """Server-sent events: ``token``, ``tool_call``, ``tool_result``, then ``reply``
    or ``error``. A turn refused before it starts (404, 409, 429, 503) is an
    ordinary error response with its status, not a stream."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def sink(event: str, data: Mapping[str, Any]) -> None:
        queue.put_nowait((event, data))

    task = await _start_turn(runtime, service, caller, session, content, sink)
    task.add_done_callback(lambda _: queue.put_nowait(_DONE))
    first = await queue.get()
    if first is _DONE and not task.cancelled():
        exc = task.exception()
        if isinstance(exc, KeelError):
            return error_response(exc)
        if exc is not None:
            return internal_error_response(exc)

    async def events() -> AsyncIterator[str]:
        item = first
        while item is not _DONE:
            event, data = item
            yield _sse(event, data)
            item = await queue.get()
        yield _final_event(task)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _final_event(task: asyncio.Task[TurnOutcome]) -> str:
    if task.cancelled():
        return _sse(
            "error",
            error_body("cancelled", "The turn was cancelled because the server is stopping."),
        )
    exc = task.exception()
    if exc is None:
        return _sse("reply", task.result().to_dict())
    if isinstance(exc, KeelError):
        return _sse("error", exc.to_dict())
    response = internal_error_response(exc)
    return _sse("error", json.loads(bytes(response.body)))


def _sse(event: str, data: Mapping[str, Any]) -> str:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {payload}\n\n"


# -- admin ------------------------------------------------------------------------


def _admin_token(
    settings: KeelSettings, secrets: SecretResolver, source: SecretSource | None
) -> AdminToken:
    server = settings.server
    return AdminToken(
        resolver=secrets,
        name=server.admin_token_secret,
        file=server.admin_token_file,
        setting="server.admin_token_file",
        service="agent server",
        source=source,
    )


def _admin_drain(runtime: _Runtime, admin: AdminToken) -> Endpoint:
    async def admin_drain(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        admin.check(authorization)
        with audited(
            "agent.drain",
            actor=credential_id("server.admin_token", bearer_token(authorization) or ""),
            source=request_source(request),
            version=runtime.settings.agent.version,
        ) as more:
            started = runtime.drain.start(reason="admin request")
            more["already_draining"] = not started
        return JSONResponse(
            {
                "draining": True,
                "already_draining": not started,
                "in_flight": runtime.drain.in_flight,
            },
            status_code=202,
        )

    return admin_drain


# -- helpers ----------------------------------------------------------------------


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()


def _session_json(session: SessionRecord, turns: list[TurnRecord]) -> dict[str, Any]:
    parents = {turn.number: turn.parent for turn in turns}
    in_context: set[int] = set()
    cursor = session.head
    while cursor and cursor not in in_context:
        in_context.add(cursor)
        cursor = parents.get(cursor, 0)
    return {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "organization": session.organization,
        "agent_id": session.agent_id,
        "version": session.version,
        "created_at": _iso(session.created_at),
        "ended_at": _iso(session.ended_at) if session.ended_at is not None else None,
        "end_reason": session.end_reason,
        "last_active_at": _iso(session.active_at),
        "metadata": dict(session.metadata),
        "head": session.head,
        "turn_count": session.turn_count,
        "turns": [
            {
                "turn": turn.number,
                "parent": turn.parent,
                "in_context": turn.number in in_context,
                "content": turn.content,
                "reply": turn.reply,
                "usage": {
                    "input_tokens": turn.usage.input_tokens,
                    "output_tokens": turn.usage.output_tokens,
                    "total_tokens": turn.usage.total_tokens,
                },
                "tool_calls": [dict(call) for call in turn.tool_calls],
                "version": turn.version,
                "started_at": _iso(turn.started_at),
                "completed_at": _iso(turn.completed_at),
                "correlation_id": turn.correlation_id,
            }
            for turn in turns
        ],
    }
