"""No secret leaves in any byte a real stack writes.

`keel up` runs the memory server, the tool server, a replica and the router as
real processes, in front of an OpenAI-compatible model stand-in (a socket in
this test process) that demands a bearer key read from a secrets file. One
session: the model asks for ``memory_store`` (replica → tool server → memory
server), then replies with its own API key; an admin action goes through the
CLI with the admin token and one through the router's admin API. Auth is on:
the client's API key (made with `keel keys create`, whose stdout is the one
place it is shown) goes through the router; the model key is rotated with
`keel secrets rotate` while the stack runs, and a later session is served on
the new key. Then every
byte of every process's stdout and stderr, every log file and every file
under the data directory (except the credential files themselves) is scanned
for every secret value: none may be there. The audit file holds both admin
actions and its chain verifies.

Another secret is one line in ``SECRET_FILES`` (a file in the data directory)
or ``extra_secrets`` below.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentkeel.testing.ports import free_port_run
from tests.integration.test_keel_up_e2e import StartKeelUp, start_keel_up  # noqa: F401

pytestmark = pytest.mark.slow

MODEL_KEY = "sk-standin-9c2f7e1a5b3d8046e2a1"
NEW_MODEL_KEY = "sk-standin-rotated-4b8e0d2c6a1f9375"
ACCEPTED_KEYS = {f"Bearer {MODEL_KEY}", f"Bearer {NEW_MODEL_KEY}"}

SECRET_FILES = [
    # Credential files keel up writes into the data directory (mode 0600).
    "admin_token",
    "memory_agent_token",
    "tools_agent_token",
    "caller_signing_key",
]
"""Secrets whose value is a file's content; the files themselves are not scanned."""

CREDENTIAL_FILES = {*SECRET_FILES, "memory_tokens.yaml", "tools_tokens.yaml"}


class ModelStandIn(BaseHTTPRequestHandler):
    """OpenAI chat completions: 401 without the key; a memory_store call, then a reply
    that leaks the key (the replica must redact it)."""

    seen_auth: list[str] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        authorization = self.headers.get("authorization", "")
        self.seen_auth.append("ok" if authorization in ACCEPTED_KEYS else "bad")
        if authorization not in ACCEPTED_KEYS:
            self._send(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
            return
        answered_tool = any(m.get("role") == "tool" for m in body.get("messages", []))
        if answered_tool:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": f"Saved it. My key is {authorization.split()[-1]} by the way.",
            }
            finish = "stop"
        else:
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "memory_store",
                            "arguments": json.dumps({"content": "The user flies kites"}),
                        },
                    }
                ],
            }
            finish = "tool_calls"
        self._send(
            200,
            {
                "id": "cmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "standin",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
            },
        )

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def model_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ModelStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def secret_values(data_dir: Path, extra_secrets: dict[str, str]) -> dict[str, str]:
    """Name -> value of every secret to look for; a PEM key also by each body line."""
    values = dict(extra_secrets)
    for name in SECRET_FILES:
        text = (data_dir / name).read_text().strip()
        values[name] = text
        if text.startswith("-----BEGIN"):
            for index, line in enumerate(text.splitlines()[1:-1]):
                if len(line) >= 16:
                    values[f"{name} line {index + 1}"] = line
    return values


def scanned_files(root: Path) -> list[Path]:
    return [
        path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in CREDENTIAL_FILES and not path.is_socket()
    ]


def run_keel(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agentkeel.cli.main",
            "--config",
            str(tmp_path / "keel.yaml"),
            *args,
        ],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def test_no_secret_in_any_output_or_file(
    tmp_path: Path,
    start_keel_up: StartKeelUp,  # noqa: F811
    model_url: str,
) -> None:
    """A session with a tool call, a memory write and two admin actions leaves no secret
    in any stdout, stderr, log or data file; the leaked key in the reply is redacted."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "model_key").write_text(MODEL_KEY + "\n")
    base_port = free_port_run(4)
    memory_port, tools_port, router_port = base_port + 1, base_port + 2, base_port + 3
    keel = start_keel_up(
        f"""
models:
  - name: standin
    kind: openai
    model: standin
    base_url: {model_url}
    api_key_secret: model_key
    context_window: 8192
secrets_dir: {secrets}
agent:
  tools: [memory_store]
  system_prompt: null
memory:
  port: {memory_port}
tools:
  server:
    port: {tools_port}
