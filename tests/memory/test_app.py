"""The memory server's HTTP API, in-process, on both store backends."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette

from agentkeel.memory.backends import MemoryBackend
from agentkeel.resilience.clock import ManualClock
from tests.memory.apphelpers import (
    ADMIN,
    TOKEN_A,
    TOKEN_B,
    TOKEN_READER,
    auth,
)
from tests.memory.helpers import raw_sql

A = auth(TOKEN_A)
NS = "agent:a/user:1"


async def create(client: httpx.AsyncClient, content: str, **extra: object) -> dict[str, object]:
    response = await client.post(
        "/v1/memories", json={"namespace": NS, "content": content, **extra}, headers=A
    )
    assert response.status_code == 201, response.text
    memory: dict[str, object] = response.json()["memory"]
    return memory


async def test_probes(client: httpx.AsyncClient) -> None:
    """/health and /ready answer without a token; responses carry a correlation id."""
    health = await client.get("/health", headers={"X-Correlation-ID": "abc-123"})
    assert health.status_code == 200 and health.headers["X-Correlation-ID"] == "abc-123"
    ready = await client.get("/ready")
    assert ready.json() == {"status": "ready", "fenced": False, "read_only": False}


async def test_tokens_are_required(client: httpx.AsyncClient) -> None:
    """No token or an unknown one is a 401 in the error shape."""
    missing = await client.get("/v1/memories", params={"namespace": NS})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "token_missing"
    wrong = await client.get(
        "/v1/memories", params={"namespace": NS}, headers=auth("not-a-real-token-at-all")
    )
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "token_invalid"


async def test_namespaces_outside_the_token_are_forbidden(client: httpx.AsyncClient) -> None:
    """Writing or searching another namespace is 403; a read-only token cannot write;
    another namespace's memory id looks like it does not exist."""
    memory = await create(client, "private to a")
    forbidden = await client.post(
        "/v1/memories", json={"namespace": "agent:b", "content": "x"}, headers=A
    )
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "namespace_forbidden"
    search = await client.get("/v1/memories", params={"namespace": NS}, headers=auth(TOKEN_B))
    assert search.status_code == 403
    other = await client.get(f"/v1/memories/{memory['id']}", headers=auth(TOKEN_B))
    assert other.status_code == 404
    reader = auth(TOKEN_READER)
    assert (await client.get(f"/v1/memories/{memory['id']}", headers=reader)).status_code == 200
    patch = await client.patch(
        f"/v1/memories/{memory['id']}", json={"content": "changed"}, headers=reader
    )
    assert patch.status_code == 403


