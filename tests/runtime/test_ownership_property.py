"""Property: across two replicas sharing one store, nobody touches another's session.

Hypothesis draws sequences of operations (create, read, turn, streamed turn, rewind,
delete, feedback) by users with their own keys, users of two organizations (the
same user id in both), and organization-level keys. Each operation goes to one of
two replicas sharing a SQLite file, served directly (API key) or "through the
router" (a front-door assertion). A model of who owns what predicts every
answer: an owner's operation does what it should; anyone else's answers exactly
as the same request for an unknown session id does (status, body with the id
normalised, headers), and in the end every session holds only its owners' turns,
feedback and deletion.
"""

from __future__ import annotations

import tempfile
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkeel.identity.principal import Principal
from tests.runtime.auth_replicas import AuthStack, Key, Replica, make_auth_stack, start_replica

ORG_USERS = {"acme": ("ana", "bob"), "globex": ("ana", "cyd")}
# (key name, organization, fixed user or None for an organization key)
ACTORS = (
    ("ana.acme", "acme", "ana"),
    ("bob.acme", "acme", "bob"),
    ("acme-app", "acme", None),
    ("ana.globex", "globex", "ana"),
    ("cyd.globex", "globex", "cyd"),
    ("globex-app", "globex", None),
)
KINDS = ("create", "read", "turn", "stream", "rewind", "delete", "feedback")
NO_LIMITS = {
    "requests_per_minute_per_key": 0,
    "requests_per_minute_per_user": 0,
    "concurrent_turns_per_key": 0,
    "concurrent_turns_per_user": 0,
}


@dataclass
class Owned:
    """The model of one session: its owner and what its owners did to it."""

    session_id: str
    user: str
    organization: str
    turns: int = 0
    feedback: int = 0
    ended: bool = False


@dataclass(frozen=True)
class Op:
    actor: int
    kind: str
    target: int
    """Which known session (modulo their number); past the end: an unknown id."""
    replica: int
    via_router: bool
    user_pick: int


_ops = st.builds(
    Op,
    actor=st.integers(0, len(ACTORS) - 1),
    kind=st.sampled_from(KINDS),
    target=st.integers(0, 9),
    replica=st.integers(0, 1),
    via_router=st.booleans(),
    user_pick=st.integers(0, 1),
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> AuthStack:
    """One keys file and identity key for every example (each gets its own store)."""
    stack = make_auth_stack(tmp_path_factory.mktemp("ownership"))
    for name, organization, user in ACTORS:
        stack.add_key(name, organization=organization, user=user)
    return stack


def owns(principal: Principal, session: Owned) -> bool:
    return principal.owns(session.user, session.organization)


def request_for(op: Op, session_id: str) -> tuple[str, str, dict[str, Any] | None, dict[str, str]]:
    path = f"/v1/sessions/{session_id}"
    if op.kind == "read":
        return "GET", path, None, {}
    if op.kind == "delete":
        return "DELETE", path, None, {}
    if op.kind == "turn":
        return "POST", f"{path}/messages", {"content": "hello"}, {}
    if op.kind == "stream":
        return "POST", f"{path}/messages", {"content": "hello"}, {"Accept": "text/event-stream"}
    if op.kind == "rewind":
        return "POST", f"{path}/rewind", {"turn": 0}, {}
    return "POST", f"{path}/feedback", {"score": 3}, {}


def normalised(response: httpx.Response, session_id: str) -> tuple[int, str, list[tuple[str, str]]]:
    headers = [
        (name.lower(), value)
        for name, value in response.headers.items()
        if name.lower() != "x-correlation-id"
    ]
    return response.status_code, response.text.replace(session_id, "<id>"), sorted(headers)


def expected_status(op: Op, session: Owned) -> int:
    if op.kind == "read":
        return 200
    if op.kind == "feedback":
        return 201
    return 410 if session.ended else 200


def apply(op: Op, session: Owned) -> None:
    if op.kind in ("turn", "stream") and not session.ended:
        session.turns += 1
    elif op.kind == "delete":
        session.ended = True
    elif op.kind == "feedback":
        session.feedback += 1


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(_ops, min_size=1, max_size=14))
async def test_no_user_ever_touches_another_users_session(
    ops: list[Op], stack: AuthStack, tmp_path: Path
) -> None:
    """Every operation on someone else's session answers as for an unknown id and
    changes nothing; every owner's operation does what the model says."""
    directory = Path(tempfile.mkdtemp(dir=tmp_path, prefix="run-"))
    config = stack.settings(
        store={"url": f"sqlite:///{directory / 'sessions.db'}"},
        auth={"limits": NO_LIMITS},
    )
    signer = stack.signer()
    async with AsyncExitStack() as exits:
        replicas: list[Replica] = [
            await start_replica(exits, config, name=f"replica-{n}") for n in range(2)
        ]
        sessions: list[Owned] = []

        def headers_of(op: Op) -> dict[str, str]:
            key: Key = stack.keys[ACTORS[op.actor][0]]
            if op.via_router:
                return {"x-keel-caller": signer.sign(key.principal)}
            return key.headers

        for op in ops:
            name, organization, fixed_user = ACTORS[op.actor]
            principal = stack.keys[name].principal
            client = replicas[op.replica].client
            headers = headers_of(op)
            if op.kind == "create":
                user = fixed_user or ORG_USERS[organization][op.user_pick]
                create_body = {} if fixed_user else {"user_id": user}
                response = await client.post("/v1/sessions", json=create_body, headers=headers)
                assert response.status_code == 201, response.text
                created = response.json()
                assert (created["user_id"], created["organization"]) == (user, organization)
                sessions.append(Owned(created["session_id"], user, organization))
                continue

            target = sessions[op.target % len(sessions)] if op.target < 8 and sessions else None
            session_id = target.session_id if target else uuid.uuid4().hex
            method, path, body, extra = request_for(op, session_id)
            response = await client.request(method, path, json=body, headers={**headers, **extra})
            if target is not None and owns(principal, target):
                assert response.status_code == expected_status(op, target), (op, response.text)
                apply(op, target)
                continue
            # Not the caller's (or truly unknown): the unknown-session answer, to the byte.
            assert response.status_code == 404, (op, response.text)
            assert response.json()["error"]["code"] == "session_not_found"
            unknown_id = uuid.uuid4().hex
            method, path, body, extra = request_for(op, unknown_id)
            unknown = await client.request(
                method, path, json=body, headers={**headers_of(op), **extra}
            )
            assert normalised(response, session_id) == normalised(unknown, unknown_id)

        store = replicas[0].app.state.service.store
        for session in sessions:
            record = await store.get_session(session.session_id)
            assert record is not None
            assert (record.user_id, record.organization) == (session.user, session.organization)
            assert record.turn_count == session.turns
            assert (record.ended_at is not None) == session.ended
            assert len(await store.list_feedback(session.session_id)) == session.feedback
