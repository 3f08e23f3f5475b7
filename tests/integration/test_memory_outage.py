"""100 sessions keep writing memories while the memory server is killed and brought back.

A real memory server process (``python -m agentkeel.memory.serve``, SQLite) and
four ``MemoryClient`` objects (four agent replicas, 25 sessions each, one
namespace per session) in this process. The server is stopped with SIGKILL —
requests in flight lose their answers — stays down for the outage, and is
started again on the same data directory and port. After recovery every write
a client acknowledged ("stored" or "queued") is in the store exactly once, no
write is left in or refused from an outbox, and the hash chain checks out.

The outage is 30 s by default (the whole test takes about 45 s); set
``MEMORY_OUTAGE_SECONDS`` to run it shorter or longer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from agentkeel.config.memory import MemoryClientBreakerSettings, MemoryClientSettings
from agentkeel.memory.client import MemoryClient, build_memory_client
from agentkeel.memory.metrics import MemoryClientMetrics
from tests.integration.test_drain import free_port

pytestmark = pytest.mark.slow

SESSIONS = 100
REPLICAS = 4
WRITE_EVERY_S = 0.5
BEFORE_S = 3.0
AFTER_S = 3.0
BUSY = 20
TOKEN = "fault-test-token-" + "f" * 24
ADMIN = "fault-test-admin-" + "a" * 24


def outage_seconds() -> float:
    return float(os.environ.get("MEMORY_OUTAGE_SECONDS", "30"))


@dataclass
class MemoryServerProcess:
    """The memory server as a child process on a fixed port and data directory."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    logs: list[BinaryIO] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env.update(
            {
                "KEEL_DATA_DIR": str(self.directory),
                "KEEL_MEMORY__PORT": str(self.port),
                "KEEL_MEMORY__DATA_DIR": str(self.directory / "memory"),
                "KEEL_MEMORY__TOKENS_FILE": str(self.directory / "tokens.yaml"),
                "KEEL_MEMORY__ADMIN_TOKEN_FILE": str(self.directory / "admin_token"),
                "KEEL_MEMORY__SNAPSHOT_INTERVAL_S": "0",
                "KEEL_MEMORY__VERIFY_INTERVAL_S": "0",
                "KEEL_MEMORY__INTEGRITY_INTERVAL_S": "0",
                "KEEL_MEMORY__LOG_LEVEL": "warning",
            }
        )
        return env

    def start(self) -> None:
        log = (self.directory / f"memory-{len(self.logs)}.log").open("wb")
        self.logs.append(log)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agentkeel.memory.serve"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        self.process.wait(timeout=15)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while True:
                assert self.process is not None and self.process.poll() is None, (
                    "the memory server exited; see " + str(self.directory / "memory-*.log")
                )
                try:
                    if (await client.get("/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the memory server did not become ready"
                await asyncio.sleep(0.1)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for log in self.logs:
            log.close()


@pytest.fixture
def memory_server(tmp_path: Path) -> Iterator[MemoryServerProcess]:
    (tmp_path / "tokens.yaml").write_text(
        yaml.safe_dump(
            {"tokens": {TOKEN: {"name": "agents", "read": ["agent:*"], "write": ["agent:*"]}}}
        )
    )
    (tmp_path / "admin_token").write_text(ADMIN)
    (tmp_path / "client_token").write_text(TOKEN)
    server = MemoryServerProcess(directory=tmp_path, port=free_port())
    try:
        yield server
    finally:
        server.close()


@dataclass
class Ledger:
    """What the writers were told: acknowledged contents, and writes that raised."""

    acknowledged: list[str] = field(default_factory=list)
    in_flight: int = 0
    busy: asyncio.Event = field(default_factory=asyncio.Event)
    queued: int = 0
    stored: int = 0
    errors: list[str] = field(default_factory=list)


async def session_writer(
    client: MemoryClient, session: int, ledger: Ledger, stop: asyncio.Event, beat: float
) -> None:
    namespace = f"agent:fault/user:{session}"
    number = 0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        content = f"session {session} memory {number}"
        number += 1
        ledger.in_flight += 1
        if ledger.in_flight >= BUSY:
            ledger.busy.set()
        try:
            outcome = await client.store(namespace, content, tags=["fault"])
        except Exception as exc:  # recorded, and the test fails on any
            ledger.errors.append(f"{content}: {type(exc).__name__}: {exc}")
        else:
            ledger.acknowledged.append(content)
            if outcome.queued:
                ledger.queued += 1
            else:
                ledger.stored += 1
        finally:
            ledger.in_flight -= 1
        beat += WRITE_EVERY_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, beat - loop.time()))


