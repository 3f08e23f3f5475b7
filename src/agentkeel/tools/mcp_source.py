"""One MCP server, ours or anyone's, over streamable HTTP, as a ``ToolSet``.

``McpToolSource`` keeps one MCP connection open and shares it between all
turns. The SDK's transport lives in anyio task groups that must be entered
and left by the same task, so the connection is owned by a background task
of its own; turns only send requests through it. A transport failure drops
the connection and the next call opens a new one.

Discovery (``tools/list``) is cached for ``discovery_ttl_s``; a refresh that
fails keeps the last list, so the tools of a server that went down stay known
and their calls fail with a clear message (and trip the breaker) instead of
turning into "unknown tool".

Every HTTP request carries ``X-Correlation-ID`` and the W3C ``traceparent`` of the
span it is sent in (a turn's ``execute_tool`` span: the SDK's send runs in the
caller's context), and ``Authorization: Bearer`` when the server has a token. For
a server with an ``audience`` (agentkeel's own tool server), every ``tools/call``
carries in ``_meta`` under ``io.agentkeel/caller`` a caller assertion signed for
that one call (agent, user, session, turn, the tool, a minute at most); other
servers get no caller identity.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx2
import mcp_types as mcp
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import SecretStr

from agentkeel.errors import ConfigError, ToolServerUnavailable
from agentkeel.identity.assertion import CallerSigner
from agentkeel.models.types import ToolSpec
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.telemetry.correlation import get_correlation_id, set_correlation_id
from agentkeel.telemetry.http import add_correlation_id, add_trace_context
from agentkeel.telemetry.metrics import ToolMetrics
from agentkeel.tools.types import ToolContext, ToolResult

logger = logging.getLogger("agentkeel.tools.client")

CALLER_META_KEY = "io.agentkeel/caller"
_MAX_PAGES = 50

HttpClientFactory = Callable[[], httpx2.AsyncClient]


def default_http_client(*, connect_timeout_s: float) -> httpx2.AsyncClient:
    """An HTTP client for MCP requests: bounded connect, correlation id and trace context
    on every request.

    Reads, writes and the pool wait have no timeout of their own: the tools
    client's per-call timeout bounds each call, and one timer per call is
    cheaper than the transport arming one per socket operation."""
    return httpx2.AsyncClient(
        timeout=httpx2.Timeout(None, connect=connect_timeout_s),
        event_hooks={"request": [add_correlation_id, add_trace_context]},
    )


class _Connection:
    """An open MCP client, owned by a background task until ``close()``."""

    def __init__(self, client: Client, task: asyncio.Task[None], closing: asyncio.Event) -> None:
        self.client = client
        self.task = task
        self.closing = closing

    async def close(self) -> None:
        self.closing.set()
        try:
            async with asyncio.timeout(5):
                await asyncio.shield(self.task)
        except (TimeoutError, Exception):
            self.task.cancel()


class McpToolSource:
    """The tools of one MCP server (implements ``ToolSet``).

    ``prefix`` is prepended to the server's tool names in ``list_tools`` and
    stripped again in ``call``. ``call`` returns a failed result for a tool
    that reports an error, and raises ``ToolServerUnavailable`` when the
    server cannot be reached, so the guarded client can count it against
    the server's breaker.

    ``bearer_token`` is sent on every HTTP request; with ``audience``, ``signer``
    signs the caller of every call for that audience (both or neither).

    >>> source = McpToolSource(name="tools", url="http://127.0.0.1:9090/mcp",
    ...     bearer_token=token, signer=signer, audience="agentkeel-tools")
    >>> specs = await source.list_tools()
    >>> await source.aclose()
    """

    def __init__(
        self,
        *,
        name: str,
        url: str,
        prefix: str = "",
        connect_timeout_s: float = 5.0,
        discovery_ttl_s: float = 300.0,
        clock: Clock | None = None,
        metrics: ToolMetrics | None = None,
        http_client_factory: HttpClientFactory | None = None,
        bearer_token: SecretStr | None = None,
        signer: CallerSigner | None = None,
        audience: str | None = None,
    ) -> None:
        if audience is not None and signer is None:
            raise ConfigError(
                f"MCP server '{name}' has audience '{audience}', so every call must carry a "
                "signed caller assertion, but no signing key is configured. Set "
                "identity.signing_key_file (KEEL_IDENTITY__SIGNING_KEY_FILE) to the private key "
                "whose public half the server verifies with."
            )
        self.name = name
        self.url = url
        self.prefix = prefix
        self._connect_timeout_s = connect_timeout_s
        self._ttl_s = discovery_ttl_s
        self._clock = clock or SystemClock()
        self._metrics = metrics
        self._http_client_factory = http_client_factory or (
            lambda: default_http_client(connect_timeout_s=connect_timeout_s)
        )
        self._bearer_token = bearer_token
        self._signer = signer
        self._audience = audience
        self._connection: _Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._refresh_lock = asyncio.Lock()
        self._specs: tuple[ToolSpec, ...] | None = None
        self._discovered_at = 0.0
        self._closed = False

    # -- discovery ------------------------------------------------------------------

    async def list_tools(self) -> Sequence[ToolSpec]:
        """The server's tools (cached). Raises ``ToolServerUnavailable`` only when the
        server has never been reachable."""
        fresh = (
            self._specs is not None and self._clock.monotonic() - self._discovered_at < self._ttl_s
        )
        if fresh:
            assert self._specs is not None
            return self._specs
        try:
            return await self.refresh()
        except ToolServerUnavailable:
            if self._specs is None:
                raise
            return self._specs

    async def refresh(self) -> Sequence[ToolSpec]:
        """Ask the server for its tools now and cache the answer."""
        async with self._refresh_lock:
            try:
                tools = await self._list_all()
            except ToolServerUnavailable:
                if self._metrics is not None:
                    self._metrics.discovery_errors.labels(self.name).inc()
                raise
            specs = tuple(
                ToolSpec(
                    name=f"{self.prefix}{tool.name}",
                    description=tool.description or f"The {tool.name} tool of {self.name}.",
                    parameters=dict(tool.input_schema or {"type": "object", "properties": {}}),
                )
                for tool in tools
            )
            if self._specs is None or {s.name for s in specs} != {s.name for s in self._specs}:
                logger.info(
                    "MCP server %s offers %d tool(s): %s",
                    self.name,
                    len(specs),
                    ", ".join(spec.name for spec in specs) or "none",
                    extra={"event": "tool_discovery"},
                )
            self._specs = specs
            self._discovered_at = self._clock.monotonic()
            if self._metrics is not None:
                self._metrics.tools_discovered.labels(self.name).set(len(specs))
            return specs

    async def _list_all(self) -> list[mcp.Tool]:
        client = await self._client()
        tools: list[mcp.Tool] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self._connect_timeout_s * 2):
                for _ in range(_MAX_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
        except (TimeoutError, MCPError, OSError, httpx2.HTTPError) as exc:
            await self._drop()
            raise self._unavailable("listing its tools", exc) from exc
        return tools

    # -- calls ------------------------------------------------------------------------

    async def call(
        self, name: str, arguments: dict[str, Any], *, context: ToolContext
    ) -> ToolResult:
        """Call one tool. The caller bounds the time; a cancelled call leaves the
        connection open for other turns."""
        if not name.startswith(self.prefix):
            return ToolResult(status="rejected", content=f"unknown tool '{name}' on {self.name}")
        remote = name[len(self.prefix) :]
        if context.correlation_id and get_correlation_id() is None:
            set_correlation_id(context.correlation_id)
        client = await self._client()
        meta: dict[str, Any] | None = None
        if self._audience is not None and self._signer is not None:
            meta = {
                CALLER_META_KEY: self._signer.sign(
                    audience=self._audience,
                    tool=remote,
                    agent_id=context.agent_id,
                    user_id=context.user_id,
                    session_id=context.session_id,
                    turn=context.turn,
                    organization=context.organization,
                )
            }
        try:
            result = await client.call_tool(remote, arguments, meta=meta)  # type: ignore[arg-type]
        except MCPError as exc:
            if exc.code in (mcp.CONNECTION_CLOSED, mcp.REQUEST_TIMEOUT):
                await self._drop()
                raise self._unavailable(f"calling {remote}", exc) from exc
            # A protocol-level error about this call (unknown tool, bad arguments).
            return ToolResult(status="failure", content=f"{name} failed: {exc.message}")
        except (OSError, httpx2.HTTPError) as exc:
            await self._drop()
            raise self._unavailable(f"calling {remote}", exc) from exc
        text = _text_of(result)
        if result.is_error:
            return ToolResult(status="failure", content=text or f"{name} failed")
        return ToolResult(content=text)

    # -- the connection ---------------------------------------------------------------

    async def _client(self) -> Client:
        if self._connection is not None and not self._connection.task.done():
            return self._connection.client
        async with self._connect_lock:
            if self._connection is not None and not self._connection.task.done():
                return self._connection.client
            if self._closed:
                raise ToolServerUnavailable(f"The MCP client for {self.name} is closed.")
            self._connection = await self._open()
            return self._connection.client

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Client] = loop.create_future()
        closing = asyncio.Event()
        task = loop.create_task(self._own(ready, closing), name=f"mcp-connection-{self.name}")
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                client = await asyncio.shield(ready)
        except BaseException as exc:
            closing.set()
            task.cancel()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self._unavailable("connecting", exc) from exc
        return _Connection(client, task, closing)

    async def _own(self, ready: asyncio.Future[Client], closing: asyncio.Event) -> None:
        try:
            http = self._http_client_factory()
            if self._bearer_token is not None:
                http.headers["Authorization"] = f"Bearer {self._bearer_token.get_secret_value()}"
            transport = streamable_http_client(self.url, http_client=http)
            async with http, Client(transport, cache=None, mode="auto") as client:
                ready.set_result(client)
                await closing.wait()
        except BaseException as exc:  # the SDK raises exception groups from its task groups
            if not ready.done():
                ready.set_exception(_first_error(exc))
            elif not isinstance(exc, asyncio.CancelledError):
                logger.debug("MCP connection to %s ended: %r", self.name, exc)

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def _unavailable(self, doing: str, exc: BaseException) -> ToolServerUnavailable:
        reason = _describe(exc)
        return ToolServerUnavailable(
            f"MCP server '{self.name}' at {self.url} failed while {doing}: {reason}. "
            "Check that it is running and reachable from this replica."
        )

    async def aclose(self) -> None:
        """Close the connection; later calls raise ``ToolServerUnavailable``."""
        self._closed = True
        await self._drop()


def _text_of(result: mcp.CallToolResult) -> str:
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp.TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content omitted]")
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False, default=str)
    return "\n".join(parts)


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    exc = _first_error(exc)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, MCPError):
        return exc.message
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
