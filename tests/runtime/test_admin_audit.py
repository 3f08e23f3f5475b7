"""The agent server's admin routes write audit records: drain, prune, forget."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.runtime.app import create_app
from agentkeel.runtime.stores import open_store
from agentkeel.telemetry.audit_file import audit_file_path, install_audit_file

TOKEN = "agent-admin-token-0123456789"


async def test_drain_prune_and_forget_are_audited(tmp_path: Path) -> None:
    """Each admin call leaves one record with the token's fingerprint, never the token."""
    (tmp_path / "admin_token").write_text(TOKEN)
    settings = load_settings(
        layers=[],
        overrides={
            "secrets_dir": str(tmp_path),
            "data_dir": str(tmp_path / "data"),
            "models": [{"name": "s", "kind": "scripted"}],
        },
    ).settings
    install_audit_file(settings.data_dir, service="agent")
    store = open_store(f"sqlite:///{tmp_path / 'sessions.db'}")
    await store.open()
    app = create_app(settings, store=store, registry=CollectorRegistry(), run_sweeper=False)
    headers = {"authorization": f"Bearer {TOKEN}"}
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
                assert (await client.post("/admin/sessions/prune", headers=headers)).is_success
                forget = await client.post(
                    "/admin/sessions/forget", json={"user_id": "ana"}, headers=headers
                )
                assert forget.is_success, forget.text
                assert (await client.post("/admin/drain", headers=headers)).status_code == 202
    finally:
        await store.aclose()
    text = audit_file_path(settings.data_dir).read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["action"] for r in records] == ["sessions.prune", "sessions.forget", "agent.drain"]
    assert all(r["actor"].startswith("server.admin_token:sha256:") for r in records)
    assert TOKEN not in text
    assert records[2]["details"]["already_draining"] is False
    assert records[2]["source"]["remote"] == "127.0.0.1"
