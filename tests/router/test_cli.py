"""`keel serve router` as a process and `keel router status|weights|drain|pins` against a
router, finding its URL and token the way they would after `keel up`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner, Result

from agentkeel.cli.main import app as keel
from agentkeel.config.router import RouterSettings
from agentkeel.router import RouterApp, create_router
from tests.integration.test_drain import free_port
from tests.router.backends import AgentReplica, agent_replicas
from tests.router.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.slow


@dataclass
class ThreadedRouter:
    router: RouterApp
    loop: asyncio.AbstractEventLoop
    data_dir: Path
    replicas: list[AgentReplica]

    @property
    def url(self) -> str:
        return self.router.url


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ThreadedRouter]:
    """Replicas v1, v1, v2 and a router on its own loop in a thread; the admin token sits in
    the data directory as `keel up` writes it."""
    data_dir = tmp_path / "keel-data"
    data_dir.mkdir()
    (data_dir / "admin_token").write_text(ADMIN_TOKEN + "\n")
    with agent_replicas(tmp_path / "replicas", ["v1", "v1", "v2"]) as replicas:
        loop = asyncio.new_event_loop()
        settings = RouterSettings(
            port=0,
            backends=[f"{r.version}={r.url}" for r in replicas],
            pins=f"sqlite:///{data_dir / 'router.db'}",
            admin_token_file=data_dir / "admin_token",
        )
        router = create_router(settings, data_dir=data_dir, registry=CollectorRegistry())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(router.start(), loop).result(timeout=20)
        try:
            yield ThreadedRouter(router, loop, data_dir, replicas)
        finally:
            asyncio.run_coroutine_threadsafe(router.aclose(drain_timeout_s=0), loop).result(20)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()


def run(served: ThreadedRouter, *args: str, url: bool = True) -> Result:
    """`keel --data-dir DIR router ARGS [--url URL]`: no --token-file, as a user types it."""
    extra = ["--url", served.url] if url else []
    return CliRunner().invoke(
        keel,
        ["--data-dir", str(served.data_dir), "router", *args, *extra],
        env={"COLUMNS": "200"},
    )


def test_status_shows_versions_replicas_and_figures(served: ThreadedRouter) -> None:
    """`keel router status` lists each version with its weight and each replica's state;
    --json carries the same and the per-version stats."""
    httpx.post(f"{served.url}/v1/sessions", json={"user_id": "u"})
    table = run(served, "status")
    assert table.exit_code == 0, table.output
    assert "stable version v1" in table.stdout
    for replica in served.replicas:
        assert replica.url in table.stdout
    data = json.loads(run(served, "status", "--json").stdout)
    assert [v["version"] for v in data["versions"]] == ["v1", "v2"]
    assert data["stats"]["v1"]["by_status"] == {"201": 1}


def test_weights_drain_and_pins_change_and_read_the_router(served: ThreadedRouter) -> None:
    """`weights` sets both weights in one change, `drain` stops new work to a replica,
    `pins` counts the sessions per version."""
    changed = run(served, "weights", "v1=0", "v2=100")
    assert changed.exit_code == 0, changed.output
    assert "v1=0, v2=100" in changed.stdout
    made = httpx.post(f"{served.url}/v1/sessions", json={"user_id": "u"}).json()
    assert made["version"] == "v2"
    target = served.replicas[0].url
    drained = run(served, "drain", target)
    assert drained.exit_code == 0, drained.output
    replicas = served.router.table.versions["v1"].replicas
    assert [r.draining for r in replicas] == [True, False]
    pins = json.loads(run(served, "pins", "--json").stdout)
    assert pins == {"total": 1, "by_version": {"v1": 0, "v2": 1}}
    assert "1 pinned session(s)" in run(served, "pins").stdout


def test_bad_input_exits_with_a_clear_message(served: ThreadedRouter, tmp_path: Path) -> None:
    """A malformed weight exits 2; an unknown version or replica exits 1 naming it; no token
    anywhere exits 2 naming where it looked."""
    malformed = run(served, "weights", "v1=lots")
    assert malformed.exit_code == 2 and "VERSION=NUMBER" in malformed.output
    unknown = run(served, "weights", "v9=1")
    assert unknown.exit_code == 1 and "v9" in unknown.output
    stranger = run(served, "drain", "http://127.0.0.1:1")
    assert stranger.exit_code == 1 and "not in the routing table" in stranger.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_token = CliRunner().invoke(
        keel, ["--data-dir", str(empty), "router", "status", "--url", served.url]
    )
    assert no_token.exit_code == 2 and "no router admin token file" in no_token.output


def test_the_router_url_comes_from_the_stack_file(served: ThreadedRouter) -> None:
    """Without --url, a running keel up's stack file (`router.url`) names the router."""
    now = time.time()
    (served.data_dir / "stack.json").write_text(
        json.dumps(
            {
                "format": 1,
                "state": "running",
                "pid": os.getpid(),
                "started_at": now,
                "updated_at": now,
                "services": {},
                "credentials": {"admin_token": "admin_token"},
                "router": {"url": served.url},
            }
        )
    )
    result = run(served, "pins", "--json", url=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] == 0


def test_every_router_command_has_an_example() -> None:
    """--help of each command ends with an Example."""
    for args in (
        ["serve", "router"],
        ["router"],
        *(["router", c] for c in ("status", "weights", "drain", "pins")),
    ):
        result = CliRunner().invoke(keel, [*args, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and "Example: keel" in result.stdout, args


def test_keel_serve_router_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`keel serve router` serves /ready for its replica and exits 0 on SIGTERM."""
    with agent_replicas(tmp_path / "replicas", ["v1"]) as replicas:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env["KEEL_DATA_DIR"] = str(tmp_path / "data")
        log_path = tmp_path / "router.log"
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentkeel.cli.main",
                "serve",
                "router",
                "--port",
                str(port),
                "--backend",
                f"v1={replicas[0].url}",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the router never became ready"
                time.sleep(0.05)
            made = httpx.post(f"http://127.0.0.1:{port}/v1/sessions", json={"user_id": "u"})
            assert made.status_code == 201
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            log_file.close()
    log = log_path.read_text()
    assert "router listening" in log and (tmp_path / "data" / "router.db").is_file()
