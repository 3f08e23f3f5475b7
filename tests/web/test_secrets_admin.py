"""What services report of their secrets and how they check admin tokens during a
rotation: ``/admin/secrets`` on a replica (never a value), the refresh, both admin
token versions accepted in the overlap, the age metrics, and live sessions counted
by start time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr
from starlette.testclient import TestClient

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import Forbidden
from agentkeel.runtime.app import create_app
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.secrets.source import SecretVersion
from agentkeel.web.auth import AdminToken

OLD_ADMIN = "admin-old-0123456789abcdef"
NEW_ADMIN = "admin-new-fedcba9876543210"
KEY = "sk-platform-0123456789abc"


def provision(root: Path, name: str, old: str, new: str, *, activate: bool) -> None:
    """Write generation 2 beside generation 1, as the rotation's first steps do."""
    source = FileSecretSource(root=root)
    secret = source.read(name)
    assert secret is not None
    now = time.time()
    fresh = SecretVersion(SecretStr(new), 2, created_at=now, activated_at=now if activate else None)
    source.write(name, [fresh, secret.versions[0]])


def test_an_admin_token_accepts_both_versions_during_the_overlap_and_only_the_new_after(
    tmp_path: Path,
) -> None:
    """A single token file works as before; with generation 2 provisioned (and then
    active) both tokens pass; after the old one is removed, it is refused."""
    token_file = tmp_path / "admin_token"
    token_file.write_text(OLD_ADMIN + "\n")
    admin = AdminToken(
        resolver=SecretResolver(),
        name=None,
        file=token_file,
        setting="server.admin_token_file",
        service="agent server",
    )
    admin.check(f"Bearer {OLD_ADMIN}")
    with pytest.raises(Forbidden):
        admin.check(f"Bearer {NEW_ADMIN}")
    provision(tmp_path, "admin_token", OLD_ADMIN, NEW_ADMIN, activate=False)
    admin.check(f"Bearer {OLD_ADMIN}")
    admin.check(f"Bearer {NEW_ADMIN}")
    source = FileSecretSource(root=tmp_path)
    secret = source.read("admin_token")
    assert secret is not None
    now = time.time()
    source.write(
        "admin_token",
        [SecretVersion(secret.versions[0].value, 2, created_at=now, activated_at=now)],
    )
    admin.check(f"Bearer {NEW_ADMIN}")
    assert admin.matches(NEW_ADMIN) and not admin.matches(OLD_ADMIN)
    with pytest.raises(Forbidden):
        admin.check(f"Bearer {OLD_ADMIN}")


def test_a_replica_reports_generations_not_values_and_exports_their_age(tmp_path: Path) -> None:
    """``GET /admin/secrets`` lists the provider key and the admin token with their
    generations; after a rotation writes generation 2 and the refresh, the replica
    holds both; ``/metrics`` has the age and due time per configured secret."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "openai_api_key").write_text(KEY + "\n")
    (tmp_path / "admin_token").write_text(OLD_ADMIN + "\n")
    settings = KeelSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "secrets_dir": str(secrets_dir),
            "server": {"admin_token_file": str(tmp_path / "admin_token")},
            "agent": {"tools": []},
            "models": [
                {
                    "name": "openai",
                    "kind": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "api_key_secret": "openai_api_key",
                    "tokenizer": "bytes",
                }
            ],
        }
    )
    registry = CollectorRegistry()
    headers = {"Authorization": f"Bearer {OLD_ADMIN}"}
    with TestClient(create_app(settings, registry=registry, run_sweeper=False)) as client:
        assert client.get("/admin/secrets").status_code == 401
        report = client.get("/admin/secrets", headers=headers).json()
        held = {entry["path"]: entry for entry in report["secrets"]}
        assert set(held) == {"openai_api_key", "admin_token"}
        assert held["openai_api_key"]["generations"] == [1]
        provision(secrets_dir, "openai_api_key", KEY, "sk-platform-new-0123456789", activate=False)
        refreshed = client.post("/admin/secrets/refresh", headers=headers).json()
        held = {entry["path"]: entry for entry in refreshed["secrets"]}
        assert held["openai_api_key"]["generations"] == [2, 1]
        assert held["openai_api_key"]["current"] == 1
        text = client.get("/admin/secrets", headers=headers).text
        assert KEY not in text and "sk-platform-new" not in text
        metrics = generate_latest(registry).decode()
    assert 'agent_secret_age_seconds{secret="openai_api_key"}' in metrics
    assert 'agent_secret_rotation_due_timestamp_seconds{secret="admin_token"}' in metrics
    due = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('agent_secret_rotation_due_timestamp_seconds{secret="openai_api_key"}')
    )
    assert due == pytest.approx(time.time() + 90 * 86400, abs=600)


def test_live_sessions_are_counted_by_start_time_for_the_drain(tmp_path: Path) -> None:
    """``/admin/sessions/live?started_before=T`` counts the live sessions that started
    before T; ended ones do not count; a bad T is a 422."""
    (tmp_path / "admin_token").write_text(OLD_ADMIN + "\n")
    settings = KeelSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "secrets_dir": None,
            "server": {"admin_token_file": str(tmp_path / "admin_token")},
            "agent": {"tools": []},
            "models": [{"name": "s", "kind": "scripted"}],
        }
    )
    headers = {"Authorization": f"Bearer {OLD_ADMIN}"}
    with TestClient(create_app(settings, run_sweeper=False)) as client:
        first = [client.post("/v1/sessions", json={"user_id": f"u{i}"}).json() for i in range(3)]
        cut = time.time()
        time.sleep(0.01)
        client.post("/v1/sessions", json={"user_id": "late"})
        client.delete(f"/v1/sessions/{first[0]['session_id']}")
        live = client.get(f"/admin/sessions/live?started_before={cut!r}", headers=headers).json()
        assert live["started_before"]["count"] == 2
        assert live["total"] == 3
        plain = client.get("/admin/sessions/live", headers=headers).json()
        assert "started_before" not in plain
        bad = client.get("/admin/sessions/live?started_before=soon", headers=headers)
        assert bad.status_code == 422