async def test_create_get_search_update_delete(client: httpx.AsyncClient) -> None:
    """The CRUD and search round trip over HTTP."""
    memory = await create(client, "The user likes green tea", tags=["drinks"], importance=0.9)
    await create(client, "The user rides a bike", tags=["hobby"])
    got = await client.get(f"/v1/memories/{memory['id']}", headers=A)
    assert got.json()["memory"] == memory

    found = await client.get(
        "/v1/memories", params={"namespace": NS, "q": "tea", "tags": "drinks"}, headers=A
    )
    results = found.json()["results"]
    assert [r["memory"]["id"] for r in results] == [memory["id"]]
    assert results[0]["score"] > 0

    updated = await client.patch(
        f"/v1/memories/{memory['id']}", json={"version": 1, "content": "Likes black tea"}, headers=A
    )
    assert updated.status_code == 200 and updated.json()["memory"]["version"] == 2
    stale = await client.patch(
        f"/v1/memories/{memory['id']}", json={"version": 1, "content": "x"}, headers=A
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"

    deleted = await client.delete(f"/v1/memories/{memory['id']}", headers=A)
    assert deleted.status_code == 200 and deleted.json()["deleted"] == memory["id"]
    assert (await client.get(f"/v1/memories/{memory['id']}", headers=A)).status_code == 404


async def test_bad_input_is_a_clear_4xx(client: httpx.AsyncClient) -> None:
    """Malformed JSON is 400, wrong fields 422 naming them, a bad time 422."""
    bad_json = await client.post(
        "/v1/memories", content=b"{nope", headers={**A, "content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"
    missing = await client.post("/v1/memories", json={"namespace": NS}, headers=A)
    assert missing.status_code == 422 and "content" in missing.json()["error"]["message"]
    bad_time = await client.get(
        "/v1/memories", params={"namespace": NS, "since": "yesterday"}, headers=A
    )
    assert bad_time.status_code == 422


async def test_idempotent_retries(client: httpx.AsyncClient) -> None:
    """A create retried with the same Idempotency-Key returns the first result and
    stores one memory; a retried delete answers as the first time."""
    headers = {**A, "Idempotency-Key": "retry-1"}
    body = {"namespace": NS, "content": "only once"}
    first = await client.post("/v1/memories", json=body, headers=headers)
    second = await client.post("/v1/memories", json=body, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["replayed"] is True
    assert second.json()["memory"] == first.json()["memory"]
    listing = await client.get("/v1/memories", params={"namespace": NS}, headers=A)
    assert listing.json()["count"] == 1

    memory_id = first.json()["memory"]["id"]
    delete_headers = {**A, "Idempotency-Key": "delete-1"}
    gone = await client.delete(f"/v1/memories/{memory_id}", headers=delete_headers)
    again = await client.delete(f"/v1/memories/{memory_id}", headers=delete_headers)
    assert gone.status_code == 200 and again.status_code == 200
    assert again.json() == {**gone.json(), "replayed": True}


async def test_idempotency_keys_are_per_token(client: httpx.AsyncClient) -> None:
    """Token B reusing token A's key gets its own write, never A's result."""
    await client.post(
        "/v1/memories",
        json={"namespace": NS, "content": "a's secret"},
        headers={**A, "Idempotency-Key": "shared"},
    )
    other = await client.post(
        "/v1/memories",
        json={"namespace": "agent:b", "content": "b's note"},
        headers={**auth(TOKEN_B), "Idempotency-Key": "shared"},
    )
    assert other.status_code == 201 and "secret" not in other.text


async def test_batch_is_all_or_nothing(client: httpx.AsyncClient) -> None:
    """A batch failing at its second op writes nothing; a good batch writes all."""
    memory = await create(client, "existing")
    failed = await client.post(
        "/v1/memories:batch",
        json={
            "ops": [
                {"op": "create", "namespace": NS, "content": "new one"},
                {"op": "update", "id": memory["id"], "version": 7, "content": "x"},
            ]
        },
        headers=A,
    )
    assert failed.status_code == 409
    listing = await client.get("/v1/memories", params={"namespace": NS}, headers=A)
    assert listing.json()["count"] == 1
    done = await client.post(
        "/v1/memories:batch",
        json={
            "ops": [
                {"op": "create", "namespace": NS, "content": "new one"},
                {"op": "update", "id": memory["id"], "version": 1, "content": "changed"},
                {"op": "delete", "id": memory["id"]},
            ]
        },
        headers=A,
    )
    assert done.status_code == 200
    assert [item["op"] for item in done.json()["items"]] == ["create", "update", "delete"]


async def test_fence_blocks_writes_not_reads(client: httpx.AsyncClient) -> None:
    """While fenced, writes get 503 memory_fenced with Retry-After; reads work; lifting
    the fence restores writes. Only the admin token may fence."""
    memory = await create(client, "before the fence")
    assert (await client.post("/admin/fence", json={}, headers=A)).status_code == 403
    up = await client.post("/admin/fence", json={"reason": "restore"}, headers=auth(ADMIN))
    assert up.json() == {"fenced": True, "already_fenced": False}
    blocked = await client.post("/v1/memories", json={"namespace": NS, "content": "x"}, headers=A)
    assert blocked.status_code == 503
    assert blocked.json()["error"]["code"] == "memory_fenced"
    assert blocked.headers["Retry-After"] == "12"
    patch = await client.patch(f"/v1/memories/{memory['id']}", json={"content": "y"}, headers=A)
    assert patch.status_code == 503
    assert (await client.get(f"/v1/memories/{memory['id']}", headers=A)).status_code == 200
    assert (await client.get("/ready")).json()["fenced"] is True
    down = await client.delete("/admin/fence", headers=auth(ADMIN))
    assert down.json() == {"fenced": False, "was_fenced": True}
    await create(client, "after the fence")


async def test_failed_integrity_check_makes_the_store_read_only(
    served: tuple[Starlette, httpx.AsyncClient], memory_store_url: str
) -> None:
    """A tampered row fails /v1/integrity, sets the metric to 0 and refuses writes
    until an operator clears read-only."""
    _app, client = served
    memory = await create(client, "original")
    ok = await client.get("/v1/integrity", headers=auth(ADMIN))
    assert ok.status_code == 200 and ok.json()["ok"] is True
    raw_sql(memory_store_url, f"UPDATE memories SET content = 'forged' WHERE id = '{memory['id']}'")
    failed = (await client.get("/v1/integrity", headers=auth(ADMIN))).json()
    assert failed["ok"] is False and failed["state"]["bad_memory_ids"] == [memory["id"]]
    assert failed["read_only"] is True
    metrics = (await client.get("/metrics")).text
    assert "agent_memory_integrity_status 0.0" in metrics
    assert "agent_memory_read_only 1.0" in metrics
    refused = await client.post("/v1/memories", json={"namespace": NS, "content": "x"}, headers=A)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "memory_read_only"
    await client.delete("/admin/read-only", headers=auth(ADMIN))
    await create(client, "after repair")


async def test_operation_metrics(client: httpx.AsyncClient) -> None:
    """Operations are counted by GenAI operation name and status; store gauges are set."""
    memory = await create(client, "counted")
    await client.get("/v1/memories", params={"namespace": NS, "q": "counted"}, headers=A)
    await client.patch(f"/v1/memories/{memory['id']}", json={"content": "again"}, headers=A)
    await client.patch(
        f"/v1/memories/{memory['id']}", json={"version": 1, "content": "stale"}, headers=A
    )
    await client.delete(f"/v1/memories/{memory['id']}", headers=A)
    text = (await client.get("/metrics")).text
    for line in (
        'agent_memory_operations_total{operation="create_memory",status="ok"} 1.0',
        'agent_memory_operations_total{operation="search_memory",status="ok"} 1.0',
        'agent_memory_operations_total{operation="update_memory",status="ok"} 1.0',
        'agent_memory_operations_total{operation="update_memory",status="version_conflict"} 1.0',
        'agent_memory_operations_total{operation="delete_memory",status="ok"} 1.0',
        "agent_memory_store_events 3.0",
        "agent_memory_store_memories 0.0",
    ):
        assert line in text, line
    assert "agent_memory_operation_duration_seconds_bucket" in text


async def test_a_common_word_with_since_finds_the_newer_memories(
    client: httpx.AsyncClient, memory_store: MemoryBackend, clock: ManualClock
) -> None:
    """GET /v1/memories?q=common&since=… over 2,000 older memories holding "common"
    returns the 10 newer ones, all of them."""
    for start in range(0, 2000, 500):
        response = await client.post(
            "/v1/memories:batch",
            json={
                "ops": [
                    {"op": "create", "namespace": NS, "content": f"common old {i}"}
                    for i in range(start, start + 500)
                ]
            },
            headers=A,
        )
        assert response.status_code == 200, response.text
    clock.advance(60)
    since = clock.time()
    for index in range(10):
        await create(client, f"common new {index}")
    found = await client.get(
        "/v1/memories", params={"namespace": NS, "q": "common", "since": str(since)}, headers=A
    )
    assert found.status_code == 200, found.text
    body = found.json()
    assert body["count"] == 10 and body["complete"] is True
    assert sorted(r["memory"]["content"] for r in body["results"]) == sorted(
        f"common new {i}" for i in range(10)
    )
