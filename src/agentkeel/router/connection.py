"""One client connection: HTTP/1.1 parsed by ``httptools``, keep-alive, requests in order.

The parser's callbacks collect the request line, the headers (already as the
bytes sent to the replica, hop-by-hop headers dropped, and those the handler
strips: a client's trace context unless it is trusted) and the body, bounded
by ``max_header_bytes`` (431) and ``max_body_bytes`` (413). A complete request
becomes a ``Request``. On an idle connection the ``Handler`` may forward it
at once from the parser's callback (``forward_now``: no task, no coroutine);
otherwise it is handled in a task (``handle``). Pipelined requests wait their
turn, so responses leave in order. Malformed HTTP gets a 400 and the
connection is closed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from agentkeel.router.responses import router_error
from agentkeel.router.upstream import UpstreamConnection
from agentkeel.telemetry.trace_context import trace_log_fields

if TYPE_CHECKING:
    from agentkeel.identity.caller_limits import TurnSlot
    from agentkeel.identity.principal import Principal

__all__ = ["ClientConnection", "Handler", "Request"]

logger = logging.getLogger("agentkeel.router")

# Request headers the router does not pass on: they describe this hop, or the router
# sets them itself (the body is always sent with a Content-Length).
_DROPPED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"transfer-encoding",
        b"content-length",
        b"expect",
    }
)
_CORRELATION = b"x-correlation-id"
_TRACEPARENT = b"traceparent"
_AUTHORIZATION = b"authorization"
_HOST = b"host"
_CONTENT_LENGTH = b"content-length"
_CONNECTION = b"connection"
_EXPECT = b"expect"
# Connection options that name no header of their own.
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BODY_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


class Request:
    """A parsed request, with the bytes that go to a replica (``wire``)."""

    __slots__ = (
        "authorization",
        "body",
        "canned",
        "correlation_id",
        "head_end",
        "keep_alive",
        "method",
        "minted",
        "path",
        "principal",
        "traceparent",
        "turn_slot",
        "url",
        "wire",
    )

    def __init__(
        self,
        *,
        method: bytes,
        url: bytes,
        body: bytes,
        wire: bytes,
        keep_alive: bool,
        correlation_id: bytes,
        minted: bool,
        authorization: bytes | None,
        traceparent: bytes | None = None,
    ) -> None:
        self.method = method
        self.url = url
        self.path = url.partition(b"?")[0]
        self.body = body
        self.wire = wire
        self.keep_alive = keep_alive
        self.correlation_id = correlation_id
        self.minted = minted
        self.authorization = authorization
        # A trusted client's (tracing.trust_incoming), passed on to the replica as it came
        # and kept so log lines join its trace; None when the router drops the header.
        self.traceparent = traceparent
        self.canned: bytes | None = None
        # Where the head ends in ``wire`` (after its blank line): a header the router adds
        # goes in before that blank line, the rest is not serialised again.
        self.head_end = len(wire) - len(body)
        # Set by the front door once it admitted the request (auth on).
        self.principal: Principal | None = None
        self.turn_slot: TurnSlot | None = None

    def add_header(self, line: bytes) -> None:
        """Insert ``line`` (``name: value\r\n``) as the head's last header."""
        at = self.head_end - 2
        self.wire = self.wire[:at] + line + self.wire[at:]
        self.head_end += len(line)

    @property
    def id_header(self) -> tuple[tuple[bytes, bytes], ...]:
        """The correlation id as a response header of the router's own answers."""
        return ((_CORRELATION, self.correlation_id),)

    def log_fields(self) -> dict[str, str]:
        """The correlation id, and the caller's ``trace_id``/``span_id`` when the request
        carried ``traceparent``: the ``extra`` of a log line about this request."""
        return {
            "correlation_id": self.correlation_id.decode("latin-1"),
            **trace_log_fields(self.traceparent),
        }


