"""keel up's control channel: HTTP on a real unix socket, mode 0600, over fake replicas."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from agentkeel.errors import ConfigError
from agentkeel.ops.control import bind_control_socket
from tests.ops.fake_stack import FakeStack, fake_stack


@asynccontextmanager
async def control_client(stack: FakeStack) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.AsyncHTTPTransport(uds=str(stack.socket_path))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://keel-up", timeout=60, trust_env=False
    ) as client:
        yield client


async def test_the_socket_is_private_and_lists_the_replicas(tmp_path: Path) -> None:
    """The socket file has mode 0600 (the file mode is the authentication); /health answers
    and /replicas lists keel up's own replica with its version and state."""
    async with fake_stack(tmp_path) as stack:
        mode = os.stat(stack.socket_path).st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        async with control_client(stack) as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            listed = (await client.get("/replicas")).json()["replicas"]
        assert [(r["name"], r["version"], r["state"]) for r in listed] == [
            ("replica-1", "v1", "ready")
        ]
        assert listed[0]["url"].startswith("http://127.0.0.1:")
    assert not stack.socket_path.exists()


async def test_start_then_stop_a_replica_over_the_socket(tmp_path: Path) -> None:
    """POST /replicas answers 201 with ready replicas; POST /replicas/{name}/stop drains one."""
    async with fake_stack(tmp_path) as stack, control_client(stack) as client:
        started = await client.post("/replicas", json={"version": "v2", "count": 1})
        assert started.status_code == 201, started.text
        [info] = started.json()["replicas"]
        assert (info["name"], info["version"], info["state"]) == ("agent-v2-1", "v2", "ready")
        stopped = await client.post("/replicas/agent-v2-1/stop", json={"drain": True})
        assert stopped.status_code == 200, stopped.text
        assert stopped.json() == {"stopped": "agent-v2-1"}
        names = [r["name"] for r in (await client.get("/replicas")).json()["replicas"]]
        assert names == ["replica-1"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "words"),
    [
        ("POST", "/replicas", b"{not json", 400, "invalid_json", ""),
        ("POST", "/replicas", b"", 400, "", ""),
        ("POST", "/replicas", b'{"count": 1}', 422, "invalid_request", "version"),
        ("POST", "/replicas", b'{"version": "v2", "color": "red"}', 422, "invalid_request", ""),
        ("POST", "/replicas", b'{"version": "v2", "count": "two"}', 422, "invalid_request", ""),
        (
            "POST",
            "/replicas",
            b'{"version": "v2", "env": {"HOME": "/tmp"}}',
            422,
            "invalid_request",
            "only KEEL_",
        ),
        (
            "POST",
            "/replicas",
            b'{"version": "v2", "env": {"KEEL_X__AUTH_TOKEN": "t"}}',
            422,
            "invalid_request",
            "looks like a secret",
        ),
        ("POST", "/replicas/ghost/stop", b"{}", 404, "not_found", "No replica named 'ghost'"),
        ("POST", "/replicas/memory/stop", b"", 404, "not_found", "replicas: replica-1"),
        ("POST", "/replicas/replica-1/stop", b'{"drain": "soon"}', 422, "invalid_request", ""),
        ("GET", "/nowhere", b"", 404, "not_found", ""),
        ("DELETE", "/replicas", b"", 405, "method_not_allowed", ""),
    ],
)
async def test_bad_requests_get_a_clear_4xx(
    tmp_path: Path, method: str, path: str, body: bytes, status: int, code: str, words: str
) -> None:
    """Malformed JSON, missing or unknown fields, non-KEEL or secret env, unknown names and
    routes: each a JSON error with its status, and nothing starts or stops."""
    async with fake_stack(tmp_path) as stack, control_client(stack) as client:
        response = await client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == status, response.text
        error = response.json()["error"]
        if code:
            assert error["code"] == code
        assert words in error["message"]
        assert [s.name for s in stack.supervisor.status()] == ["replica-1"]


async def test_a_second_keel_up_cannot_take_a_socket_in_use(tmp_path: Path) -> None:
    """A control socket that still answers is refused (one data dir, one stack)."""
    async with fake_stack(tmp_path) as stack:
        with pytest.raises(ConfigError, match="Another keel up answers"):
            bind_control_socket(stack.socket_path)


def test_a_stale_socket_is_replaced_and_other_files_are_refused(tmp_path: Path) -> None:
    """A socket file nobody listens on (a keel up that died) is replaced; a regular file at
    the path, or a path too long for a unix socket, is a ConfigError naming it."""
    path = tmp_path / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    sock = bind_control_socket(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        sock.close()
    other = tmp_path / "not-a-socket"
    other.write_text("x")
    with pytest.raises(ConfigError, match="is not a socket"):
        bind_control_socket(other)
    deep = tmp_path / ("d" * 120) / "control.sock"
    with pytest.raises(ConfigError, match="shorter path"):
        bind_control_socket(deep)
