"""The tool server: MCP over streamable HTTP at ``/mcp``, as a Starlette app factory.

``create_app(settings)`` serves, with the official ``mcp`` SDK's low-level
server, the built-in tools (``calculator``, ``current_time``, ``http_get``,
and ``memory_search``/``memory_store`` when a memory client is given) and the
public functions of the modules in ``tools.server.tools_modules``, next to
``/health``, ``/ready`` and ``/metrics``.

Tools are described and called through ``LocalToolSet``, so a tool's name,
description and JSON schema come from its signature and docstring exactly as
for in-process tools.

Every ``/mcp`` request needs a bearer token from the tool server's tokens file
(``tools/access.py``): 401 without one, 403 for a tool the token is not
granted; ``tools/list`` shows a token only its tools. ``/health``, ``/ready``
and ``/metrics`` stay open, as on every service (probes and scrapers carry no
token, and none of them shows user data).

Whom a call acts for comes only from a signed caller assertion
(``agentkeel.identity``) in the request's ``_meta`` under
``io.agentkeel/caller``: a JWT the replica made for this one call, verified
here with ``identity.public_key_file`` for the audience
``tools.server.audience`` and the tool called. Tools that take a
``ToolContext`` receive the verified caller, which is how the memory tools
find the caller's namespace. A call without an assertion (any third-party MCP
client) is anonymous, which tools such as ``calculator`` do not mind and the
memory tools refuse; a call with anything else there (plain identity fields,
an expired, replayed, wrongly signed or other tool's assertion) is refused
with a JSON-RPC error saying why.

The MCP endpoint is stateless (every POST stands alone, JSON responses), so
any replica can answer any call and a restart loses nothing.

Every ``tools/call`` is one ``execute_tool {tool}`` SERVER span, a child of the
span that the request's W3C ``traceparent`` names (the replica's ``execute_tool``
span, or the MCP SDK's client span under it): one trace across the hop. The SDK's
own server span is left out, so a call is one server span. Each call also logs one
``tool_call`` line (tool, status, duration; WARNING when it did not succeed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import mcp_types as mcp
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import (
    StreamableHTTPASGIApp,
    StreamableHTTPSessionManager,
)
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.config.settings import KeelSettings
from agentkeel.config.tools import ToolServerSettings
from agentkeel.errors import CallerAssertionRefused, ConfigError, Unavailable
from agentkeel.identity.assertion import CallerVerifier
from agentkeel.identity.factory import build_caller_verifier
from agentkeel.memory.client import MemoryClient, build_memory_client
from agentkeel.memory.metrics import MemoryClientMetrics
from agentkeel.resilience.clock import Clock
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.redact import SecretRedactor
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.correlation import (
    HEADER,
    accept_correlation_id,
    get_correlation_id,
    set_correlation_id,
)
from agentkeel.telemetry.log_categories import Category
from agentkeel.telemetry.metrics import HttpMetrics, ToolServerMetrics
from agentkeel.telemetry.middleware import CorrelationMiddleware, HttpMetricsMiddleware
from agentkeel.telemetry.trace_context import TraceContextMiddleware, incoming_context
from agentkeel.telemetry.tracing import Tracing, process_tracing, start_tool_span, tracing_off
from agentkeel.tools.access import (
    JSONRPC_FORBIDDEN,
    JSONRPC_UNAUTHORIZED,
    McpAuth,
    ToolAccess,
    caller_of,
    tool_forbidden,
)
from agentkeel.tools.builtins import builtin_functions
from agentkeel.tools.discovery import load_tool_modules
from agentkeel.tools.http_get import make_http_get
from agentkeel.tools.local import LocalToolSet
from agentkeel.tools.memory_tools import MemoryBackend, make_memory_tools
from agentkeel.tools.types import ToolContext
from agentkeel.web.errors import error_response

logger = logging.getLogger("agentkeel.tools.server")

CALLER_META_KEY = "io.agentkeel/caller"
"""``_meta`` key of a ``tools/call`` that carries the signed caller assertion."""
ANONYMOUS = "anonymous"

SERVER_NAME = "agentkeel-tools"
SERVER_BUILTINS = ("calculator", "current_time", "http_get")


def build_server_toolset(
    settings: ToolServerSettings,
    *,
    memory_client: MemoryBackend | None = None,
    functions: Sequence[Callable[..., Any]] = (),
    clock: Clock | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> LocalToolSet:
    """Every tool the server offers: the configured built-ins, the memory tools when
    a memory client is given, the tool modules' functions and ``functions``.

    Raises ``ConfigError`` for an unknown built-in, a module that cannot be
    imported, or two tools with the same name.
    """
    unknown = [name for name in settings.builtins if name not in SERVER_BUILTINS]
    if unknown:
        raise ConfigError(
            f"tools.server.builtins lists unknown tool(s) {', '.join(map(repr, unknown))}; "
            f"the tool server's built-ins are {', '.join(SERVER_BUILTINS)} (the memory tools "
            "come with tools.server.memory_url)."
        )
    available: dict[str, Callable[..., Any]] = {
        **builtin_functions(clock=clock),
        "http_get": make_http_get(settings.http_get, transport=http_transport),
    }
    chosen = [available[name] for name in dict.fromkeys(settings.builtins)]
    if memory_client is not None:
        chosen.extend(make_memory_tools(memory_client))
    chosen.extend(load_tool_modules(settings.tools_modules))
    chosen.extend(functions)
    return LocalToolSet(chosen, timeout_s=settings.tool_timeout_s)


def caller_context(
    meta: Mapping[str, Any] | None, *, tool: str, verifier: CallerVerifier | None
) -> ToolContext:
    """The caller a call to ``tool`` acts for: the one its signed assertion names, or
    an anonymous caller when ``_meta`` carries none.

    Raises ``CallerAssertionRefused`` for anything else under ``io.agentkeel/caller``
    (plain identity fields included) and for an assertion that does not verify.
    """
    raw = (meta or {}).get(CALLER_META_KEY)
    if raw is None:
        return ToolContext(
            agent_id=ANONYMOUS,
            session_id=ANONYMOUS,
            user_id=ANONYMOUS,
            turn=0,
            correlation_id=get_correlation_id(),
        )
    if not isinstance(raw, str):
        raise CallerAssertionRefused(
            f"The caller in _meta['{CALLER_META_KEY}'] must be a signed caller assertion (a JWT "
            "made for this call by an agentkeel replica); plain identity fields are not "
            "accepted. Leave it out to call as an anonymous caller."
        )
    if verifier is None:
        raise CallerAssertionRefused(
            "This tool server cannot verify caller assertions: no public key is configured. "
            "Set identity.public_key_file (KEEL_IDENTITY__PUBLIC_KEY_FILE) to the public half "
            "of the replicas' signing key."
        )
    assertion = verifier.verify(raw, tool=tool)
    return ToolContext(
        agent_id=assertion.agent_id,
        session_id=assertion.session_id,
        user_id=assertion.user_id,
        turn=assertion.turn,
        correlation_id=get_correlation_id(),
        organization=assertion.organization,
    )


def create_mcp_server(
    toolset: LocalToolSet,
    *,
    metrics: ToolServerMetrics | None = None,
    verifier: CallerVerifier | None = None,
    tracing: Tracing | None = None,
) -> Server[Any]:
    """The low-level MCP server over ``toolset`` (list and call tools).

    Over HTTP, ``McpAuth`` has authenticated the request; ``tools/list`` shows the
    token's tools only, and ``tools/call`` acts for the caller ``verifier`` accepts.
    ``tracing`` records a span per call (default: none)."""
    tracing = tracing or tracing_off()
    tracer = tracing.tracer("agentkeel.tools.server")

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: mcp.PaginatedRequestParams | None
    ) -> mcp.ListToolsResult:
        caller = caller_of(ctx.request)
        specs = [
            spec
            for spec in await toolset.list_tools()
            if caller is None or caller.may_call(spec.name)
        ]
        return mcp.ListToolsResult(
            tools=[
                mcp.Tool(
                    name=spec.name,
                    description=spec.description,
                    input_schema=dict(spec.parameters),
                )
                for spec in specs
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: mcp.CallToolRequestParams
    ) -> mcp.CallToolResult:
        _adopt_correlation_id(ctx)
        known = params.name in toolset.names
        label = params.name if known else "unknown"
        caller = caller_of(ctx.request)
        if caller is not None and not caller.may_call(params.name):
            # McpAuth refuses these before they get here; this keeps the rule in one place
            # for a request that reached the handler some other way.
            raise MCPError(JSONRPC_FORBIDDEN, tool_forbidden(caller, params.name).message)
        try:
            context = caller_context(params.meta, tool=params.name, verifier=verifier)
        except CallerAssertionRefused as exc:
            if metrics is not None:
                metrics.tool_calls.labels(label, "rejected").inc()
            logger.warning(
                "tool call %s refused: %s",
                params.name,
                exc.message,
                extra={
                    "tool": label,
                    "status": "rejected",
                    "event": "auth",
                    "caller": caller.name if caller is not None else None,
                },
            )
            raise MCPError(JSONRPC_UNAUTHORIZED, exc.message) from exc
        with start_tool_span(
            tracing,
            tracer,
            tool=params.name,
            arguments=params.arguments or {},
            kind=SpanKind.SERVER,
            correlation_id=context.correlation_id,
            parent=_caller_trace(ctx),
        ) as span:
            start = time.perf_counter()
            result = await toolset.call(params.name, dict(params.arguments or {}), context=context)
            elapsed = time.perf_counter() - start
            span.finish(status=result.status, result=result.content, error=result.error)
            if metrics is not None:
                metrics.tool_calls.labels(label, result.status).inc()
                metrics.tool_duration.labels(label).observe(elapsed)
            logger.log(
                logging.INFO if result.status == "success" else logging.WARNING,
                "tool call %s: %s",
                params.name,
                result.status,
                extra={
                    "event": "tool_call",
                    "category": Category.TOOL_CALL,
                    "tool": label,
                    "status": result.status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "agent_id": context.agent_id,
                    "session_id": context.session_id,
                    "turn": context.turn,
                    "correlation_id": context.correlation_id,
                },
            )
        return mcp.CallToolResult(
            content=[mcp.TextContent(type="text", text=result.content)],
            is_error=result.is_error,
        )

    # Without a schema lookup the SDK runs the whole tools/list handler on every
    # tools/call to check Mcp-Param-* headers.
    server: Server[Any] = Server(
        SERVER_NAME,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=toolset.input_schema,
    )
    # keel's execute_tool span is the call's server span; the SDK's would be a second one.
    server.middleware = [m for m in server.middleware if not isinstance(m, OpenTelemetryMiddleware)]
    return server


def create_app(
    settings: KeelSettings,
    *,
    registry: CollectorRegistry | None = None,
    memory_client: MemoryBackend | None = None,
    functions: Sequence[Callable[..., Any]] = (),
    clock: Clock | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
    tracing: Tracing | None = None,
) -> Starlette:
    """Build the tool server for ``settings.tools.server``.

    ``memory_client`` adds ``memory_search`` and ``memory_store``; without one,
    ``tools.server.memory_url`` builds a ``MemoryClient`` (token and outbox from
    the ``memory_client`` section), opened and closed with the app.
    ``functions`` adds tools beyond the configured modules (tests, embedding).
    Tokens come from ``tools.server.tokens_file`` (or ``secrets_dir/tools_tokens``),
    the caller public key from ``identity.public_key_file`` (or
    ``secrets_dir/caller_public_key``); ``clock`` also times assertion expiry.
    A tokens file that does not parse or a key that is not Ed25519 raises here.
    ``tracing`` records the calls' spans (default: the process's, ``telemetry/tracing.py``);
    with ``capture_content``, the arguments and results on them go through the server's
    secrets redactor (the values it read, and secret-shaped strings).
    ``app.state`` exposes ``registry``, ``toolset``, ``memory_client`` and ``redactor``
    (for the process's log lines).

    >>> app = create_app(load_settings().settings)
    """
    server_settings = settings.tools.server
    known = KnownSecrets()
    secrets = SecretResolver(secrets_dir=settings.secrets_dir, known=known)
    # The process's redactor: tool arguments and results on spans, and the log lines.
    redactor = SecretRedactor(known=known)
    access = ToolAccess(settings=server_settings, secrets=secrets)
    has_tokens = access.configured()
    verifier = build_caller_verifier(
        settings.identity,
        audience=server_settings.audience,
        secrets=secrets,
        time=clock.time if clock is not None else None,
    )
    registry = registry if registry is not None else CollectorRegistry()
    tracing = (
        tracing or process_tracing(capture_content=settings.tracing.capture_content)
    ).redacting(lambda text: redactor.redact(text, where="span", record=False))
    http_metrics = HttpMetrics(registry)
    tool_metrics = ToolServerMetrics(registry)
    owned_memory: MemoryClient | None = None
    if memory_client is None and server_settings.memory_url:
        owned_memory = build_memory_client(
            settings.memory_client,
            url=server_settings.memory_url,
            name=f"tools-{server_settings.port}",
            data_dir=settings.data_dir,
            secrets_dir=settings.secrets_dir,
            metrics=MemoryClientMetrics(registry),
            clock=clock,
            tracing=tracing,
        )
        memory_client = owned_memory
    toolset = build_server_toolset(
        server_settings,
        memory_client=memory_client,
        functions=functions,
        clock=clock,
        http_transport=http_transport,
    )
    manager = StreamableHTTPSessionManager(
        app=create_mcp_server(toolset, metrics=tool_metrics, verifier=verifier, tracing=tracing),
        json_response=True,
        stateless=True,
        security_settings=_transport_security(server_settings.host),
    )
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owned_memory is not None:
            await owned_memory.open()
        try:
            async with manager.run():
                state["ready"] = True
                logger.info(
                    "tool server ready: %d tool(s): %s",
                    len(toolset.names),
                    ", ".join(toolset.names),
                )
                if not has_tokens:
                    logger.warning(
                        "no tool server tokens configured (%s): every MCP request is refused "
                        "with 401 until that file exists",
                        access.where,
                        extra={"event": "auth"},
                    )
                if verifier is None and memory_client is not None:
                    logger.warning(
                        "no caller public key configured (identity.public_key_file): the memory "
                        "tools refuse every call, since no caller can be verified",
                        extra={"event": "auth"},
                    )
                try:
                    yield
                finally:
                    state["ready"] = False
        finally:
            if owned_memory is not None:
                # A short last try; what is left stays in the outbox for the next start.
                await owned_memory.aclose(flush_timeout_s=2.0)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "tools"})

    async def ready(request: Request) -> Response:
        if not state["ready"]:
            return error_response(Unavailable("The tool server is starting.", code="starting"))
        return JSONResponse({"status": "ready", "tools": list(toolset.names)})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/mcp", McpAuth(StreamableHTTPASGIApp(manager), access=access)),
        ],
        middleware=[
            Middleware(TraceContextMiddleware),
            Middleware(CorrelationMiddleware),
            Middleware(HttpMetricsMiddleware, metrics=http_metrics),
        ],
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.toolset = toolset
    app.state.memory_client = memory_client
    app.state.redactor = redactor
    return app


def _adopt_correlation_id(ctx: ServerRequestContext[Any, Any]) -> None:
    # The SDK may run the handler outside the HTTP request's task; the header is
    # still on the request it hands over.
    request = ctx.request
    headers = getattr(request, "headers", None)
    if headers is not None and get_correlation_id() is None:
        set_correlation_id(accept_correlation_id(headers.get(HEADER)))


def _caller_trace(ctx: ServerRequestContext[Any, Any]) -> Context | None:
    """The trace context the request's ``traceparent`` names (read from the request the
    SDK hands over: the handler may run outside the HTTP request's task)."""
    headers = getattr(ctx.request, "headers", None)
    return incoming_context(headers) if headers is not None else None


def _transport_security(host: str) -> TransportSecuritySettings | None:
    """DNS-rebinding protection when bound to loopback, as the SDK does by default:
    a web page in the operator's browser must not reach the tools."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
