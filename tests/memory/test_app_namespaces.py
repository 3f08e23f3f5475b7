"""DELETE /v1/namespaces/{namespace}: every memory in one namespace goes through the normal
delete path (the hash chain still verifies), on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from agentkeel.errors import InvalidRequest
from agentkeel.memory.api_client import MemoryApiClient
from tests.memory.apphelpers import ADMIN, TOKEN_A, TOKEN_B, auth

NS = "agent:a1/user:ana"


async def put_many(client: httpx.AsyncClient, namespace: str, count: int) -> None:
    ops = [{"op": "create", "namespace": namespace, "content": f"note {n}"} for n in range(count)]
    for start in range(0, count, 500):
        response = await client.post(
            "/v1/memories:batch", json={"ops": ops[start : start + 500]}, headers=auth(TOKEN_A)
        )
        assert response.status_code == 200, response.text


async def test_deleting_a_namespace_deletes_every_memory_in_it_and_nothing_else(
    served: tuple[Starlette, httpx.AsyncClient], tmp_path: Path
) -> None:
    """More memories than one batch are all deleted, each as a logged delete event; the
    neighbouring namespace keeps its memories and the integrity check still passes; the
    API client's call answers the same count, and 0 for an empty namespace."""
    app, client = served
    await put_many(client, NS, 503)
    await put_many(client, "agent:a1/user:bob", 2)

    response = await client.delete(f"/v1/namespaces/{NS}", headers=auth(TOKEN_A))

    assert response.status_code == 200
    assert response.json()["deleted"] == 503
    listing = await client.get(
        "/v1/memories", params={"namespace": NS, "limit": 10}, headers=auth(TOKEN_A)
    )
    assert listing.json()["count"] == 0
    kept = await client.get(
        "/v1/memories", params={"namespace": "agent:a1/user:bob"}, headers=auth(TOKEN_A)
    )
    assert kept.json()["count"] == 2
    report = (await client.get("/v1/integrity", headers=auth(ADMIN))).json()
    assert report["ok"] is True
    assert report["events"] == 503 + 2 + 503
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN_A)
    api = MemoryApiClient(
        base_url="http://memory", token_file=token_file, transport=httpx.ASGITransport(app=app)
    )
    async with api:
        assert (await api.delete_namespace(NS))["deleted"] == 0


async def test_deleting_a_namespace_needs_write_access_to_it(client: httpx.AsyncClient) -> None:
    """A token that may not write the namespace is refused with 403 and nothing goes;
    no token is 401."""
    await put_many(client, NS, 1)
    forbidden = await client.delete(f"/v1/namespaces/{NS}", headers=auth(TOKEN_B))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "namespace_forbidden"
    assert (await client.delete(f"/v1/namespaces/{NS}")).status_code == 401
    listing = await client.get("/v1/memories", params={"namespace": NS}, headers=auth(TOKEN_A))
    assert listing.json()["count"] == 1


async def test_a_namespace_with_dot_segments_cannot_reach_another_namespace(
    served: tuple[Starlette, httpx.AsyncClient], tmp_path: Path
) -> None:
    """A user id like 'x/../../agent:a1/user:bob' must not let a forget empty bob's
    namespace: the API client refuses such a name before sending, percent-encodes every
    '/' of the names it sends, and the server refuses dot segments with 422."""
    app, client = served
    await put_many(client, "agent:a1/user:bob", 3)
    forged = "agent:a1/user:x/../../agent:a1/user:bob"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN_A)
    sent: list[str] = []
    asgi = httpx.ASGITransport(app=app)

    async def recording(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.raw_path.decode())
        return await asgi.handle_async_request(request)

    http = httpx.AsyncClient(transport=asgi, base_url="http://memory")
    api = MemoryApiClient(
        base_url="http://memory", token_file=token_file, transport=httpx.MockTransport(recording)
    )
    async with api, http:
        with pytest.raises(InvalidRequest):
            await api.delete_namespace(forged)
        assert (await api.delete_namespace("agent:a1/user:nobody"))["deleted"] == 0
        assert sent == ["/v1/namespaces/agent:a1%2Fuser:nobody"]
        response = await http.delete(
            "/v1/namespaces/agent:a1%2Fuser:x%2F..%2F..%2Fagent:a1%2Fuser:bob",
            headers=auth(TOKEN_A),
        )
    assert response.status_code == 422, response.text
    assert "'..'" in response.json()["error"]["message"]
    kept = await client.get(
        "/v1/memories", params={"namespace": "agent:a1/user:bob"}, headers=auth(TOKEN_A)
    )
    assert kept.json()["count"] == 3
