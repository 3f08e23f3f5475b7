"""`keel serve tools` as a real process, called by the plain MCP SDK client the way an
outsider and a replica would: tokens, forged callers, signed callers, and its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import mcp_types as mcp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from agentkeel.identity import generate_key_pair, sign_caller_assertion
from agentkeel.tools.server import CALLER_META_KEY
from tests.integration.test_drain import free_port, wait_ready
from tests.tools.credentials import (
    AUDIENCE,
    ISSUER,
    TOKEN,
    Credentials,
    assertion_in,
    bearer,
    caller,
    write_credentials,
)

pytestmark = pytest.mark.slow


@dataclass
class ToolServer:
    url: str
    log: Path
    credentials: Credentials


@pytest.fixture
async def tool_server(tmp_path: Path) -> AsyncIterator[ToolServer]:
    """keel serve tools with a tokens file, the public key and the sample tools, at debug."""
    credentials = write_credentials(tmp_path / "credentials")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "KEEL_LOG_LEVEL": "debug",
            "KEEL_DATA_DIR": str(tmp_path),
            "KEEL_SECRETS_DIR": str(tmp_path / "no-secrets"),
            "KEEL_TOOLS__SERVER__PORT": str(port),
            "KEEL_TOOLS__SERVER__TOKENS_FILE": str(credentials.tokens_file),
            "KEEL_IDENTITY__PUBLIC_KEY_FILE": str(credentials.public_key_file),
        }
    )
    log = tmp_path / "tools.log"
    process = _start(env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            await wait_ready(client, process)
        yield ToolServer(url=url, log=log, credentials=credentials)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "agentkeel.cli.main", "serve", "tools"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*command, "--tools", "tests.tools.sample_tools"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def text(result: mcp.CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, mcp.TextContent)
    return block.text


async def test_an_outsider_without_a_token_is_refused(tool_server: ToolServer) -> None:
    """The plain SDK client without a token cannot initialize: 401 naming the header."""
    with pytest.raises(BaseException) as refused:
        async with (
            streamable_http_client(f"{tool_server.url}/mcp") as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
    error = refused.value
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    assert isinstance(error, MCPError) and "Authorization: Bearer" in error.message


async def test_token_holders_get_only_what_a_signed_caller_proves(
    tool_server: ToolServer,
) -> None:
    """With a valid token: calculator works with no caller; whoami with a forged caller
    (plain fields, or a JWT from another key) is refused; with a replica's signed caller
    it answers for that user. The token, keys and assertions never reach the log."""
    key = tool_server.credentials.key
    other = generate_key_pair()
    forged_jwt = sign_caller_assertion(
        _private(other.private_pem),
        issuer=ISSUER,
        audience=AUDIENCE,
        tool="whoami",
        agent_id="support",
        user_id="bob",
        session_id="s1",
        turn=1,
    )
    signed = caller(key, tool="whoami", user="alice")
    async with (
        bearer(TOKEN) as http,
        streamable_http_client(f"{tool_server.url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert text(await session.call_tool("calculator", {"expression": "6 * 7"})) == "42"
        for forged in ({"agent_id": "support", "user_id": "bob"}, forged_jwt):
            meta = cast(mcp.RequestParamsMeta, {CALLER_META_KEY: forged})
            with pytest.raises(MCPError, match="caller"):
                await session.call_tool("whoami", {}, meta=meta)
        assert text(await session.call_tool("whoami", {}, meta=signed)) == "support/alice"

    lines = [
        json.loads(raw)
        for raw in tool_server.log.read_text(errors="replace").splitlines()
        if raw.startswith("{")
    ]
    refusals = [line for line in lines if line["message"].startswith("tool call whoami refused")]
    assert len(refusals) == 2
    logged = tool_server.log.read_text(errors="replace")
    credentials = tool_server.credentials
    for secret in (
        TOKEN,
        credentials.private_pem.splitlines()[1],
        credentials.public_pem.splitlines()[1],
        forged_jwt,
        assertion_in(signed),
    ):
        assert secret not in logged


def _private(pem: str) -> Ed25519PrivateKey:
    key = load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key
