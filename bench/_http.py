"""A small HTTP/1.1 client for the load generator: one keep-alive connection per
simulated user, parsed with ``httptools`` (the parser uvicorn itself uses).

Why not ``httpx``: on two shared cores the load generator competes with the
server for CPU, and ``httpx`` spends about 0.3 ms of CPU per request on its
pool, headers and response objects, about half what a whole agent turn costs
the server. This client sends a real request over real loopback TCP and reads
the whole response (status, headers, body) with the same parser the server
uses, for roughly a tenth of that. It supports exactly what the benchmarks
send: small JSON bodies, ``Content-Length`` responses, one request at a time.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, cast

import httptools


@dataclass(frozen=True, slots=True)
class Response:
    """Status code and body of one response."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests on it go one after another."""

    def __init__(self, host: str, port: int) -> None:
        self._host_header = f"Host: {host}:{port}\r\n".encode()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[Response] | None = None
        self._closed_exc: Exception | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        """Connect to ``host:port``."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: cls(host, port), host, port)
        return protocol

    async def request(self, method: str, path: str, body: bytes | None = None) -> Response:
        """Send one request (a JSON body if given) and wait for the whole response."""
        if self._transport is None or self._closed_exc is not None:
            raise ConnectionError(f"connection closed: {self._closed_exc}")
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._host_header
        if body is not None:
            head += (
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n"
            )
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(head + b"\r\n" + (body or b""))
        return await waiter

    async def post_json(self, path: str, payload: Any) -> Response:
        return await self.request("POST", path, json.dumps(payload).encode())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc or 'closed by the server'}"))

    def _fail(self, exc: Exception) -> None:
        self._closed_exc = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # -- httptools callbacks ---------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        body = b"".join(self._chunks)
        self._chunks = []
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._parser.get_status_code(), body))
