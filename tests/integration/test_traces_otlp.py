"""Traces end to end: a tool server and an agent replica as real processes with
``tracing.otlp_endpoint`` set to a real OTLP/HTTP receiver over a socket. Turns sent with a
trusted client's ``traceparent`` (``tracing.trust_incoming``) become one trace each from the
client's span to the tool server's span, and every span is exported by the time the
processes have stopped."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from agentkeel.testing.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.integration.test_mcp_correlation import TOOL, Stack

pytestmark = pytest.mark.slow

TURNS = 2
CLIENT_SPANS = [f"{n:016x}" for n in (0xA1, 0xA2)]
CLIENT_TRACES = [f"{n:032x}" for n in (0x5EED01, 0x5EED02)]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().serving() as running:
        yield running


@pytest.fixture
async def stack(tmp_path: Path, receiver: OtlpReceiver) -> AsyncIterator[Stack]:
    """The tool server, then a replica that uses it, both exporting to ``receiver``."""
    running = Stack(tmp_path)
    try:
        await running.start_tools_and_agent(
            turns=TURNS,
            env={"KEEL_TRACING__OTLP_ENDPOINT": receiver.endpoint},
            agent_env={
                "KEEL_TRACING__TRUST_INCOMING": "true",
                "KEEL_SERVER__REPLICA_ID": "replica-t1",
            },
        )
        yield running
    finally:
        running.stop()


async def stop_gracefully(stack: Stack) -> None:
    """SIGTERM the replica, then the tool server; each must exit 0."""
    for name in ("agent", "tools"):
        process = stack.processes[name]
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0, f"{name} exited {code}:\n" + "\n".join(
            json.dumps(line) for line in stack.log_lines(name)[-20:]
        )


def ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[str]:
    """The names of ``span``'s ancestors that were received, nearest first."""
    names = []
    parent = span.parent_span_id
    while parent is not None and parent in by_id:
        names.append(by_id[parent].name)
        parent = by_id[parent].parent_span_id
    return names


async def test_turns_become_traces_from_the_client_to_the_tool_server(
    stack: Stack, receiver: OtlpReceiver
) -> None:
    """Each turn: invoke_agent (INTERNAL) under the client's span, two chat spans and an
    execute_tool under it, and the tool server's execute_tool (SERVER) further down the
    same trace; resources name each service; nothing is lost at shutdown."""
    sessions = []
    async with httpx.AsyncClient(base_url=stack.agent_url, timeout=30) as client:
        created = await client.post("/v1/sessions", json={"user_id": "erin"})
        session_id = created.json()["session_id"]
        for n in range(TURNS):
            response = await client.post(
                f"/v1/sessions/{session_id}/messages",
                json={"content": f"what is six times {n + 1}?"},
                headers={
                    "traceparent": f"00-{CLIENT_TRACES[n]}-{CLIENT_SPANS[n]}-01",
                    "X-Correlation-ID": f"corr-trace-{n}",
                },
            )
            assert response.status_code == 200, response.text
            assert [c["status"] for c in response.json()["tool_calls"]] == ["success"]
        sessions.append(session_id)
    await stop_gracefully(stack)

    spans = await asyncio.to_thread(
        receiver.wait_for,
        lambda got: (
            sum(s.name == "execute_tool calculator" for s in got) >= TURNS
            and sum(s.name == "invoke_agent default" for s in got) >= TURNS
        ),
    )
    by_id = {s.span_id: s for s in spans}
    turns = sorted(
        (s for s in spans if s.name == "invoke_agent default"),
        key=lambda s: CLIENT_TRACES.index(s.trace_id),
    )
    assert len(turns) == TURNS
    for n, turn in enumerate(turns):
        assert turn.kind == "INTERNAL"
        assert (turn.trace_id, turn.parent_span_id) == (CLIENT_TRACES[n], CLIENT_SPANS[n])
        assert turn.attributes["gen_ai.conversation.id"] == sessions[0]
        assert turn.attributes["keel.correlation_id"] == f"corr-trace-{n}"
        assert turn.attributes["keel.turn"] == n + 1
        assert turn.resource["service.name"] == "agent"
        assert turn.resource["service.instance.id"] == "replica-t1"
        assert turn.schema_url.endswith("/1.37.0")
        in_trace = [s for s in spans if s.trace_id == turn.trace_id]
        chats = [s for s in in_trace if s.name.startswith("chat ")]
        assert len(chats) == 2
        assert {s.parent_span_id for s in chats} == {turn.span_id}
        assert all(s.kind == "CLIENT" for s in chats)
        (replica_tool,) = [s for s in in_trace if s.name == f"execute_tool {TOOL}"]
        assert replica_tool.parent_span_id == turn.span_id
        (server_tool,) = [s for s in in_trace if s.name == "execute_tool calculator"]
        assert server_tool.kind == "SERVER"
        assert server_tool.resource["service.name"] == "tools"
        assert server_tool.attributes["keel.correlation_id"] == f"corr-trace-{n}"
        # The replica's execute_tool is an ancestor (the MCP SDK's client span may sit
        # between them, once the replica's provider is the process's).
        chain = ancestors(server_tool, by_id)
        assert f"execute_tool {TOOL}" in chain and chain[-1] == "invoke_agent default", chain
