"""The memory server's administrative routes each write a hash-chained audit record
naming the admin token, the caller's address and the outcome."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from starlette.applications import Starlette

from agentkeel.telemetry.audit_file import audit_file_path, install_audit_file
from agentkeel.telemetry.audit_verify import verify_audit_file
from tests.memory.apphelpers import ADMIN, auth


async def test_admin_routes_are_audited(
    served: tuple[Starlette, httpx.AsyncClient], tmp_path: Path
) -> None:
    """Snapshot, fence up/down, read-only clear, restore, prune: one record each, ok."""
    _, client = served
    install_audit_file(tmp_path / "stack", service="memory")
    admin = auth(ADMIN)
    snapshot = await client.post("/v1/snapshots", json={"label": "before"}, headers=admin)
    assert snapshot.status_code == 201, snapshot.text
    assert (await client.post("/admin/fence", json={"reason": "test"}, headers=admin)).is_success
    assert (await client.delete("/admin/fence", headers=admin)).is_success
    assert (await client.delete("/admin/read-only", headers=admin)).is_success
    restore = await client.post(
        "/v1/restore", json={"snapshot_id": snapshot.json()["id"]}, headers=admin
    )
    assert restore.is_success, restore.text
    assert (await client.post("/v1/snapshots:prune?dry_run=1", headers=admin)).is_success
    path = audit_file_path(tmp_path / "stack")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["action"] for r in records] == [
        "memory.snapshot.create",
        "memory.fence.up",
        "memory.fence.down",
        "memory.read_only.clear",
        "memory.restore",
        "memory.snapshot.prune",
    ]
    assert {r["outcome"] for r in records} == {"ok"}
    assert all(r["actor"].startswith("admin") for r in records)
    assert ADMIN not in path.read_text()
    assert records[1]["details"]["reason"] == "test"
    assert records[0]["source"]["remote"] == "127.0.0.1"
    assert verify_audit_file(path).ok


async def test_a_failed_restore_is_audited_with_its_code(
    served: tuple[Starlette, httpx.AsyncClient], tmp_path: Path
) -> None:
    """A restore to an unknown snapshot answers its error and is recorded with that code."""
    _, client = served
    install_audit_file(tmp_path / "stack", service="memory")
    response = await client.post(
        "/v1/restore", json={"snapshot_id": "snap-nope"}, headers=auth(ADMIN)
    )
    assert response.status_code == 404
    record = json.loads(audit_file_path(tmp_path / "stack").read_text())
    assert record["action"] == "memory.restore"
    assert record["outcome"] == response.json()["error"]["code"]
