"""The router's admin API: tokens, audit lines, bad bodies, and ``RouterAdminClient`` as
the ``RouterControl`` the rollout controller uses."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from agentkeel.deploy.types import RouterControl
from agentkeel.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unavailable
from agentkeel.router import RouterAdminClient
from tests.integration.test_drain import free_port
from tests.router.backends import RawBackend, created, echo
from tests.router.conftest import ADMIN_TOKEN, StartRouter


async def test_admin_calls_need_the_token(start_router: StartRouter) -> None:
    """No token: 401 naming the header; a wrong one: 403; GETs and changes alike."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        missing = await client.get("/admin/versions")
        wrong = await client.post(
            "/admin/weights",
            json={"weights": {"v1": 1}},
            headers={"Authorization": "Bearer " + "w" * 40},
        )
        not_bearer = await client.get("/admin/pins", headers={"Authorization": ADMIN_TOKEN})
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.text
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert not_bearer.status_code == 401
    assert router.table.versions["v1"].weight == 100
    assert backend.seen == [s for s in backend.seen if s.path == "/ready"]
    await backend.stop()


async def test_without_a_configured_token_the_admin_api_is_off(
    start_router: StartRouter, tmp_path: Path
) -> None:
    """No token file: 403 admin_disabled naming router.admin_token_file."""
    backend = await RawBackend(echo).start()
    router = await start_router(
        [f"v1={backend.url}"], admin_token_file=tmp_path / "absent", admin_token_secret="absent"
    )
    async with httpx.AsyncClient(base_url=router.url) as client:
        answer = await client.get(
            "/admin/versions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "admin_disabled"
    assert "router.admin_token_file" in answer.json()["error"]["message"]
    await backend.stop()


async def test_every_change_is_audit_logged(
    start_router: StartRouter, admin_token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each RouterControl change writes one audit line naming the action and a fingerprint
    of the token (never the token); a refused change is audited with its error code."""
    v1 = await RawBackend(echo).start()
    v2 = await RawBackend(echo).start()
    extra = await RawBackend(echo).start()
    router = await start_router([f"v1={v1.url}"])
    control: RouterControl = RouterAdminClient(base_url=router.url, token_file=admin_token_file)
    with caplog.at_level(logging.INFO, logger="agentkeel.audit"):
        await control.put_version("v2", replicas=[v2.url], weight=0, policy="move-at-turn")
        await control.set_weights({"v1": 90, "v2": 10})
        await control.add_replica("v2", extra.url)
        await control.drain_replica(extra.url)
        await control.remove_replica(extra.url)
        await control.retire_version("v2")
        with pytest.raises(Conflict):
            await control.retire_version("v1")
        await control.remove_version("v2")
    records = [r for r in caplog.records if getattr(r, "category", None) == "audit"]
    actions = [(r.action, r.outcome) for r in records]  # type: ignore[attr-defined]
    assert actions == [
        ("router.put_version", "ok"),
        ("router.set_weights", "ok"),
        ("router.add_replica", "ok"),
        ("router.drain_replica", "ok"),
        ("router.remove_replica", "ok"),
        ("router.retire_version", "ok"),
        ("router.retire_version", "stable_version"),
        ("router.remove_version", "ok"),
    ]
    for record in records:
        assert record.actor.startswith("router.admin_token:sha256:")  # type: ignore[attr-defined]
        assert ADMIN_TOKEN not in record.getMessage()
    await control.aclose()  # type: ignore[attr-defined]
    for backend in (v1, v2, extra):
        await backend.stop()


async def test_the_admin_client_reads_what_it_changed(
    start_router: StartRouter, admin_token_file: Path
) -> None:
    """versions() shows replicas, readiness, draining and pins; remove_version drops its
    pins; pin_stats counts them."""
    v1 = await RawBackend(created("s-one")).start()
    v2 = await RawBackend(created("s-two")).start()
    router = await start_router([f"v1={v1.url}", f"v2={v2.url}"])
    async with RouterAdminClient(base_url=router.url, token_file=admin_token_file) as admin:
        await admin.set_weights({"v1": 0, "v2": 1})
        async with httpx.AsyncClient(base_url=router.url) as client:
            assert (await client.post("/v1/sessions", json={})).json()["session_id"] == "s-two"
        stable, versions = await admin.versions()
        assert stable == "v1"
        by_name = {version.version: version for version in versions}
        assert by_name["v2"].pinned_sessions == 1 and by_name["v2"].weight == 1
        assert by_name["v1"].replicas[0].url == v1.url and by_name["v1"].replicas[0].ready
        assert await admin.pin_stats() == {"v1": 0, "v2": 1}
        await admin.remove_version("v2")
        assert await admin.pin_stats() == {"v1": 0}
        assert await router.store.get("s-two") is None
        stats = await admin.stats()
    assert stats["versions"]["v2"]["by_status"] == {"201": 1}
    await v1.stop()
    await v2.stop()


async def test_bad_admin_requests_say_what_is_wrong(
    start_router: StartRouter, admin_token_file: Path, admin_headers: dict[str, str]
) -> None:
    """Unknown versions 404, bad bodies 422 naming the field, the stable version 409,
    unknown routes 404; nothing changes."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    revision = router.table.doc.revision
    async with RouterAdminClient(base_url=router.url, token_file=admin_token_file) as admin:
        with pytest.raises(NotFound, match="nope"):
            await admin.set_weights({"nope": 1})
        with pytest.raises(InvalidRequest, match="weight"):
            await admin.set_weights({"v1": -5})
        with pytest.raises(InvalidRequest, match="policy"):
            await admin.put_version("v2", policy="sometimes")  # type: ignore[arg-type]
        with pytest.raises(Conflict):
            await admin.remove_version("v1")
        with pytest.raises(NotFound):
            await admin.drain_replica("http://127.0.0.1:1")
    async with httpx.AsyncClient(base_url=router.url, headers=admin_headers) as client:
        not_json = await client.post("/admin/weights", content=b"{nope")
        wrong_type = await client.post("/admin/weights", json={"weights": {"v1": "ten"}})
        unknown = await client.get("/admin/no-such-route")
    assert not_json.status_code == 422 and "not JSON" in not_json.text
    assert wrong_type.status_code == 422 and "weights.v1" in wrong_type.text
    assert unknown.status_code == 404
    assert router.table.doc.revision == revision
    await backend.stop()


async def test_a_drained_replica_gets_nothing_new(
    start_router: StartRouter, admin_token_file: Path
) -> None:
    """After POST /admin/replicas/drain, every new request goes to the other replica; the
    drained one is still listed, ready but draining."""
    first = await RawBackend(echo).start()
    second = await RawBackend(echo).start()
    router = await start_router([f"v1={first.url}", f"v1={second.url}"])
    async with RouterAdminClient(base_url=router.url, token_file=admin_token_file) as admin:
        await admin.drain_replica(first.url)
        async with httpx.AsyncClient(base_url=router.url) as client:
            for _ in range(5):
                assert (await client.get("/v1/x")).status_code == 200
        _, versions = await admin.versions()
    assert first.v1_requests == [] and len(second.v1_requests) == 5
    drained = next(r for r in versions[0].replicas if r.url == first.url)
    assert drained.draining and drained.ready
    await first.stop()
    await second.stop()


async def test_metrics_show_the_router_families(start_router: StartRouter) -> None:
    """/metrics has the router's own families with version labels."""
    backend = await RawBackend(created("s")).start()
    router = await start_router([f"v1={backend.url}"])
    async with httpx.AsyncClient(base_url=router.url) as client:
        await client.post("/v1/sessions", json={})
        text = (await client.get("/metrics")).text
    for family in (
        'agent_router_requests_total{route="create_session",status="201",version="v1"} 1.0',
        "agent_router_request_duration_seconds_bucket",
        'agent_router_pinned_sessions{version="v1"} 1.0',
        'agent_router_ready_replicas{version="v1"} 1.0',
    ):
        assert family in text
    await backend.stop()


async def test_an_unreachable_router_is_unavailable_naming_it(admin_token_file: Path) -> None:
    """The client names the URL when nothing listens there."""
    url = f"http://127.0.0.1:{free_port()}"
    async with RouterAdminClient(base_url=url, token_file=admin_token_file) as admin:
        with pytest.raises(Unavailable, match="cannot reach the router"):
            await admin.versions()


async def test_a_forged_token_file_is_refused(start_router: StartRouter, tmp_path: Path) -> None:
    """A client holding another token gets Forbidden, not a table."""
    backend = await RawBackend(echo).start()
    router = await start_router([f"v1={backend.url}"])
    forged = tmp_path / "forged"
    forged.write_text("f" * 40)
    async with RouterAdminClient(base_url=router.url, token_file=forged) as admin:
        with pytest.raises(Forbidden):
            await admin.pin_stats()
    await backend.stop()


async def test_the_router_reports_its_admin_token_generations_for_rotation(
    start_router: StartRouter,
) -> None:
    """``GET /admin/secrets`` names the admin token and its generation (never the
    value); the refresh answers the same report; /metrics has the token's age."""
    backend = await RawBackend(echo).start()
    try:
        router = await start_router([f"v1={backend.url}"])
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(base_url=router.url) as client:
            report = (await client.get("/admin/secrets", headers=headers)).json()
            refreshed = (await client.post("/admin/secrets/refresh", headers=headers)).json()
            metrics = (await client.get("/metrics")).text
    finally:
        await backend.stop()
    assert report["service"] == "router", report
    assert [(e["generations"], e["current"]) for e in report["secrets"]] == [([1], 1)]
    assert [e["generations"] for e in refreshed["secrets"]] == [[1]]
    assert ADMIN_TOKEN not in str(report)
    assert "agent_secret_age_seconds{secret=" in metrics
