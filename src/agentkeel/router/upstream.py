"""Connections to the replicas: keep-alive pools and one request/response exchange at a time.

An ``UpstreamConnection`` is an asyncio protocol with an ``httptools`` response
parser. The response's body bytes are written to the client as they arrive,
unchanged (chunked framing included), so a server-sent event reaches the
client in the same packet it left the replica. The head passes as it came,
with the correlation id added when the replica did not echo it and
``connection: close`` when the client's connection ends with this answer; it
is rebuilt line by line only to drop hop-by-hop headers.
An ``Exchange`` can instead hold the whole response back (``buffer_statuses``)
when the router must read it before the client may: a 201 that creates a
session (its pin is written first) or a 503 that may say ``draining`` (nothing
ran, so another replica can take the request).

How an exchange ends (``Exchange.outcome``):

- ``DONE``: forwarded completely; ``HELD``: complete but held back;
- ``LOST``: the connection dropped before anything reached the client (the
  replica may have acted on the request: never retried blindly);
- ``BROKEN``: it dropped after the client got part of the response;
- ``TIMEOUT``: the replica went silent for ``upstream_timeout_s``;
- ``BAD``: the replica's bytes were not HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from agentkeel.router.responses import status_line

__all__ = [
    "BAD",
    "BROKEN",
    "DONE",
    "HELD",
    "LOST",
    "TIMEOUT",
    "Exchange",
    "Sink",
    "UpstreamConnection",
    "UpstreamPool",
    "fetch",
]

DONE, HELD, LOST, BROKEN, TIMEOUT, BAD = range(6)

# Response headers that describe one hop, not the message (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"upgrade"})
_CORRELATION = b"x-correlation-id"
# The same, as found in a lowercased head (a header name starts a line).
_HOP_LINES = tuple(b"\n" + name + b":" for name in sorted(_HOP_BY_HOP))
_CORRELATION_LINE = b"\n" + _CORRELATION + b":"
_FRAMING_LINES = (b"\ncontent-length:", b"\ntransfer-encoding:")
_HTTP11 = b"HTTP/1.1 "
_NO_BODY_STATUSES = frozenset({204, 304})


class Sink(Protocol):
    """Where a response goes: the client connection."""

    def write(self, data: bytes) -> None: ...


class Exchange:
    """One request's response from one replica, and how it is passed on."""

    __slots__ = (
        "body",
        "buffer_statuses",
        "complete",
        "correlation_id",
        "forwarded",
        "future",
        "has_id",
        "head",
        "head_done",
        "head_parts",
        "held",
        "keep_alive",
        "keep_client",
        "on_end",
        "outcome",
        "raw",
        "silent",
        "sink",
        "status",
        "until_close",
        "verbatim",
    )

    def __init__(
        self,
        future: asyncio.Future[int] | None,
        *,
        sink: Sink | None,
        buffer_statuses: frozenset[int] = frozenset(),
        correlation_id: bytes | None = None,
        keep_client: bool = True,
        on_end: Callable[[Exchange], None] | None = None,
    ) -> None:
        # The outcome goes to ``future`` (an awaiting task) or, with no task to
        # wake, straight to ``on_end`` from the connection's callback.
        self.future = future
        self.on_end = on_end
        self.sink = sink
        self.buffer_statuses = buffer_statuses
        self.correlation_id = correlation_id
        self.keep_client = keep_client
        self.status = 0
        self.head = b""
        self.head_parts: list[bytes] = []
        self.head_done = False
        self.complete = False
        self.forwarded = False
        self.held = sink is None
        self.raw: list[bytes] = []
        self.body: list[bytes] = []
        self.keep_alive = False
        self.until_close = False
        self.verbatim = False
        self.has_id = False
        self.silent = 0
        self.outcome = -1

    def read_head(self, head: bytes) -> None:
        """Take the replica's head (status line to blank line): how the body ends, and
        whether the head can go to the client as it is."""
        self.head = head
        lower = head.lower()
        framed = any(line in lower for line in _FRAMING_LINES)
        status = self.status
        self.until_close = not framed and status not in _NO_BODY_STATUSES and status >= 200
        self.has_id = _CORRELATION_LINE in lower
        self.verbatim = head.startswith(_HTTP11) and not any(line in lower for line in _HOP_LINES)

    def head_bytes(self) -> bytes:
        """The response head for the client."""
        extra = b""
        if not self.has_id and self.correlation_id is not None:
            extra = b"x-correlation-id: " + self.correlation_id + b"\r\n"
        if not self.keep_client or self.until_close:
            extra += b"connection: close\r\n"
        if self.verbatim:
            return self.head[:-2] + extra + b"\r\n" if extra else self.head
        return self._rebuilt_head() + extra + b"\r\n"

    def _rebuilt_head(self) -> bytes:
        """The status line and the end-to-end headers (no blank line)."""
        lines = self.head.split(b"\r\n")
        words = lines[0].split(b" ", 2)
        parts = [status_line(self.status, words[2] if len(words) > 2 else b"")]
        for line in lines[1:]:
            if line and line.partition(b":")[0].strip().lower() not in _HOP_BY_HOP:
                parts.append(line + b"\r\n")
        return b"".join(parts)

    def release_held(self) -> None:
        """Write a held response to the client."""
        if self.sink is not None and not self.forwarded:
            self.forwarded = True
            self.sink.write(self.head_bytes() + b"".join(self.raw))

    @property
    def client_must_close(self) -> bool:
        """The body ended with the replica's connection, so it must end the client's too."""
        return self.until_close or not self.keep_client


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a replica; one exchange at a time."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self.closed = False
        self.reused = False
        self.paused = False

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # Bytes nobody asked for: this connection cannot be trusted with a request.
            self.close()
            return
        ex.silent = 0
        head_was_done = ex.head_done
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._end(BROKEN if ex.forwarded else BAD)
            self.close()
            return
        if not ex.head_done:
            ex.head_parts.append(data)
            return
        if not head_was_done:
            buffer = b"".join((*ex.head_parts, data)) if ex.head_parts else data
            ex.head_parts = []
            end = buffer.find(b"\r\n\r\n") + 4
            ex.read_head(buffer[:end])
            body = buffer[end:]
            if ex.held:
                ex.raw.append(body)
            else:
                ex.forwarded = True
                ex.sink.write(ex.head_bytes() + body)  # type: ignore[union-attr]
        elif ex.held:
            ex.raw.append(data)
        else:
            ex.sink.write(data)  # type: ignore[union-attr]
        if ex.complete:
            self._end(HELD if ex.held else DONE)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        ex = self.exchange
        if ex is None:
            return
        if ex.head_done and ex.until_close:
            # A body delimited by the end of the connection is complete now.
            self._end(HELD if ex.held else DONE)
        else:
            self._end(BROKEN if ex.forwarded else LOST)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and self.paused:
            self.paused = False
            self.transport.resume_reading()

    # -- httptools callbacks ----------------------------------------------------------
    # No per-header callbacks: the head is read once, whole (``Exchange.read_head``).

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        status = self.parser.get_status_code()
        ex.status = status
        ex.head_done = True
        if status in ex.buffer_statuses:
            ex.held = True

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None and ex.held:
            ex.body.append(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.complete = True
            ex.keep_alive = self.parser.should_keep_alive()

    # -- used by the proxy -------------------------------------------------------------

    def send(self, data: bytes, exchange: Exchange) -> None:
        """Write one request; ``exchange.future`` resolves with its outcome."""
        self.exchange = exchange
        self.pool.busy.add(self)
        assert self.transport is not None
        self.transport.write(data)

    def _end(self, outcome: int) -> None:
        ex = self.exchange
        if ex is None:
            return
        self.exchange = None
        self.pool.busy.discard(self)
        ex.outcome = outcome
        if outcome in (DONE, HELD) and ex.keep_alive and not ex.until_close and not self.closed:
            self.pool.release(self)
        else:
            self.close()
        if ex.on_end is not None:
            on_end, ex.on_end = ex.on_end, None
            on_end(ex)
        elif ex.future is not None and not ex.future.done():
            ex.future.set_result(outcome)

    def abort(self) -> None:
        """The client went away: drop this connection (the replica finishes on its own)."""
        self.close()

    def time_out(self) -> None:
        ex = self.exchange
        if ex is not None:
            self._end(BROKEN if ex.forwarded else TIMEOUT)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.discard(self)
            if self.transport is not None:
                self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one replica (``host:port``).

    ``acquire_idle`` hands out the most recently used idle connection (the
    least likely to have been closed by the replica), ``connect`` opens a new
    one, ``release`` takes one back. Idle connections older than ``idle_s`` are
    closed before the replica's own keep-alive timeout can race a new request.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        connect_timeout_s: float,
        idle_s: float,
        size: int,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.idle_s = idle_s
        self.size = size
        self.idle: list[UpstreamConnection] = []
        self.busy: set[UpstreamConnection] = set()
        self.closed = False

    def acquire_idle(self, now: float) -> UpstreamConnection | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > self.idle_s:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    async def connect(self) -> UpstreamConnection:
        """A new connection; ``OSError`` (refused, unreachable) or ``TimeoutError``."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout_s):
            transport, protocol = await loop.create_connection(
                lambda: UpstreamConnection(self), self.host, self.port
            )
        # uvloop may return before connection_made has run.
        protocol.transport = transport
        return protocol

    def release(self, conn: UpstreamConnection) -> None:
        if self.closed or len(self.idle) >= self.size:
            conn.close()
            return
        # The last chunk may have filled the client's buffer and paused this connection.
        conn.resume_reading()
        conn.idle_since = asyncio.get_running_loop().time()
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        self.busy.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def sweep(self, now: float, *, limit: int) -> None:
        """Close stale idle connections; time out exchanges that received nothing for
        ``limit`` consecutive sweeps (a counter the data path resets, not a timer per
        request)."""
        for conn in [c for c in self.idle if now - c.idle_since > self.idle_s]:
            conn.close()
        for conn in list(self.busy):
            ex = conn.exchange
            if ex is None:
                continue
            ex.silent += 1
            if ex.silent > limit:
                conn.time_out()

    def close_idle(self) -> None:
        """Close the idle connections (the replica went away: they are likely dead)."""
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()

    def close(self) -> None:
        """Close the idle connections; busy ones close when their exchange ends."""
        self.closed = True
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()


async def fetch(pool: UpstreamPool, wire: bytes, *, timeout_s: float) -> Exchange | None:
    """One request of the router's own (a probe, a session lookup): the whole answer held,
    or ``None`` when the replica could not be reached or did not answer in time."""
    loop = asyncio.get_running_loop()
    conn: UpstreamConnection | None = None
    try:
        async with asyncio.timeout(timeout_s):
            conn = pool.acquire_idle(loop.time())
            if conn is None:
                conn = await pool.connect()
            future: asyncio.Future[int] = loop.create_future()
            exchange = Exchange(future, sink=None)
            conn.send(wire, exchange)
            outcome = await future
    except (OSError, TimeoutError):
        if conn is not None:
            conn.close()
        return None
    return exchange if outcome == HELD else None
