"""What the router tests route to: real agent replicas under uvicorn, and small raw
HTTP backends that misbehave on purpose (refuse, drain, drop, stream on cue)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.runtime.app import create_app
from tests.integration.test_drain import free_port

# -- real agent replicas --------------------------------------------------------------


@dataclass
class AgentReplica:
    url: str
    version: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def start_agent_replica(
    directory: Path,
    *,
    version: str,
    store: Path,
    script: str = "on_end: echo\nsteps: []\n",
    tools: list[str] | None = None,
) -> AgentReplica:
    """An agent replica of ``version`` with a scripted model, on a free port, in a thread;
    replicas given the same ``store`` share their sessions."""
    directory.mkdir(parents=True, exist_ok=True)
    script_file = directory / f"script-{version}-{time.monotonic_ns()}.yaml"
    script_file.write_text(script)
    settings = load_settings(
        layers=[],
        overrides={
            "data_dir": str(directory),
            "secrets_dir": None,
            "models": [{"name": "scripted", "kind": "scripted", "script": str(script_file)}],
            "agent": {"tools": tools or [], "version": version},
            "store": {"url": f"sqlite:///{store}"},
        },
    ).settings
    app = create_app(settings, registry=CollectorRegistry(), run_sweeper=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "replica did not start"
        time.sleep(0.01)
    return AgentReplica(f"http://127.0.0.1:{port}", version, server, thread)


@contextlib.contextmanager
def agent_replicas(
    directory: Path,
    versions: list[str],
    *,
    script: str = "on_end: echo\nsteps: []\n",
    tools: list[str] | None = None,
) -> Iterator[list[AgentReplica]]:
    """Replicas of ``versions`` (one each, in order) sharing one session store."""
    store = directory / "sessions.db"
    started: list[AgentReplica] = []
    try:
        for index, version in enumerate(versions):
            started.append(
                start_agent_replica(
                    directory / f"r{index}",
                    version=version,
                    store=store,
                    script=script,
                    tools=tools,
                )
            )
        yield started
    finally:
        for replica in started:
            replica.stop()


# -- raw backends ---------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Respond = Callable[[Seen, asyncio.StreamWriter], Awaitable[bool]]
"""Write the answer to ``Seen``; return False to close the connection."""


@dataclass
class RawBackend:
    """An HTTP/1.1 server that records what it got and answers with ``respond``."""

    respond: Respond
    ready_status: int = 200
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1_requests(self) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.startswith("/v1/")]

    async def start(self) -> RawBackend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection (later connects are refused)."""
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            while True:
                seen = await read_request(reader)
                if seen is None:
                    return
                self.seen.append(seen)
                if seen.path == "/ready":
                    await write_json(writer, self.ready_status, b'{"status":"x"}')
                    continue
                if not await self.respond(seen, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    return Seen(method, path, headers, body)


async def write_json(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, extra: bytes = b""
) -> None:
    writer.write(
        b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
        % (status, len(body), extra, body)
    )
    await writer.drain()


async def echo(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """Answers 200 with the request body, and its correlation id in a header."""
    cid = seen.headers.get("x-correlation-id", "").encode()
    await write_json(writer, 200, seen.body, extra=b"x-seen-correlation-id: " + cid + b"\r\n")
    return True


def created(session_id: str) -> Respond:
    """Answers every POST /v1/sessions with 201 and ``session_id``, anything else 200."""

    async def respond(seen: Seen, writer: asyncio.StreamWriter) -> bool:
        if seen.method == "POST" and seen.path == "/v1/sessions":
            body = b'{"session_id":"%s","version":"raw"}' % session_id.encode()
            await write_json(writer, 201, body)
        else:
            await write_json(writer, 200, b'{"reply":"ok"}')
        return True

    return respond


async def draining(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    await write_json(
        writer,
        503,
        b'{"error":{"code":"draining","message":"This replica is draining."}}',
        extra=b"retry-after: 1\r\n",
    )
    return True


async def drop(seen: Seen, writer: asyncio.StreamWriter) -> bool:
    """Reads the request, then closes the connection without a word."""
    return False
