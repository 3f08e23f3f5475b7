"""`keel chat`'s client: streaming replies, failover between replicas, the prompt loop."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from rich.console import Console

from agentkeel.cli.chat import ChatClient, StreamCallbacks, run_conversation
from agentkeel.errors import LimitExceeded, Unavailable

A = "http://replica-a:8081"
B = "http://replica-b:8082"


def sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def reply_event(turn: int, text: str) -> tuple[str, dict[str, Any]]:
    usage = {"input_tokens": 30, "output_tokens": 7, "total_tokens": 37}
    return ("reply", {"reply": text, "turn": turn, "usage": usage, "tool_calls": []})


class FakeReplica:
    """One replica's answers: draining, down, or serving a session from a shared turn count."""

    def __init__(self, *, state: str = "up", shared: dict[str, int] | None = None) -> None:
        self.state = state
        self.shared = shared if shared is not None else {"turns": 0}
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        if self.state == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if self.state == "draining":
            error = {"error": {"code": "draining", "message": "This replica is draining."}}
            return httpx.Response(503, json=error)
        if self.state == "limited":
            error = {"error": {"code": "rate_limited", "message": "Too many turns."}}
            return httpx.Response(429, json=error)
        if request.url.path == "/v1/sessions":
            return httpx.Response(201, json={"session_id": "s1", "version": "v1"})
        if request.url.path.endswith("/messages"):
            self.shared["turns"] += 1
            body = sse(
                ("token", {"text": "Hel"}),
                ("token", {"text": "lo"}),
                reply_event(self.shared["turns"], "Hello"),
            )
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})


def client_for(replicas: dict[str, Callable[[httpx.Request], httpx.Response]]) -> ChatClient:
    def route(request: httpx.Request) -> httpx.Response:
        return replicas[f"{request.url.scheme}://{request.url.host}:{request.url.port}"](request)

    ticks = iter(float(n) for n in range(1000))
    return ChatClient(
        urls=list(replicas),
        client=httpx.Client(transport=httpx.MockTransport(route)),
        monotonic=lambda: next(ticks),
    )


def test_streamed_tokens_arrive_in_order_and_the_reply_carries_usage() -> None:
    """Token events reach on_token as they come; the reply event gives turn and token counts."""
    chat = client_for({A: FakeReplica()})
    tokens: list[str] = []
    turn = chat.send("s1", "hi", StreamCallbacks(on_token=tokens.append))
    assert tokens == ["Hel", "lo"]
    assert (turn.reply, turn.turn, turn.input_tokens, turn.output_tokens) == ("Hello", 1, 30, 7)
    assert turn.streamed and turn.url == A
    assert turn.latency_s == 1.0


def test_draining_replica_hands_the_session_to_the_next() -> None:
    """A 503 (draining) moves the same session to the next replica, and it stays there."""
    shared = {"turns": 0}
    a, b = FakeReplica(shared=shared), FakeReplica(shared=shared)
    chat = client_for({A: a, B: b})
    assert chat.send("s1", "one").url == A
    a.state = "draining"
    second = chat.send("s1", "two")
    third = chat.send("s1", "three")
    assert (second.url, second.turn) == (B, 2)
    assert (third.url, third.turn) == (B, 3)
    assert a.calls.count("POST /v1/sessions/s1/messages") == 2


def test_replica_that_is_down_is_skipped_when_starting_a_session() -> None:
    """Connection refused on the first URL: the session is created on the next one."""
    chat = client_for({A: FakeReplica(state="down"), B: FakeReplica()})
    assert chat.start_session("alice") == "s1"
    assert chat.url == B


def test_nothing_answering_says_to_start_keel_up() -> None:
    """With every replica down or draining the error names each and asks about keel up."""
    chat = client_for({A: FakeReplica(state="down"), B: FakeReplica(state="draining")})
    with pytest.raises(Unavailable) as caught:
        chat.start_session("alice")
    message = str(caught.value)
    assert "is `keel up` running?" in message.lower()
    assert f"{A}: connection refused" in message
    assert f"{B}: This replica is draining." in message


def test_limit_is_reported_without_trying_another_replica() -> None:
    """A 429 is the caller's limit, not a replica problem: no failover, the error surfaces."""
    b = FakeReplica()
    chat = client_for({A: FakeReplica(state="limited"), B: b})
    with pytest.raises(LimitExceeded, match="Too many turns"):
        chat.send("s1", "hi")
    assert b.calls == []


def test_broken_stream_is_not_retried_elsewhere() -> None:
    """A connection lost mid-reply is reported (the turn may be stored); it is not sent twice."""

    def broken(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            yield sse(("token", {"text": "Hel"}))
            raise httpx.ReadError("connection reset", request=request)

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    b = FakeReplica()
    chat = client_for({A: broken, B: b})
    with pytest.raises(Unavailable, match="broke mid-reply"):
        chat.send("s1", "hi")
    assert b.calls == []


def test_conversation_prints_reply_and_a_stats_line_until_quit() -> None:
    """Each answer is followed by latency, tokens in/out and the turn number; /quit exits 0."""
    chat = client_for({A: FakeReplica()})
    inputs = iter(["hello", "", "again", "/quit"])
    out = io.StringIO()
    code = run_conversation(
        chat, "s1", ask=lambda: next(inputs), console=Console(file=out, width=200)
    )
    text = out.getvalue()
    assert code == 0
    assert text.count("Hello") == 2
    # As the README's sample conversation shows it.
    assert "agent> Hello\n       turn 1 · 1000 ms · 30 in / 7 out tokens\n" in text
    assert "agent> Hello\n       turn 2 · 1000 ms · 30 in / 7 out tokens\n" in text
    assert "answered by" not in text


def test_conversation_says_when_another_replica_answered() -> None:
    """After a failover the stats line is followed by the replica that answered."""
    shared = {"turns": 0}
    first, second = FakeReplica(shared=shared), FakeReplica(shared=shared)
    chat = client_for({A: first, B: second})
    inputs = iter(["hello", "again", "/quit"])

    def ask() -> str:
        text = next(inputs)
        if text == "again":
            first.state = "draining"
        return text

    out = io.StringIO()
    assert run_conversation(chat, "s1", ask=ask, console=Console(file=out, width=200)) == 0
    text = out.getvalue()
    assert text.count("answered by") == 1
    assert f"(answered by {B})" in text


def test_conversation_ends_on_ctrl_d_and_fails_when_nothing_answers() -> None:
    """Ctrl-D (EOF) leaves with 0; losing every replica leaves with 1 and the hint."""

    def eof() -> str:
        raise EOFError

    out = io.StringIO()
    assert (
        run_conversation(client_for({A: FakeReplica()}), "s1", ask=eof, console=Console(file=out))
        == 0
    )
    down = client_for({A: FakeReplica(state="down")})
    assert run_conversation(down, "s1", ask=lambda: "hi", console=Console(file=out)) == 1
