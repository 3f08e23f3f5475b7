"""``keel chat``: a conversation with the agent in the terminal.

Replies stream over server-sent events and print as they arrive, followed by a
dim line with the latency, the tokens (in/out) and the turn number. By default
it talks to the router of the ``keel up`` stack in the data directory, which
keeps the session on the version it started on (see ``cli/stack.py``); given
several URLs (``--url`` repeats, or the stack's replicas when it runs no
router), when the one in use answers 503 (draining) or is down, the same
session goes on at the next one, since every replica reads the same session
store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.prompt import Prompt

from agentkeel.cli.config_cmd import load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, print_error, stdout_console
from agentkeel.cli.stack import LocalStack
from agentkeel.errors import (
    Conflict,
    KeelError,
    LimitExceeded,
    NotFound,
    RequestError,
    Unavailable,
)

T = TypeVar("T")

QUIT_COMMANDS = frozenset({"/quit", "/exit", "/q"})
USER_PROMPT_SUFFIX = "> "
AGENT_PROMPT = "agent> "
_INDENT = " " * len(AGENT_PROMPT)
_TIMEOUT = httpx.Timeout(connect=3.0, read=300.0, write=10.0, pool=10.0)


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """One answered turn as ``keel chat`` shows it."""

    reply: str
    turn: int
    input_tokens: int
    output_tokens: int
    latency_s: float
    url: str
    streamed: bool
    tool_calls: Sequence[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class StreamCallbacks:
    """What to do with stream events as they arrive (all optional)."""

    on_token: Callable[[str], None] | None = None
    on_tool_call: Callable[[dict[str, Any]], None] | None = None
    on_tool_result: Callable[[dict[str, Any]], None] | None = None


class _UserPrompt(Prompt):
    """``you> `` as in the README's sample conversation (Rich's default ends in ``: ``)."""

    prompt_suffix = USER_PROMPT_SUFFIX


class ReplicaDown(Exception):
    """The replica in use cannot take this request (down or draining); try the next."""


class ChatClient:
    """Talks to agent replicas over HTTP, moving on when one is draining or down.

    >>> chat = ChatClient(urls=["http://127.0.0.1:8081", "http://127.0.0.1:8082"],
    ...                   client=httpx.Client(timeout=30))
    >>> session_id = chat.start_session("alice")
    >>> chat.send(session_id, "hello").reply
    """

    def __init__(
        self,
        *,
        urls: Sequence[str],
        client: httpx.Client,
        monotonic: Callable[[], float] = time.monotonic,
        urls_source: str | None = None,
    ) -> None:
        if not urls:
            raise RequestError("keel chat needs at least one --url.")
        self.urls = [url.rstrip("/") for url in urls]
        self._client = client
        self._monotonic = monotonic
        self._current = 0
        self._urls_source = urls_source

    @property
    def url(self) -> str:
        """The replica in use."""
        return self.urls[self._current]

    def start_session(self, user_id: str) -> str:
        """Create a session on the first replica that answers; returns its id."""
        body = self._on_any_replica(
            lambda url: self._json("POST", f"{url}/v1/sessions", json={"user_id": user_id})
        )
        return str(body["session_id"])

    def get_session(self, session_id: str) -> dict[str, Any]:
        """The session and its turns (``NotFound`` when no replica knows it)."""
        return self._on_any_replica(
            lambda url: self._json("GET", f"{url}/v1/sessions/{session_id}")
        )

    def send(
        self, session_id: str, content: str, callbacks: StreamCallbacks | None = None
    ) -> ChatTurn:
        """Run one turn, streaming; moves to the next replica only if the turn never started."""
        events = callbacks or StreamCallbacks()
        return self._on_any_replica(lambda url: self._stream_turn(url, session_id, content, events))

    def _on_any_replica(self, call: Callable[[str], T]) -> T:
        reasons: list[str] = []
        for _ in self.urls:
            url = self.url
            try:
                return call(url)
            except ReplicaDown as exc:
                reasons.append(f"{url}: {exc}")
                self._current = (self._current + 1) % len(self.urls)
        origin = (
            f" (replica URLs from {self._urls_source})"
            if self._urls_source and self._urls_source != "--url"
            else ""
        )
        raise Unavailable(
            "No agent replica answered ("
            + "; ".join(reasons)
            + f"){origin}. Is `keel up` running? Start it, or point --url at a running replica."
        )

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ReplicaDown(_describe(exc)) from exc
        _raise_for_error(response)
        body: dict[str, Any] = response.json()
        return body

    def _stream_turn(
        self, url: str, session_id: str, content: str, callbacks: StreamCallbacks
    ) -> ChatTurn:
        started = self._monotonic()
        request = self._client.build_request(
            "POST",
            f"{url}/v1/sessions/{session_id}/messages",
            json={"content": content},
            headers={"Accept": "text/event-stream"},
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise ReplicaDown(_describe(exc)) from exc
        try:
            if response.status_code != 200:
                response.read()
                _raise_for_error(response)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                # A server that answered with plain JSON instead of a stream.
                return _turn_from(response.json(), started, self._monotonic(), url, False)
            streamed = False
            try:
                for event, data in _sse_events(response.iter_lines()):
                    if event == "token":
                        streamed = True
                        if callbacks.on_token is not None:
                            callbacks.on_token(str(data.get("text", "")))
                    elif event == "tool_call" and callbacks.on_tool_call is not None:
                        callbacks.on_tool_call(data)
                    elif event == "tool_result" and callbacks.on_tool_result is not None:
                        callbacks.on_tool_result(data)
                    elif event == "reply":
                        return _turn_from(data, started, self._monotonic(), url, streamed)
                    elif event == "error":
                        raise _error_from(data, status=500)
            except httpx.TransportError as exc:
                # The turn started; it may have been stored. Sending it again could
                # double it, so the user decides.
                raise Unavailable(
                    f"The connection to {url} broke mid-reply ({_describe(exc)}). The turn "
                    "may or may not have been saved: check with `/history`, then send it again."
                ) from exc
            raise Unavailable(
                f"{url} ended the stream without a reply. The turn may not have been saved: "
                "check with `/history`, then send it again."
            )
        finally:
            response.close()


def _turn_from(
    data: dict[str, Any], started: float, finished: float, url: str, streamed: bool
) -> ChatTurn:
    usage = data.get("usage") or {}
    return ChatTurn(
        reply=str(data.get("reply", "")),
        turn=int(data.get("turn", 0)),
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        latency_s=max(finished - started, 0.0),
        url=url,
        streamed=streamed,
        tool_calls=list(data.get("tool_calls") or []),
    )


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Parse ``event:``/``data:`` blocks; data is JSON (multi-line data joined by newlines)."""
    event = "message"
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, _load_json("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[len("event:") :].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:") :].removeprefix(" "))
    if data:
        yield event, _load_json("\n".join(data))


