"""A stand-in agent replica for the router benchmark: the v1 shape, none of the work.

``python -m bench._replica_standin PORT VERSION`` serves, on raw asyncio with
``httptools`` (under uvloop when installed), just what a proxy in front of
replicas needs:

- ``POST /v1/sessions`` -> 201 ``{"session_id", "version"}``, as a replica answers;
- ``POST /v1/sessions/{id}/messages`` -> 200 small JSON;
- ``GET /v1/sessions/{id}`` -> 200 ``{"session_id", "version"}``;
- ``DELETE /v1/sessions/{id}`` -> 200;
- ``GET /ready`` and ``GET /health`` -> 200.

Each stand-in knows only the sessions it created and answers 404 for any
other, so a proxy that sends a turn to the wrong backend shows up as non-2xx
responses in the load generator's count. It costs a few microseconds per
request, so the figures measure the proxy in front of it, not a model.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from typing import cast

import httptools

SESSIONS_PREFIX = b"/v1/sessions"


def _response(status: int, reason: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class StandinReplica:
    """The state of one stand-in: its version and the sessions it created."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.sessions: set[str] = set()
        self._ready = _response(200, "OK", b'{"status":"ready"}')
        self._reply = _response(
            200, "OK", json.dumps({"reply": "ok", "turn": 1, "version": version}).encode()
        )
        self._unknown = _response(
            404,
            "Not Found",
            b'{"error":{"code":"session_not_found","message":"not a session of this replica"}}',
        )
        self._not_found = _response(
            404, "Not Found", b'{"error":{"code":"not_found","message":"no such path"}}'
        )

    def answer(self, method: bytes, path: bytes) -> bytes:
        """The whole response to one request (the request body is not needed)."""
        if path.startswith(SESSIONS_PREFIX):
            rest = path[len(SESSIONS_PREFIX) :]
            if rest in {b"", b"/"}:
                return self._create() if method == b"POST" else self._not_found
            session_id, _, tail = rest[1:].partition(b"/")
            sid = session_id.decode()
            if sid not in self.sessions:
                return self._unknown
            if tail == b"messages" and method == b"POST":
                return self._reply
            if not tail and method == b"GET":
                return self._session(sid, 200, "OK")
            if not tail and method == b"DELETE":
                self.sessions.discard(sid)
                return self._session(sid, 200, "OK")
            return self._not_found
        if path in {b"/ready", b"/health"}:
            return self._ready
        return self._not_found

    def _create(self) -> bytes:
        sid = uuid.uuid4().hex
        self.sessions.add(sid)
        return self._session(sid, 201, "Created")

    def _session(self, sid: str, status: int, reason: str) -> bytes:
        body = json.dumps({"session_id": sid, "version": self.version}).encode()
        return _response(status, reason, body)


class StandinProtocol(asyncio.Protocol):
    """One client connection: keep-alive, requests answered in order."""

    def __init__(self, replica: StandinReplica) -> None:
        self._replica = replica
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.write(_response(400, "Bad Request", b'{"error":{"code":"bad"}}'))
                self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_message_complete(self) -> None:
        path = self._url.partition(b"?")[0]
        self._url = b""
        answer = self._replica.answer(self._parser.get_method(), path)
        if self._transport is not None:
            self._transport.write(answer)
            if not self._parser.should_keep_alive():
                self._transport.close()


async def serve(port: int, version: str) -> None:
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    replica = StandinReplica(version)
    server = await loop.create_server(
        lambda: StandinProtocol(replica), "127.0.0.1", port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()


def main() -> None:
    port, version = int(sys.argv[1]), sys.argv[2]
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        asyncio.run(serve(port, version))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(port, version))


if __name__ == "__main__":
    main()
