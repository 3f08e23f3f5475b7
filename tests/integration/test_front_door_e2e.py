"""`keel up --auth` end to end: API keys made with `keel keys`, the router as the front
door, replicas that act only on its signed assertion, and sessions bound to their owner."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentkeel.identity.principal import CALLER_HEADER
from agentkeel.testing.ports import free_port_run
from tests.integration.test_keel_up_e2e import StartKeelUp, start_keel_up  # noqa: F401

pytestmark = pytest.mark.slow


def keel(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
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
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def make_key(tmp_path: Path, name: str, *extra: str) -> str:
    made = keel(tmp_path, "keys", "create", "--name", name, "--org", "acme", *extra)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_keys_front_door_and_owners_through_keel_up(
    tmp_path: Path,
    start_keel_up: StartKeelUp,  # noqa: F811
) -> None:
    base_port = free_port_run(3)
    router_port = base_port + 2
    data_dir = tmp_path / "data"
    up = start_keel_up(
        f"""
data_dir: {data_dir}
secrets_dir: null
models:
  - name: echo
    kind: scripted
agent:
  tools: []
router:
  port: {router_port}
up:
  base_port: {base_port}
  replicas: 2
""",
        "--auth",
        "--no-local-model",
        "--no-memory",
        "--no-tools",
    )
    up.wait_running()
    told = (tmp_path / "keel-up.stderr").read_text()
    assert "auth on" in told and "keel keys create" in told, up.diagnostics()
    scopes = ("--scope", "chat", "--scope", "sessions:read")
    ana = make_key(tmp_path, "ana", "--user", "ana", *scopes)
    bob = make_key(tmp_path, "bob", "--user", "bob", *scopes)
    service = make_key(tmp_path, "acme-backend", *scopes)

    with httpx.Client(base_url=f"http://127.0.0.1:{router_port}", timeout=30, trust_env=False) as c:
        refused = c.post("/v1/sessions", json={})
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert (
            c.post("/v1/sessions", json={}, headers=bearer("ak_x_" + "y" * 40)).status_code == 401
        )

        created = c.post("/v1/sessions", json={}, headers=bearer(ana))
        assert created.status_code == 201, f"{created.text}\n{up.diagnostics()}"
        session_id = created.json()["session_id"]
        assert (created.json()["user_id"], created.json()["organization"]) == ("ana", "acme")
        turn = c.post(
            f"/v1/sessions/{session_id}/messages", json={"content": "hi"}, headers=bearer(ana)
        )
        assert turn.status_code == 200, turn.text

        mismatch = c.post("/v1/sessions", json={"user_id": "bob"}, headers=bearer(ana))
        assert mismatch.status_code == 403 and mismatch.json()["error"]["code"] == "user_mismatch"

        # Bob sees ana's session exactly as an unknown one, on every route, even when he
        # sends an assertion of his own making: the router drops it.
        forged = jwt.encode({"sub": "ana", "org": "acme"}, Ed25519PrivateKey.generate(), "EdDSA")
        for method, suffix, body in (
            ("GET", "", None),
            ("POST", "/messages", {"content": "hi"}),
            ("POST", "/rewind", {"turn": 0}),
            ("DELETE", "", None),
        ):
            theirs = c.request(
                method,
                f"/v1/sessions/{session_id}{suffix}",
                json=body,
                headers={**bearer(bob), CALLER_HEADER: forged},
            )
            unknown = c.request(
                method, f"/v1/sessions/s_unknown{suffix}", json=body, headers=bearer(bob)
            )
            assert theirs.status_code == unknown.status_code == 404, (method, suffix, theirs.text)
            assert theirs.json() == {
                "error": {
                    **unknown.json()["error"],
                    "message": unknown.json()["error"]["message"].replace("s_unknown", session_id),
                }
            }

        # The organization's own key acts for any of its users, ana included.
        own = c.get(f"/v1/sessions/{session_id}", headers=bearer(service))
        assert own.status_code == 200 and own.json()["turn_count"] == 1

    # A replica reached directly is its own front door: a forged assertion is refused,
    # a real key works.
    with httpx.Client(base_url=f"http://127.0.0.1:{base_port}", timeout=30, trust_env=False) as r:
        direct = r.get(f"/v1/sessions/{session_id}", headers={CALLER_HEADER: forged})
        assert direct.status_code == 401, direct.text
        assert r.get(f"/v1/sessions/{session_id}").status_code == 401
        assert r.get(f"/v1/sessions/{session_id}", headers=bearer(ana)).status_code == 200

    revoked = keel(tmp_path, "keys", "revoke", "ana")
    assert revoked.returncode == 0, revoked.stderr
    with httpx.Client(base_url=f"http://127.0.0.1:{router_port}", timeout=30, trust_env=False) as c:
        deadline = time.monotonic() + 10
        status = 0
        while time.monotonic() < deadline:
            status = c.get(f"/v1/sessions/{session_id}", headers=bearer(ana)).status_code
            if status == 401:
                break
            time.sleep(0.2)
        assert status == 401
    verify = keel(tmp_path, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    actions = keel(tmp_path, "audit", "show", "--action", "keys.", "--json")
    assert actions.stdout.count("keys.create") == 3 and "keys.revoke" in actions.stdout
