"""The added cost of one MCP tool call through the guarded tools client.

Runs the tool server (``python -m agentkeel.tools.serve``) in its own process
and times, from this process, the same function three ways:

- in-process: ``calculator("17 * 23 + 4")`` called directly;
- local guarded: through ``GuardedToolsClient`` over a local ``LocalToolSet``
  (breaker, rate limit, budget, cap; no network);
- MCP guarded: through ``GuardedToolsClient`` over ``McpToolSource`` to the
  tool server (one HTTP round trip per call, loopback).

Both guarded clients are built by ``build_tools_client`` as an agent replica
builds them, with the rate limit and the session budget on (raised so that
they never refuse a bench call). The MCP client authenticates as a replica
does: a bearer token on every request and a caller assertion signed for every
call, which the tool server verifies.

Prints p50 and p99 per way, the added cost of the MCP call over the
in-process one (target: at most 2 ms p50 added), and the CPU time one MCP call
costs this process and the tool server. On a machine whose cores other work
shares, the CPU figures move much less from run to run than the latencies.
Never asserts timing.

    python -m bench.tool_call
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from agentkeel.config.identity import IdentitySettings
from agentkeel.config.tools import McpServerSettings, ToolsSettings
from agentkeel.identity import generate_key_pair
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.metrics import ToolMetrics
from agentkeel.tools.builtins import builtin_toolset, calculator
from agentkeel.tools.client import GuardedToolsClient, build_tools_client
from agentkeel.tools.types import ToolContext, ToolSet
from bench._common import (
    Figure,
    cpu_seconds,
    free_port,
    parse_bench_args,
    percentile,
    print_figures,
    server_process,
)

WARMUP = 50
CALLS = 1000
EXPRESSION = "17 * 23 + 4"
CONTEXT = ToolContext(agent_id="bench", session_id="bench", user_id="bench", turn=1)


async def _time(call: Callable[[], Awaitable[object]], n: int) -> list[float]:
    for _ in range(WARMUP):
        await call()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


@dataclass(frozen=True, slots=True)
class _Credentials:
    token_file: Path
    tokens_file: Path
    signing_key_file: Path
    public_key_file: Path


def _write_credentials(directory: Path) -> _Credentials:
    """A replica token granted every tool and a caller key pair, as keel up makes them."""
    token = secrets.token_urlsafe(32)
    pair = generate_key_pair()
    files = _Credentials(
        token_file=directory / "tools_agent_token",
        tokens_file=directory / "tools_tokens.yaml",
        signing_key_file=directory / "caller_signing_key",
        public_key_file=directory / "caller_signing_key.pub",
    )
    files.token_file.write_text(token)
    files.tokens_file.write_text(yaml.safe_dump({"tokens": {token: {"tools": ["*"]}}}))
    files.signing_key_file.write_text(pair.private_pem)
    files.public_key_file.write_text(pair.public_pem)
    return files


def _client(
    *,
    local: ToolSet | None,
    servers: list[McpServerSettings],
    identity: IdentitySettings | None = None,
) -> GuardedToolsClient:
    unlimited = 10 * (WARMUP + CALLS)
    settings = ToolsSettings(
        servers=servers, calls_per_minute=unlimited, session_call_budget=unlimited
    )
    return build_tools_client(
        settings,
        local=local,
        metrics=ToolMetrics(CollectorRegistry()),
        identity=identity,
        secrets=SecretResolver(),
    )


@dataclass(frozen=True, slots=True)
class _Measured:
    samples: dict[str, list[float]]
    client_cpu_s: float
    """CPU seconds of this process per MCP call."""
    server_cpu_s: float
    """CPU seconds of the tool server per MCP call."""


async def _measure(url: str, server_pid: int, credentials: _Credentials) -> _Measured:
    async def direct() -> object:
        return calculator(EXPRESSION)

    local = _client(local=builtin_toolset(["calculator"]), servers=[])
    server = McpServerSettings(
        name="tools", url=url, token_file=credentials.token_file, audience="agentkeel-tools"
    )
    remote = _client(
        local=None,
        servers=[server],
        identity=IdentitySettings(signing_key_file=credentials.signing_key_file),
    )
    await local.list_tools()
    await remote.list_tools()

    async def via_local() -> object:
        return await local.call("calculator", {"expression": EXPRESSION}, context=CONTEXT)

    async def via_mcp() -> object:
        result = await remote.call("calculator", {"expression": EXPRESSION}, context=CONTEXT)
        assert result.content == "395", result
        return result

    try:
        samples = {
            "in-process": await _time(direct, CALLS),
            "local guarded": await _time(via_local, CALLS),
        }
        client_cpu, server_cpu = time.process_time(), cpu_seconds(server_pid)
        samples["MCP guarded"] = await _time(via_mcp, CALLS)
        calls = WARMUP + CALLS
        return _Measured(
            samples=samples,
            client_cpu_s=(time.process_time() - client_cpu) / calls,
            server_cpu_s=(cpu_seconds(server_pid) - server_cpu) / calls,
        )
    finally:
        await local.aclose()
        await remote.aclose()


def main() -> None:
    """Start the tool server, time the three ways, print the figures."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as directory:
        credentials = _write_credentials(Path(directory))
        env = {
            "KEEL_TOOLS__SERVER__PORT": str(port),
            "KEEL_LOG_LEVEL": "warning",
            "KEEL_TOOLS__SERVER__TOKENS_FILE": str(credentials.tokens_file),
            "KEEL_IDENTITY__PUBLIC_KEY_FILE": str(credentials.public_key_file),
        }
        with server_process(
            [sys.executable, "-m", "agentkeel.tools.serve"],
            ready_url=f"{base}/ready",
            base_url=base,
            env=env,
        ) as server:
            measured = asyncio.run(_measure(f"{base}/mcp", server.pid, credentials))
    samples = measured.samples
    figures: list[Figure] = []
    for name, values in samples.items():
        figures.append(Figure(f"{name} p50", percentile(values, 50) * 1000, "ms"))
        figures.append(Figure(f"{name} p99", percentile(values, 99) * 1000, "ms"))
    base50 = percentile(samples["in-process"], 50)
    base99 = percentile(samples["in-process"], 99)
    figures.append(
        Figure(
            "MCP call added p50",
            (percentile(samples["MCP guarded"], 50) - base50) * 1000,
            "ms",
            "target <= 2 ms",
        )
    )
    figures.append(
        Figure("MCP call added p99", (percentile(samples["MCP guarded"], 99) - base99) * 1000, "ms")
    )
    figures.append(Figure("MCP call CPU, client", measured.client_cpu_s * 1000, "ms", "per call"))
    figures.append(
        Figure("MCP call CPU, tool server", measured.server_cpu_s * 1000, "ms", "per call")
    )
    print_figures(f"One tool call, {CALLS} calls each (calculator)", figures)


if __name__ == "__main__":
    parse_bench_args(__spec__.name, __doc__)
    main()
