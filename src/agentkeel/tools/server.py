"""The tool server: MCP over streamable HTTP at ``/mcp``, as a Starlette app factory.

``create_app(settings)`` serves, with the official ``mcp`` SDK's low-level
server, the built-in tools (``calculator``, ``current_time``, ``http_get``,
and ``memory_search``/``memory_store`` when a memory client is given) and the
public functions of the modules in ``tools.server.tools_modules``, next to
``/health``, ``/ready`` and ``/metrics``.

Tools are described and called through ``LocalToolSet``, so a tool's name,
description and JSON schema come from its signature and docstring exactly as
for in-process tools. The caller (agent, user, session, turn) travels in the
MCP request's ``_meta`` under ``io.agentkeel/caller``; tools that take a
``ToolContext`` receive it, which is how the memory tools find the caller's
namespace. A caller that sends none (any third-party MCP client) is anonymous.

The MCP endpoint is stateless (every POST stands alone, JSON responses), so
any replica can answer any call and a restart loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import mcp_types as mcp
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import (
    StreamableHTTPASGIApp,
    StreamableHTTPSessionManager,
)
from mcp.server.transport_security import TransportSecuritySettings
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.config.settings import KeelSettings
from agentkeel.config.tools import ToolServerSettings
from agentkeel.errors import ConfigError, Unavailable
from agentkeel.memory.client import MemoryClient, build_memory_client
from agentkeel.memory.metrics import MemoryClientMetrics
from agentkeel.resilience.clock import Clock
from agentkeel.telemetry.correlation import (
    HEADER,
    accept_correlation_id,
    get_correlation_id,
    set_correlation_id,
)
from agentkeel.telemetry.metrics import HttpMetrics, ToolServerMetrics
from agentkeel.telemetry.middleware import CorrelationMiddleware, HttpMetricsMiddleware
from agentkeel.tools.builtins import builtin_functions
from agentkeel.tools.discovery import load_tool_modules
from agentkeel.tools.http_get import make_http_get
from agentkeel.tools.local import LocalToolSet
from agentkeel.tools.memory_tools import MemoryBackend, make_memory_tools
from agentkeel.tools.types import ToolContext
from agentkeel.web.errors import error_response

logger = logging.getLogger("agentkeel.tools.server")

CALLER_META_KEY = "io.agentkeel/caller"
"""``_meta`` key of a ``tools/call`` that carries the caller's identity."""

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


def caller_context(meta: Mapping[str, Any] | None) -> ToolContext:
    """The caller named in a request's ``_meta``, or an anonymous one."""
    raw = (meta or {}).get(CALLER_META_KEY)
    caller: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}

    def text(key: str, default: str) -> str:
        value = caller.get(key)
        return value[:256] if isinstance(value, str) and value else default

    turn = caller.get("turn")
    return ToolContext(
        agent_id=text("agent_id", "anonymous"),
        session_id=text("session_id", "anonymous"),
        user_id=text("user_id", "anonymous"),
        turn=turn if isinstance(turn, int) and not isinstance(turn, bool) else 0,
        correlation_id=get_correlation_id(),
    )


def create_mcp_server(
    toolset: LocalToolSet, *, metrics: ToolServerMetrics | None = None
) -> Server[Any]:
    """The low-level MCP server over ``toolset`` (list and call tools)."""

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: mcp.PaginatedRequestParams | None
    ) -> mcp.ListToolsResult:
        specs = await toolset.list_tools()
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
        context = caller_context(params.meta)
        start = time.perf_counter()
        result = await toolset.call(params.name, dict(params.arguments or {}), context=context)
        elapsed = time.perf_counter() - start
        known = params.name in toolset.names
        label = params.name if known else "unknown"
        if metrics is not None:
            metrics.tool_calls.labels(label, result.status).inc()
            metrics.tool_duration.labels(label).observe(elapsed)
        logger.log(
            logging.INFO if result.status == "success" else logging.WARNING,
            "tool call %s: %s",
            params.name,
            result.status,
            extra={
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
    return Server(
        SERVER_NAME,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        get_tool_input_schema=toolset.input_schema,
    )


def create_app(
    settings: KeelSettings,
    *,
    registry: CollectorRegistry | None = None,
    memory_client: MemoryBackend | None = None,
    functions: Sequence[Callable[..., Any]] = (),
    clock: Clock | None = None,
    http_transport: httpx.AsyncBaseTransport | None = None,
) -> Starlette:
    """Build the tool server for ``settings.tools.server``.

    ``memory_client`` adds ``memory_search`` and ``memory_store``; without one,
    ``tools.server.memory_url`` builds a ``MemoryClient`` (token and outbox from
    the ``memory_client`` section), opened and closed with the app.
    ``functions`` adds tools beyond the configured modules (tests, embedding).
    ``app.state`` exposes ``registry``, ``toolset`` and ``memory_client``.

    >>> app = create_app(load_settings().settings)
    """
    server_settings = settings.tools.server
    registry = registry if registry is not None else CollectorRegistry()
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
        app=create_mcp_server(toolset, metrics=tool_metrics),
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
            Route("/mcp", StreamableHTTPASGIApp(manager)),
        ],
        middleware=[
            Middleware(CorrelationMiddleware),
            Middleware(HttpMetricsMiddleware, metrics=http_metrics),
        ],
        lifespan=lifespan,
    )
    app.state.registry = registry
    app.state.toolset = toolset
    app.state.memory_client = memory_client
    return app


def _adopt_correlation_id(ctx: ServerRequestContext[Any, Any]) -> None:
    # The SDK may run the handler outside the HTTP request's task; the header is
    # still on the request it hands over.
    request = ctx.request
    headers = getattr(request, "headers", None)
    if headers is not None and get_correlation_id() is None:
        set_correlation_id(accept_correlation_id(headers.get(HEADER)))


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
