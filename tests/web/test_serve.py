from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "port_env"),
    [
        ("agentkeel.tools.serve", "KEEL_TOOLS__SERVER__PORT"),
        ("agentkeel.memory.serve", "KEEL_MEMORY__PORT"),
    ],
)
def test_service_exits_zero_after_sigterm(tmp_path: Path, module: str, port_env: str) -> None:
    """A service stopped with SIGTERM shuts down cleanly and exits 0, not 'killed by signal'."""
    port = _free_port()
    env = {
        **os.environ,
        port_env: str(port),
        "KEEL_DATA_DIR": str(tmp_path),
        "KEEL_SECRETS_DIR": str(tmp_path / "secrets"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service did not become healthy"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