router:
  port: {router_port}
up:
  base_port: {base_port}
  replicas: 1
""",
        "--no-local-model",
        "--auth",
    )
    keel.wait_running()
    data_dir = keel.data_dir
    router = f"http://127.0.0.1:{router_port}"
    admin_token = (data_dir / "admin_token").read_text().strip()
    # The only place an API key is ever shown: the stdout of `keel keys create`.
    made = run_keel(
        tmp_path,
        "--data-dir",
        str(data_dir),
        "keys",
        "create",
        "--name",
        "scan",
        "--org",
        "acme",
        "--user",
        "scan",
        "--scope",
        "chat",
        "--scope",
        "sessions:read",
    )
    assert made.returncode == 0, made.stderr.decode()
    api_key = made.stdout.decode().strip()
    user = {"authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=router, timeout=60.0, trust_env=False, headers=user) as client:
        session_id = client.post("/v1/sessions", json={}).json()["session_id"]
        turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "remember"})
        assert turn.status_code == 200, f"{turn.text}\n{keel.diagnostics()}"
        body = turn.json()
        assert body["tool_calls"][0]["name"] == "memory_store", body
        assert body["tool_calls"][0]["status"] == "success", body
        assert body["reply"] == "Saved it. My key is [REDACTED:known_secret] by the way."
        weights = client.post(
            "/admin/weights",
            json={"weights": {"v1": 100}},
            headers={"authorization": f"Bearer {admin_token}"},
        )
        assert weights.status_code == 200, weights.text
    # Rotate the model key while the stack runs, then serve a session on the new key.
    (tmp_path / "new_model_key").write_text(NEW_MODEL_KEY)
    rotate = run_keel(
        tmp_path,
        "--data-dir",
        str(data_dir),
        "secrets",
        "rotate",
        "model_key",
        "--new-value-file",
        str(tmp_path / "new_model_key"),
        "--deadline",
        "5s",
    )
    assert rotate.returncode == 0, rotate.stdout.decode() + rotate.stderr.decode()
    (tmp_path / "new_model_key").unlink()
    with httpx.Client(base_url=router, timeout=60.0, trust_env=False, headers=user) as client:
        later = client.post("/v1/sessions", json={}).json()["session_id"]
        turn = client.post(f"/v1/sessions/{later}/messages", json={"content": "remember"})
        assert turn.status_code == 200, f"{turn.text}\n{keel.diagnostics()}"
        assert "[REDACTED:" in turn.json()["reply"], turn.json()
    assert set(ModelStandIn.seen_auth) == {"ok"}
    prune = run_keel(tmp_path, "--data-dir", str(data_dir), "sessions", "prune", "--json")
    assert prune.returncode == 0, prune.stderr.decode()
    verify = run_keel(tmp_path, "--data-dir", str(data_dir), "audit", "verify")
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()

    keel.proc.send_signal(signal.SIGINT)
    assert keel.proc.wait(timeout=90) == 0, keel.diagnostics()
    if keel.reader is not None:
        keel.reader.join(timeout=10)

    records = [
        json.loads(line) for line in (data_dir / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    actions = {(r["action"], r["source"]["service"]) for r in records}
    assert ("router.set_weights", "router") in actions, records
    assert ("sessions.prune", "agent") in actions, records

    values = secret_values(
        data_dir, {"model_key": MODEL_KEY, "new_model_key": NEW_MODEL_KEY, "api_key": api_key}
    )
    outputs: dict[str, bytes] = {
        "keel up stdout": "\n".join(keel.seen).encode(),
        "keel up stderr": (tmp_path / "keel-up.stderr").read_bytes(),
        "keys create stderr": made.stderr,
        "secrets rotate stdout": rotate.stdout,
        "secrets rotate stderr": rotate.stderr,
        "sessions prune stdout": prune.stdout,
        "sessions prune stderr": prune.stderr,
        "audit verify stdout": verify.stdout,
        "audit verify stderr": verify.stderr,
    }
    files = scanned_files(data_dir)
    assert any(path.name.endswith(".log") for path in files)
    assert any(path.name == "sessions.db" for path in files)
    outputs.update({str(path.relative_to(tmp_path)): path.read_bytes() for path in files})
    found = [
        f"{name} in {where}"
        for where, data in outputs.items()
        for name, value in values.items()
        if value.encode() in data
    ]
    assert found == [], found