async def test_acknowledged_writes_survive_a_memory_server_outage(
    memory_server: MemoryServerProcess, tmp_path: Path
) -> None:
    """SIGKILL the memory server under 100 writing sessions, keep it down for the outage,
    start it again: every acknowledged write is stored exactly once, none is lost or
    refused, and the store's integrity check passes."""
    outage_s = outage_seconds()
    memory_server.start()
    await memory_server.wait_ready()
    settings = MemoryClientSettings(
        token_file=tmp_path / "client_token",
        timeout_s=5.0,
        retry_initial_s=0.2,
        retry_max_s=2.0,
        breaker=MemoryClientBreakerSettings(open_s=1.0),
    )
    clients = [
        build_memory_client(
            settings,
            url=memory_server.url,
            name=f"replica-{index}",
            data_dir=tmp_path / "agents",
            secrets_dir=None,
            metrics=MemoryClientMetrics(CollectorRegistry()),
        )
        for index in range(REPLICAS)
    ]
    for client in clients:
        await client.open()
    ledger = Ledger()
    stop = asyncio.Event()
    # Every session writes on the same beat, so the server sees bursts of 100.
    beat = asyncio.get_running_loop().time()
    writers = [
        asyncio.create_task(session_writer(clients[s % REPLICAS], s, ledger, stop, beat))
        for s in range(SESSIONS)
    ]
    try:
        await asyncio.sleep(BEFORE_S)
        stored_before = ledger.stored
        # Kill in the middle of a burst of writes, so some answers are lost after the
        # server committed them (their redelivery must be a no-op).
        ledger.busy.clear()
        async with asyncio.timeout(5):
            await ledger.busy.wait()
        await asyncio.sleep(0.05)
        memory_server.stop(signal.SIGKILL)
        await asyncio.sleep(outage_s)
        queued_during = ledger.queued
        assert sum(client.pending for client in clients) > 0
        memory_server.start()
        await memory_server.wait_ready()
        await asyncio.sleep(AFTER_S)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    try:
        async with asyncio.timeout(120):
            for client in clients:
                await client.wait_drained()
        failed = [entry for client in clients for entry in await client.failed_writes()]
    finally:
        for client in clients:
            await client.aclose()

    assert ledger.errors == []
    assert failed == []
    assert stored_before > 0 and queued_during > 0
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=60) as admin:
        report = await admin.get("/v1/integrity", headers={"Authorization": f"Bearer {ADMIN}"})
    assert report.status_code == 200 and report.json()["ok"], report.text
    memory_server.stop(signal.SIGTERM)

    conn = sqlite3.connect(tmp_path / "memory" / "memory.db")
    try:
        rows = conn.execute("SELECT content FROM memories").fetchall()
    finally:
        conn.close()
    in_store = collections.Counter(row[0] for row in rows)
    acknowledged = collections.Counter(ledger.acknowledged)
    assert max(acknowledged.values()) == 1
    missing = [content for content in acknowledged if in_store[content] == 0]
    duplicated = [content for content, count in in_store.items() if count > 1]
    assert missing == [], f"{len(missing)} acknowledged writes are missing"
    assert duplicated == [], f"{len(duplicated)} writes are stored more than once"
    assert set(in_store) == set(acknowledged)
    assert len(rows) == len(ledger.acknowledged)
