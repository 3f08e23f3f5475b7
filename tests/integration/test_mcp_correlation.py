"""An agent replica and a tool server as real processes: one correlation id in both
logs for the same tool call, and a tool server that goes away mid-conversation."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
import yaml

from tests.integration.test_drain import free_port, wait_ready
from tests.tools.credentials import TOKEN, write_credentials

pytestmark = pytest.mark.slow

TOOL = "remote_calculator"
"""The tool server's calculator as the agent sees it: the server's tools get a
prefix, so they do not clash with the replica's own built-in calculator."""

FAILURE_THRESHOLD = 2


@dataclass
class Stack:
    """A tool server and an agent replica that uses it, each logging to a file."""

    tmp_path: Path
    tools_port: int = field(default_factory=free_port)
    agent_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, BinaryIO] = field(default_factory=dict)

    @property
    def agent_url(self) -> str:
        return f"http://127.0.0.1:{self.agent_port}"

    @property
    def tools_url(self) -> str:
        return f"http://127.0.0.1:{self.tools_port}"

    def start(self, name: str, module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        base.update({"PYTHONUNBUFFERED": "1", "KEEL_LOG_LEVEL": "info", **env})
        log = (self.tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=base, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes[name] = process
        self.logs[name] = log
        return process

    async def start_tools_and_agent(
        self,
        *,
        turns: int,
        env: Mapping[str, str] | None = None,
        agent_env: Mapping[str, str] | None = None,
    ) -> None:
        """The tool server (ready), then a replica over ``write_script(turns)`` that
        discovered its tools (ready); ``env`` goes to both, ``agent_env`` to the replica."""
        credentials = write_credentials(self.tmp_path / "credentials")
        token_file = credentials.directory / "tools_agent_token"
        token_file.write_text(TOKEN + "\n")
        tools = self.start(
            "tools",
            "agentkeel.tools.serve",
            {
                **(env or {}),
                "KEEL_TOOLS__SERVER__PORT": str(self.tools_port),
                "KEEL_TOOLS__SERVER__TOKENS_FILE": str(credentials.tokens_file),
                "KEEL_IDENTITY__PUBLIC_KEY_FILE": str(credentials.public_key_file),
                "KEEL_DATA_DIR": str(self.tmp_path),
            },
        )
        async with httpx.AsyncClient(base_url=self.tools_url, timeout=10) as client:
            await wait_ready(client, tools)
        script = write_script(self.tmp_path / "script.yaml", turns=turns)
        agent = self.start(
            "agent",
            "agentkeel.runtime.serve",
            {
                **(env or {}),
                **(agent_env or {}),
                "KEEL_MODELS": json.dumps(
                    [{"name": "scripted", "kind": "scripted", "script": str(script)}]
                ),
                "KEEL_TOOLS__SERVERS": json.dumps(
                    [
                        {
                            "name": "tools",
                            "url": f"{self.tools_url}/mcp",
                            "prefix": "remote_",
                            "token_file": str(token_file),
                            "audience": "agentkeel-tools",
                        }
                    ]
                ),
                "KEEL_IDENTITY__SIGNING_KEY_FILE": str(credentials.signing_key_file),
                "KEEL_AGENT__TOOLS": json.dumps([TOOL]),
                "KEEL_STORE__URL": f"sqlite:///{self.tmp_path / 'sessions.db'}",
                "KEEL_DATA_DIR": str(self.tmp_path),
                "KEEL_SERVER__PORT": str(self.agent_port),
            },
        )
        async with httpx.AsyncClient(base_url=self.agent_url, timeout=10) as client:
            await wait_ready(client, agent)

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        """The JSON lines of a process's log (anything else it printed is skipped)."""
        lines = []
        for raw in (self.tmp_path / f"{name}.log").read_text(errors="replace").splitlines():
            try:
                parsed = json.loads(raw)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                lines.append(parsed)
        return lines

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for log in self.logs.values():
            log.close()


def write_script(path: Path, turns: int) -> Path:
    """A scripted model that, in every turn, calls the calculator once, then replies."""
    steps: list[dict[str, Any]] = []
    for n in range(1, turns + 1):
        steps.append({"tool_calls": [{"tool": TOOL, "arguments": {"expression": f"6 * {n}"}}]})
        steps.append({"say": f"Reply {n}."})
    path.write_text(yaml.safe_dump({"on_end": "echo", "steps": steps}))
    return path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The tool server (ready), then a replica that discovered its tools (ready)."""
    running = Stack(tmp_path)
    try:
        await running.start_tools_and_agent(
            turns=6,
            agent_env={"KEEL_TOOLS__BREAKER__FAILURE_THRESHOLD": str(FAILURE_THRESHOLD)},
        )
        yield running
    finally:
        running.stop()


async def lines_with(stack: Stack, name: str, correlation_id: str) -> list[dict[str, Any]]:
    """The log lines of ``name`` that carry ``correlation_id`` (waiting briefly for them)."""
    deadline = time.monotonic() + 5
    while True:
        found = [
            line for line in stack.log_lines(name) if line.get("correlation_id") == correlation_id
        ]
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_one_correlation_id_in_the_agent_and_tool_server_logs(stack: Stack) -> None:
    """A turn sent with X-Correlation-ID calls the tool server's calculator; the same id
    is on the agent's log lines for the turn and on the tool server's line for the call."""
    correlation_id = f"corr-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=stack.agent_url, timeout=30) as client:
        created = await client.post("/v1/sessions", json={"user_id": "erin"})
        session_id = created.json()["session_id"]
        response = await client.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": "what is six times one?"},
            headers={"X-Correlation-ID": correlation_id},
        )
    assert response.status_code == 200, response.text
    assert response.headers["x-correlation-id"] == correlation_id
    body = response.json()
    assert body["reply"] == "Reply 1."
    assert [(c["name"], c["status"]) for c in body["tool_calls"]] == [(TOOL, "success")]

    agent_lines = await lines_with(stack, "agent", correlation_id)
    assert agent_lines, "no agent log line carries the correlation id"
    assert {line["service"] for line in agent_lines} == {"agent"}
    assert any(line.get("session_id") == session_id for line in agent_lines)
    # The MCP SDK's HTTP client would add a line per tool call at INFO.
    assert not [line for line in stack.log_lines("agent") if line["logger"].startswith("httpx")]

    tool_lines = await lines_with(stack, "tools", correlation_id)
    calls = [line for line in tool_lines if line["message"].startswith("tool call calculator")]
    assert len(calls) == 1, tool_lines
    (call,) = calls
    assert call["service"] == "tools"
    assert (call["tool"], call["status"]) == ("calculator", "success")
    # The caller the tool server logs is the one the replica's signed assertion names.
    assert (call["session_id"], call["agent_id"], call["turn"]) == (session_id, "default", 1)


async def test_tool_server_stopped_mid_conversation(stack: Stack) -> None:
    """Once the tool server is gone, every turn still ends with the model's reply, and the
    tool result the model reads (streamed to the user too) says the tool is unavailable;
    after failure_threshold failed calls the breaker is open (agent_tool_breaker_state 2)
    and the next call is refused without trying the server."""
    outage_turns = list(range(2, FAILURE_THRESHOLD + 3))
    async with httpx.AsyncClient(base_url=stack.agent_url, timeout=30) as client:
        session_id = (await client.post("/v1/sessions", json={"user_id": "erin"})).json()[
            "session_id"
        ]
        path = f"/v1/sessions/{session_id}/messages"
        first = await client.post(path, json={"content": "six times one?"})
        assert [c["status"] for c in first.json()["tool_calls"]] == ["success"]

        tools = stack.processes["tools"]
        tools.send_signal(signal.SIGTERM)
        await asyncio.to_thread(tools.wait, 15)

        results: list[dict[str, Any]] = []
        replies: list[dict[str, Any]] = []
        for n in outage_turns:
            streamed = await client.post(
                path,
                json={"content": "and now?"},
                headers={"Accept": "text/event-stream"},
            )
            assert streamed.status_code == 200, streamed.text
            events = sse_events(streamed.text)
            results.extend(data for event, data in events if event == "tool_result")
            (reply,) = [data for event, data in events if event == "reply"]
            assert reply["turn"] == n
            replies.append(reply)
        metrics = (await client.get("/metrics")).text

    assert [reply["reply"] for reply in replies] == [f"Reply {n}." for n in outage_turns]
    assert [r["status"] for r in results] == ["failure"] * len(outage_turns)
    for result in results:
        assert f"Tool '{TOOL}' is unavailable" in result["content"]
        assert "tell the user the tool is unavailable" in result["content"]
    assert "cannot be reached" in results[0]["content"]
    assert "failed recently" in results[-1]["content"]

    assert metric(metrics, "agent_tool_breaker_state", server="tools", tool=TOOL) == 2.0
    assert metric(metrics, "agent_tool_refusals_total", reason="breaker_open", tool=TOOL) == 1.0
    failures = float(len(outage_turns))
    assert (
        metric(metrics, "agent_tool_calls_total", status="failure", tool=TOOL, version="v1")
        == failures
    )
    assert (
        metric(metrics, "agent_tool_calls_total", status="success", tool=TOOL, version="v1") == 1.0
    )
    assert (
        metric(metrics, "agent_tool_breaker_transitions_total", server="tools", state="open") == 1.0
    )
