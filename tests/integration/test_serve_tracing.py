"""Tracing at a service's start and stop, with each service as a real process: a
``tracing.headers_file`` that cannot be read is a "cannot start" line (on stdout and in
the log files) and exit code 1, on every service; and a collector that refuses the last
export at shutdown gets its error logged into the log files, since tracing is shut down
before the log sinks close."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from agentkeel.testing._serving import serve_in_thread
from agentkeel.testing.ports import free_port_run
from tests.integration.test_drain import wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SERVICES = [
    ("agentkeel.runtime.serve", "cannot start the agent server"),
    ("agentkeel.memory.serve", "cannot start the memory server"),
    ("agentkeel.tools.serve", "cannot start the tool server"),
    ("agentkeel.router.serve", "cannot start the router"),
]


def service_env(tmp_path: Path, **more: str) -> dict[str, str]:
    """A clean environment: this checkout's sources, the test's directories, log files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OTEL_"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT / "src"),
            "PYTHONUNBUFFERED": "1",
            "KEEL_DATA_DIR": str(tmp_path / "data"),
            "KEEL_LOGGING__DIR": str(tmp_path / "logs"),
            **more,
        }
    )
    return env


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        try:
            parsed = json.loads(raw)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            lines.append(parsed)
    return lines


def file_lines(logs: Path) -> list[dict[str, Any]]:
    """Every line of every category file under ``logs``."""
    return [
        line
        for path in sorted(logs.rglob("*.jsonl"))
        for line in json_lines(path.read_text(encoding="utf-8"))
    ]


@pytest.mark.parametrize(("module", "refusal"), SERVICES)
def test_an_unreadable_headers_file_is_a_logged_start_failure(
    tmp_path: Path, module: str, refusal: str
) -> None:
    """The service exits 1 with one "cannot start" error naming tracing.headers_file, on
    stdout and in its log files (the sinks were closed, so the line was written), and no
    traceback."""
    env = service_env(
        tmp_path,
        KEEL_TRACING__OTLP_ENDPOINT="http://127.0.0.1:9",
        KEEL_TRACING__HEADERS_FILE=str(tmp_path / "absent-headers"),
    )
    done = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    for where, lines in (
        ("stdout", json_lines(done.stdout)),
        ("files", file_lines(tmp_path / "logs")),
    ):
        errors = [line for line in lines if line["message"].startswith(refusal)]
        assert len(errors) == 1, (where, lines)
        assert errors[0]["level"] == "error"
        assert "tracing.headers_file" in errors[0]["message"]


def start_service(
    module: str, *, env: dict[str, str], cwd: Path, output: BinaryIO
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module], env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
    )


@pytest.fixture
def refusing_collector() -> Iterator[str]:
    """An OTLP/HTTP endpoint that refuses every export with 400 (not retried)."""

    async def refuse(request: Request) -> Response:
        await request.body()
        return PlainTextResponse("this collector takes nothing", status_code=400)

    app = Starlette(routes=[Route("/v1/traces", refuse, methods=["POST"])])
    with serve_in_thread(app, what="refusing collector") as url:
        yield url


async def test_the_last_exports_error_reaches_the_log_files(
    tmp_path: Path, refusing_collector: str
) -> None:
    """A replica whose spans are exported only at shutdown (a long batch delay) to a
    collector that refuses them: after SIGTERM it exits 0 and the exporter's error is in
    the replica's log files, written before the files were closed."""
    script = tmp_path / "script.yaml"
    script.write_text("on_end: echo\nsteps: []\n")
    port = free_port_run(1)
    env = service_env(
        tmp_path,
        KEEL_TRACING__OTLP_ENDPOINT=refusing_collector,
        OTEL_BSP_SCHEDULE_DELAY="600000",
        KEEL_MODELS=json.dumps([{"name": "scripted", "kind": "scripted", "script": str(script)}]),
        KEEL_STORE__URL=f"sqlite:///{tmp_path / 'sessions.db'}",
        KEEL_SERVER__PORT=str(port),
    )
    stdout = (tmp_path / "stdout.log").open("wb")
    process = start_service("agentkeel.runtime.serve", env=env, cwd=tmp_path, output=stdout)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await wait_ready(client, process)
            created = await client.post("/v1/sessions", json={"user_id": "erin"})
            session_id = created.json()["session_id"]
            turn = await client.post(
                f"/v1/sessions/{session_id}/messages", json={"content": "hello"}
            )
            assert turn.status_code == 200, turn.text
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        stdout.close()
    logged = file_lines(tmp_path / "logs")
    failed = [line for line in logged if "Failed to export" in line["message"]]
    assert failed, [line["message"] for line in logged][-20:]
    assert failed[0]["logger"].startswith("opentelemetry.exporter")
    assert "400" in failed[0]["message"]
