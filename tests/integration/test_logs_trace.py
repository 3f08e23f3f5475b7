"""`keel logs trace` over a real `keel up`: one turn through the router that calls a tool
and writes memory, then the lines of the router, the replica, the tool server and the
memory server under its correlation id, as one timeline in time order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkeel.ops.log_reader import LineFilter, read_lines
from tests.integration import test_keel_up_e2e as e2e

pytestmark = pytest.mark.slow

MODEL_LATENCY_S = 0.3
"""Each scripted reply waits this long: the turn's second model step starts after the
memory write, so the replica's and the router's lines come clearly after it."""


def trace(data_dir: Path, correlation_id: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return subprocess.run(
        [sys.executable, "-m", "agentkeel.cli.main", "--data-dir", str(data_dir),
         "logs", "trace", correlation_id, "--json"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def access_line(lines: list[dict[str, Any]], service: str) -> int:
    """The position of ``service``'s access line (its request's end) in the timeline."""
    found = [
        index
        for index, line in enumerate(lines)
        if line["service"] == service and line["category"] == "access" and "status" in line
    ]
    assert found, f"no access line of {service}: {lines}"
    return found[0]


def test_one_turn_traced_across_router_replica_tools_and_memory(
    tmp_path: Path, start_keel_up: e2e.StartKeelUp
) -> None:
    keel, ports = e2e.start_scripted_keel_up(
        start_keel_up,
        tmp_path,
        replicas=1,
        latency_s=MODEL_LATENCY_S,
        tools=["memory_search", "memory_store"],
        tag="trace",
    )
    pids = keel.wait_running()
    assert set(pids) == {"memory", "tools", "replica-1", "router"}, keel.diagnostics()
    correlation_id = f"trace-{uuid.uuid4().hex[:16]}"
    with httpx.Client(
        base_url=f"http://127.0.0.1:{ports.router}", timeout=60, trust_env=False
    ) as c:
        session = c.post("/v1/sessions", json={"user_id": "sailor"}).json()["session_id"]
        turn = c.post(
            f"/v1/sessions/{session}/messages",
            json={"content": "remember my boat"},
            headers={"X-Correlation-ID": correlation_id},
        )
    assert turn.status_code == 200, f"{turn.text}\n{keel.diagnostics()}"
    assert turn.json()["reply"] == "Noted."
    assert [c["name"] for c in turn.json()["tool_calls"]] == ["memory_store"]

    # Each service writes its lines from a queue: give the last of them a moment.
    wanted = {"router", "replica-1", "tools", "memory"}
    deadline = time.monotonic() + 10
    while True:
        result = trace(keel.data_dir, correlation_id)
        lines: list[dict[str, Any]] = json.loads(result.stdout) if result.returncode == 0 else []
        if wanted <= {line["service"] for line in lines} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.returncode == 0, result.stderr + keel.diagnostics()
    assert wanted <= {line["service"] for line in lines}, lines
    assert {line["correlation_id"] for line in lines} == {correlation_id}

    stamps = [datetime.fromisoformat(line["timestamp"]) for line in lines]
    assert stamps == sorted(stamps)
    assert all(line["timestamp"][-8] == "." for line in lines)  # microseconds: .ffffffZ
    # Every line the files hold for this id, from every category, is in the timeline.
    on_disk = read_lines(keel.data_dir / "logs", LineFilter(correlation_id=correlation_id))
    assert len(lines) == len(on_disk.lines)
    # The memory write and the tool call ended a model step before the turn did.
    inner = max(access_line(lines, "memory"), access_line(lines, "tools"))
    outer = min(access_line(lines, "replica-1"), access_line(lines, "router"))
    assert inner < outer, [(line["service"], line["message"]) for line in lines]
    assert lines[access_line(lines, "memory")]["path"] == "/v1/memories"
    assert lines[access_line(lines, "router")]["path"] == "/v1/sessions/{session_id}/messages"

    assert keel.interrupt() == 0, keel.diagnostics()
    # The files are per category and service, under the data directory.
    for service in wanted:
        assert (keel.data_dir / "logs" / "access" / f"{service}.jsonl").is_file()


start_keel_up = e2e.start_keel_up