class Handler(Protocol):
    """Answers one request on a client connection."""

    max_header_bytes: int
    max_body_bytes: int
    stripped_headers: frozenset[bytes]
    """Lowercased request headers never passed on (those only the router may set)."""
    forwards_authorization: bool
    """Whether the client's ``Authorization`` goes to the replica (not when the router
    itself authenticates the client)."""

    async def handle(self, client: ClientConnection, request: Request) -> None: ...

    def forward_now(self, client: ClientConnection, request: Request) -> bool:
        """Start ``request`` from the parser's callback when nothing needs awaiting; ``True``
        when it did (it then calls ``client.forwarded`` or ``client.finish_in_task``)."""
        ...

    def opened(self, client: ClientConnection) -> None: ...

    def closed(self, client: ClientConnection) -> None: ...


class _Refused(Exception):
    """A request the router answers itself and then closes the connection."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ClientConnection(asyncio.Protocol):
    """A client's connection to the router."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.forwarding = False  # a request forwarded without a task is in flight
        self.upstream: UpstreamConnection | None = None
        self.closed = False
        self.refused = False
        self.must_close = False
        self.silent = 0
        self._paused = False
        self._dropped = _DROPPED | handler.stripped_headers
        self._forwards_authorization = handler.forwards_authorization
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[bytes] = []
        self._body: list[bytes] = []
        self._size = 0
        self._body_size = 0
        self._correlation_id: bytes | None = None
        self._authorization: bytes | None = None
        self._traceparent: bytes | None = None
        self._has_host = False
        self._expect_continue = False
        self._nominated: frozenset[bytes] = frozenset()

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.handler.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.silent = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(
                _Refused(501, "upgrade_unsupported", "The router does not upgrade connections.")
            )
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Refused):
                self._refuse(cause)
            else:
                logger.error("router request parsing failed", exc_info=cause)
                self._refuse(_Refused(500, "internal_error", "The router failed on this request."))
        except httptools.HttpParserError as exc:
            self._refuse(_Refused(400, "bad_request", f"Malformed HTTP request: {exc}."))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        upstream = self.upstream
        if upstream is not None:
            upstream.abort()
        self.handler.closed(self)

    def pause_writing(self) -> None:
        # The client reads slower than the replica writes: stop reading the replica.
        self._paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._size += len(url)
        if self._size > self.handler.max_header_bytes:
            raise _too_many_header_bytes(self.handler.max_header_bytes)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value) + 4
        if self._size > self.handler.max_header_bytes:
            raise _too_many_header_bytes(self.handler.max_header_bytes)
        lower = name.lower()
        if lower in self._dropped:
            if lower == _CONTENT_LENGTH:
                self._check_length(value)
            elif lower == _EXPECT:
                self._expect_continue = value.strip().lower() == b"100-continue"
            elif lower == _CONNECTION:
                # Headers the client names in Connection are for this hop only (RFC 9110 7.6.1).
                tokens = {token.strip() for token in value.lower().split(b",")}
                self._nominated |= tokens - _CONNECTION_OPTIONS - {b""}
            return
        if lower == _CORRELATION:
            if self._correlation_id is not None:
                raise _duplicate(name)
            self._correlation_id = value
        elif lower == _AUTHORIZATION:
            if self._authorization is not None:
                raise _duplicate(name)
            self._authorization = value
            if not self._forwards_authorization:
                return
        elif lower == _HOST:
            if self._has_host:
                raise _duplicate(name)
            self._has_host = True
        elif lower == _TRACEPARENT:
            self._traceparent = value
        self._headers.append(name + b": " + value + b"\r\n")

    def _check_length(self, value: bytes) -> None:
        try:
            length = int(value)
        except ValueError:
            return  # the parser refuses it
        if length > self.handler.max_body_bytes:
            raise _body_too_large(self.handler.max_body_bytes)

    def on_headers_complete(self) -> None:
        if self._expect_continue and self.idle:
            assert self.transport is not None
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.handler.max_body_bytes:
            raise _body_too_large(self.handler.max_body_bytes)
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        method = parser.get_method()
        body = b"".join(self._body) if self._body else b""
        correlation_id = self._correlation_id
        minted = correlation_id is None
        headers = self._headers
        if self._nominated:
            headers = [h for h in headers if h.split(b":", 1)[0].lower() not in self._nominated]
        head = [method, b" ", self._url, b" HTTP/1.1\r\n", *headers]
        if correlation_id is None:
            correlation_id = _mint_correlation_id()
            head.append(b"x-correlation-id: " + correlation_id + b"\r\n")
        if not self._has_host:
            head.append(b"host: agentkeel-router\r\n")
        if body or method in _BODY_METHODS:
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        request = Request(
            method=method,
            url=self._url,
            body=body,
            wire=b"".join(head) + body,
            keep_alive=parser.should_keep_alive(),
            correlation_id=correlation_id,
            minted=minted,
            authorization=self._authorization,
            traceparent=self._traceparent,
        )
        if self.idle:
            self.forwarding = True
            if self.handler.forward_now(self, request):
                return
            self.forwarding = False
        self.pending.append(request)
        self._kick()

    # -- serving -------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    @property
    def writing_paused(self) -> bool:
        """The client's send buffer is full (asyncio's high-water mark)."""
        return self._paused

    @property
    def idle(self) -> bool:
        return self.task is None and not self.forwarding and not self.pending

    def forwarded(self, request: Request) -> None:
        """A request ``forward_now`` started has been answered: serve the next one."""
        self.forwarding = False
        if not request.keep_alive or self.must_close:
            self.close()
        elif self.pending:
            self._kick()

    def finish_in_task(self, request: Request, work: Coroutine[Any, Any, None]) -> None:
        """A request ``forward_now`` started needs awaiting after all (a retry, a pin to
        drop): ``work`` finishes it in a task, which then serves the next requests."""
        self.forwarding = False
        self.task = asyncio.get_running_loop().create_task(self._serve(request, work))

    def _kick(self) -> None:
        if self.task is None and not self.forwarding and self.pending:
            self.task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(
        self, current: Request | None = None, work: Coroutine[Any, Any, None] | None = None
    ) -> None:
        try:
            if current is not None and work is not None:
                await work
                if not current.keep_alive or self.must_close:
                    self.close()
                    return
            while self.pending and not self.closed:
                request = self.pending.popleft()
                if request.canned is not None:
                    self.write(request.canned)
                    self.close()
                    return
                await self.handler.handle(self, request)
                if not request.keep_alive or self.must_close:
                    self.close()
                    return
        except Exception:
            logger.exception("router: a request handler failed; closing its connection")
            self.close()
        finally:
            self.task = None

    def _refuse(self, refused: _Refused) -> None:
        """Answer after the responses already owed, then close; read nothing more."""
        self.refused = True
        if self.transport is not None:
            self.transport.pause_reading()
        canned = Request(
            method=b"",
            url=b"",
            body=b"",
            wire=b"",
            keep_alive=False,
            correlation_id=b"",
            minted=True,
            authorization=None,
        )
        canned.canned = router_error(
            refused.status, refused.code, refused.message, keep_alive=False
        )
        self.pending.append(canned)
        self._kick()


# Correlation ids the router mints: a random per-process prefix and a counter, so a
# request costs no system call and ids stay unique across routers and restarts.
_ID_PREFIX: list[bytes] = []
_ID_COUNTER = itertools.count(1)


def _mint_correlation_id() -> bytes:
    if not _ID_PREFIX:
        _ID_PREFIX.append(os.urandom(8).hex().encode())
    return b"%s%016x" % (_ID_PREFIX[0], next(_ID_COUNTER))


def _duplicate(name: bytes) -> _Refused:
    # The router and the replica could read different copies (the router the last,
    # Starlette the first): refused, so both act on one identity and one id.
    return _Refused(
        400,
        "duplicate_header",
        f"The request has more than one {name.decode('latin-1')} header; send it once.",
    )


def _too_many_header_bytes(limit: int) -> _Refused:
    return _Refused(
        431,
        "headers_too_large",
        f"The request line and headers exceed {limit} bytes (router.max_header_bytes).",
    )


def _body_too_large(limit: int) -> _Refused:
    return _Refused(
        413,
        "input_too_large",
        f"The request body exceeds {limit} bytes (router.max_body_bytes).",
    )
