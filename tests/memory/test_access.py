"""Access control: tokens file parsing, and a property test of namespace isolation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkeel.errors import ConfigError
from agentkeel.memory.access import parse_tokens
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.resilience.clock import ManualClock
from tests.memory.apphelpers import TOKEN_A, TOKEN_B, auth, running_app, write_tokens

SECRET = "zebra-secret-of-b"


def test_tokens_file_accepts_bare_mapping_and_patterns() -> None:
    """A mapping without the ``tokens`` key works; patterns match namespaces."""
    principals = parse_tokens(
        '{"' + "t" * 20 + '": {"read": ["agent:x/*"], "write": ["agent:x/user:1"]}}',
        source="test",
    )
    [principal] = principals.values()
    assert principal.can_read("agent:x/user:9") and not principal.can_read("agent:y")
    assert principal.can_write("agent:x/user:1") and not principal.can_write("agent:x/user:2")


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", "short: {read: []}", "{" + '"' + "t" * 20 + '": {"reed": []}}', "a: [b"],
)
def test_bad_tokens_file_is_a_config_error(text: str) -> None:
    """Wrong shapes, short tokens, unknown keys and bad YAML name the problem."""
    with pytest.raises(ConfigError):
        parse_tokens(text, source="tokens.yaml")


_namespaces = st.sampled_from(["agent:a", "agent:a/user:1", "agent:b", "agent:b/user:1", "x"])
_words = st.sampled_from(["zebra", "secret", "tea", "of", "b", "zebra secret", ""])
_call = st.one_of(
    st.tuples(st.just("search"), _namespaces, _words),
    st.tuples(st.just("get"), st.integers(0, 5), st.just("")),
    st.tuples(st.just("patch"), st.integers(0, 5), _words),
    st.tuples(st.just("delete"), st.integers(0, 5), st.just("")),
    st.tuples(st.just("create"), _namespaces, _words),
    st.tuples(st.just("batch"), st.integers(0, 5), _namespaces),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(calls=st.lists(_call, min_size=1, max_size=12))
async def test_token_a_never_sees_namespace_b(
    calls: list[tuple[str, object, object]], tmp_path: Path
) -> None:
    """No sequence of calls with token A returns anything of a namespace only B may read:
    B's content, B's memory ids and B's namespace never appear in a response to A."""
    clock = ManualClock(wall_start=1_700_000_000.0)
    # One directory per hypothesis example (tmp_path is shared by all of them).
    directory = Path(tempfile.mkdtemp(dir=tmp_path, prefix="run-"))
    store = SqliteMemoryStore(path=directory / "m.db", clock=clock)
    await store.open()
    try:
        async with running_app(write_tokens(directory), store, clock) as (_, client):
            b_ids = []
            for namespace in ("agent:b", "agent:b/user:1"):
                response = await client.post(
                    "/v1/memories",
                    json={"namespace": namespace, "content": f"{SECRET} tea", "tags": ["b"]},
                    headers=auth(TOKEN_B),
                )
                b_ids.append(response.json()["memory"]["id"])
            a = await client.post(
                "/v1/memories",
                json={"namespace": "agent:a", "content": "tea"},
                headers=auth(TOKEN_A),
            )
            ids = [*b_ids, a.json()["memory"]["id"], "missing"]
            headers = {**auth(TOKEN_A), "Idempotency-Key": "k"}
            for kind, arg, extra in calls:
                if kind == "search":
                    response = await client.get(
                        "/v1/memories",
                        params={"namespace": str(arg), "q": str(extra)},
                        headers=auth(TOKEN_A),
                    )
                elif kind == "create":
                    response = await client.post(
                        "/v1/memories",
                        json={"namespace": arg, "content": extra or "x"},
                        headers=headers,
                    )
                else:
                    memory_id = ids[int(str(arg)) % len(ids)]
                    if kind == "get":
                        response = await client.get(
                            f"/v1/memories/{memory_id}", headers=auth(TOKEN_A)
                        )
                    elif kind == "patch":
                        response = await client.patch(
                            f"/v1/memories/{memory_id}",
                            json={"content": extra or "y"},
                            headers=auth(TOKEN_A),
                        )
                    elif kind == "delete":
                        response = await client.delete(f"/v1/memories/{memory_id}", headers=headers)
                    else:
                        response = await client.post(
                            "/v1/memories:batch",
                            json={
                                "ops": [
                                    {
                                        "op": "update",
                                        "id": memory_id,
                                        "namespace": extra,
                                        "content": "z",
                                    }
                                ]
                            },
                            headers=auth(TOKEN_A),
                        )
                text = response.text
                assert SECRET not in text
                assert "agent:b" not in text or response.status_code == 403
                for b_id in b_ids:
                    assert b_id not in text or response.status_code == 404
            for b_id in b_ids:
                still = await client.get(f"/v1/memories/{b_id}", headers=auth(TOKEN_B))
                assert still.json()["memory"]["content"] == f"{SECRET} tea"
    finally:
        await store.aclose()
