"""A real agent server with the scripted model, for golden checks: built from settings,
served over loopback HTTP on a free port (in a thread, so sync CLI tests can use it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from agentkeel.config.layers import load_settings
from agentkeel.runtime.app import create_app
from tests.tools.servers import free_port

CALCULATOR_SCRIPT: list[Any] = [
    {"tool_calls": [{"tool": "calculator", "arguments": {"expression": "6*7"}}]},
    {"say": "The answer is 42."},
]
"""Every session's first turn calls the calculator and answers 42; later turns echo."""


def agent_app(
    tmp_path: Path,
    *,
    script: Sequence[Any] = (),
    max_input_chars: int = 16_000,
    version: str = "v1",
    data_dir: Path | None = None,
) -> ASGIApp:
    """An agent server of ``version`` whose scripted model follows ``script``, then echoes;
    replicas given one ``data_dir`` share its session store."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    script_file = tmp_path / "script.yaml"
    script_file.write_text(yaml.safe_dump({"on_end": "echo", "steps": list(script)}))
    settings = load_settings(
        layers=[],
        overrides={
            "data_dir": str(data_dir or tmp_path / "agent-data"),
            "secrets_dir": None,
            "models": [{"name": "scripted", "kind": "scripted", "script": str(script_file)}],
            "agent": {"tools": ["calculator"], "version": version},
            "guardrails": {"max_input_chars": max_input_chars},
        },
    ).settings
    return create_app(settings, registry=CollectorRegistry())


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "agent server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