def _load_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        data = response.json()
    except ValueError:
        data = {"error": {"code": "http_error", "message": response.text[:200]}}
    if response.status_code == 503:
        message = (data.get("error") or {}).get("message") or "503 Service Unavailable"
        raise ReplicaDown(message)
    raise _error_from(data, status=response.status_code)


def _error_from(data: dict[str, Any], *, status: int) -> KeelError:
    error = data.get("error") or {}
    code = str(error.get("code") or "error")
    message = str(error.get("message") or f"the replica answered HTTP {status}")
    if status == 404:
        return NotFound(message, code=code)
    if status == 409:
        return Conflict(message, code=code)
    if status == 429:
        return LimitExceeded(message, code=code)
    if 400 <= status < 500:
        return RequestError(message, code=code)
    return Unavailable(message, code=code)


def _describe(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return type(exc).__name__


def run_conversation(
    chat: ChatClient,
    session_id: str,
    *,
    ask: Callable[[], str],
    console: Console,
    restart: Callable[[], str] | None = None,
) -> int:
    """The prompt loop: ask, send, print; ``/quit`` or Ctrl-D ends it. Returns the exit code.

    A turn refused for a reason the user can act on (a limit, a bad input)
    prints its message and the conversation goes on; when no replica answers
    at all the loop ends with exit code 1. When the session has ended (idle too
    long), ``restart`` starts a new one and the conversation goes on in it.
    Output reads like the README's sample::

        you> What is the capital of France?
        agent> The capital of France is Paris.
               turn 1 · 412 ms · 38 in / 9 out tokens
    """
    replica = chat.url
    while True:
        try:
            text = ask().strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return 0
        if not text:
            continue
        if text in QUIT_COMMANDS:
            return 0
        if text == "/history":
            _print_history(chat.get_session(session_id), console)
            continue
        console.print(f"[bold green]{AGENT_PROMPT}[/]", end="")
        callbacks = StreamCallbacks(
            on_token=lambda fragment: console.print(
                fragment, end="", markup=False, highlight=False, soft_wrap=True
            ),
            on_tool_call=lambda call: console.print(
                f"\n[dim]-> {escape(str(call.get('name')))}"
                f"({escape(json.dumps(call.get('arguments', {})))})[/]"
            ),
            on_tool_result=lambda result: console.print(
                f"[dim]<- {escape(str(result.get('status')))}: "
                f"{escape(str(result.get('content', ''))[:200])}[/]"
            ),
        )
        try:
            turn = chat.send(session_id, text, callbacks)
        except Unavailable as exc:
            console.print()
            print_error(exc)
            if "No agent replica answered" in exc.message:
                return 1
            continue
        except KeelError as exc:
            console.print()
            print_error(exc)
            if exc.code == "session_ended" and restart is not None:
                session_id = restart()
                console.print(f"[dim]started a new session {session_id}; send it again[/]")
            continue
        if not turn.streamed:
            console.print(turn.reply, markup=False, highlight=False, soft_wrap=True, end="")
        console.print()
        console.print(f"[dim]{stats_line(turn)}[/]")
        if turn.url != replica:
            console.print(f"[dim]{_INDENT}(answered by {escape(turn.url)})[/]")
            replica = turn.url


def stats_line(turn: ChatTurn) -> str:
    """``turn 1 · 412 ms · 38 in / 9 out tokens``, indented under the reply."""
    return (
        f"{_INDENT}turn {turn.turn} · {turn.latency_s * 1000:.0f} ms · "
        f"{turn.input_tokens} in / {turn.output_tokens} out tokens"
    )


def _print_history(session: dict[str, Any], console: Console) -> None:
    turns = session.get("turns") or []
    console.print(f"[dim]session {session.get('session_id')}: {len(turns)} turn(s)[/]")
    for turn in turns:
        console.print(f"[bold cyan]you[/] {escape(str(turn.get('content', '')))}")
        console.print(f"[bold green]agent[/] {escape(str(turn.get('reply', '')))}")


@exits_on_keel_error
def chat(
    ctx: typer.Context,
    urls: Annotated[
        list[str] | None,
        typer.Option(
            "--url",
            help="The router's or a replica's base URL; repeat for failover (default: "
            "router.port when set, else the keel up stack's router, else up.base_port and "
            "up.replicas when set, else the stack's replicas, else 8081 and 8082).",
        ),
    ] = None,
    user: Annotated[str, typer.Option("--user", help="Your user id on the server.")] = "me",
    session: Annotated[
        str | None, typer.Option("--session", help="Resume this session instead of a new one.")
    ] = None,
) -> None:
    """Talk to the agent in the terminal; replies stream as they are written.

    Type /quit (or press Ctrl-D) to leave, /history to see the session so far.
    """
    stack = LocalStack.from_settings(load_cli_settings(ctx))
    targets, source = stack.agent_urls(urls)
    console = stdout_console()
    with httpx.Client(timeout=_TIMEOUT, trust_env=False) as client:
        chat_client = ChatClient(urls=targets, client=client, urls_source=source)
        if session is None:
            session_id = chat_client.start_session(user)
            console.print(f"[dim]session {session_id} on {chat_client.url} · /quit to leave[/]")
        else:
            found = chat_client.get_session(session)
            session_id = session
            console.print(
                f"[dim]resumed session {session_id} ({found.get('turn_count', 0)} turns) "
                f"on {chat_client.url} · /quit to leave[/]"
            )
        code = run_conversation(
            chat_client,
            session_id,
            ask=lambda: _UserPrompt.ask("[bold cyan]you[/]", console=console),
            console=console,
            restart=lambda: chat_client.start_session(user),
        )
    if code:
        raise typer.Exit(code)
