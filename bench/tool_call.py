"""The added cost of one MCP tool call through the guarded tools client.

Runs the tool server (``python -m agentkeel.tools.serve``) in its own process
and times, from this process, the same function three ways:

- in-process: ``calculator("17 * 23 + 4")`` called directly;
- local guarded: through ``GuardedToolsClient`` over a local ``LocalToolSet``
  (breaker, rate limit, budget, cap; no network);
- MCP guarded: through ``GuardedToolsClient`` over ``McpToolSource`` to the
  tool server (one HTTP round trip per call, loopback).

Prints p50 and p99 per way and the added cost of the MCP call over the
in-process one (target: at most 2 ms p50 added). Never asserts timing.

    python -m bench.tool_call
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from agentkeel.telemetry.metrics import ToolMetrics
from agentkeel.tools.builtins import builtin_toolset, calculator
from agentkeel.tools.client import GuardedToolsClient
from agentkeel.tools.composite import CompositeToolSet
from agentkeel.tools.mcp_source import McpToolSource
from agentkeel.tools.types import ToolContext
from bench._common import Figure, free_port, percentile, print_figures, server_process

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


def _client(source_name: str, source: object) -> GuardedToolsClient:
    return GuardedToolsClient(
        tools=CompositeToolSet([(source_name, source)]),  # type: ignore[list-item]
        metrics=ToolMetrics(CollectorRegistry()),
        call_timeout_s=10,
        max_result_chars=16_000,
    )


async def _measure(url: str) -> dict[str, list[float]]:
    async def direct() -> object:
        return calculator(EXPRESSION)

    local = _client("local", builtin_toolset(["calculator"]))
    source = McpToolSource(name="tools", url=url)
    remote = _client("tools", source)
    await local.list_tools()
    await remote.list_tools()

    async def via_local() -> object:
        return await local.call("calculator", {"expression": EXPRESSION}, context=CONTEXT)

    async def via_mcp() -> object:
        result = await remote.call("calculator", {"expression": EXPRESSION}, context=CONTEXT)
        assert result.content == "395", result
        return result

    try:
        return {
            "in-process": await _time(direct, CALLS),
            "local guarded": await _time(via_local, CALLS),
            "MCP guarded": await _time(via_mcp, CALLS),
        }
    finally:
        await remote.aclose()


def main() -> None:
    """Start the tool server, time the three ways, print the figures."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"KEEL_TOOLS__SERVER__PORT": str(port), "KEEL_LOG_LEVEL": "warning"}
    with server_process(
        [__import__("sys").executable, "-m", "agentkeel.tools.serve"],
        ready_url=f"{base}/ready",
        base_url=base,
        env=env,
    ):
        samples = asyncio.run(_measure(f"{base}/mcp"))
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
    print_figures(f"One tool call, {CALLS} calls each (calculator)", figures)


if __name__ == "__main__":
    main()
