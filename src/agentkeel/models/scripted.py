"""A model provider that follows a script: deterministic replies for tests and demos.

A script is a list of steps, consumed one per model call:

- ``Say("text")`` replies with text;
- ``CallTools(...)`` asks for one or more tool calls;
- ``Fail("timeout" | "rate_limited" | "server_error" | "bad_request")`` raises the
  matching ``ProviderError``, as a real endpoint's failure would surface; with
  ``streamed="text"`` it first streams that text (to a streaming caller), as an
  endpoint that dies in the middle of a reply;
- ``Wait(seconds)`` waits on the clock, then the same call goes on to the next step.

Each **conversation** has its own cursor; a conversation is identified by the
content of its first user message, so every turn of one session walks the same
script while sessions that open differently start from the top. With
``cursor="global"`` every call shares one cursor instead.

When a conversation runs past the end of the script the provider either
repeats the last step (``on_end="repeat"``; a model that calls the same tool
forever) or answers ``echo: <last user message>`` (``on_end="echo"``, the
default). An empty script always echoes.

The same script as YAML (``ScriptedProvider.from_file``)::

    on_end: repeat          # or echo
    steps:
      - say: "Let me calculate that."
      - tool_calls:
          - {tool: calculator, arguments: {expression: "2 + 2"}}
      - error: rate_limited
        retry_after: 2
      - error: server_error       # dies mid-reply
        streamed: "The answer is"
      - wait: 1.5
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

import yaml

from agentkeel.errors import ConfigError, ProviderError, ProviderRateLimited, ProviderTimeout
from agentkeel.models.tokens import estimate_text_tokens, estimate_tokens
from agentkeel.models.types import (
    ChatMessage,
    ModelRequest,
    ModelResponse,
    TokenCallback,
    ToolCall,
    Usage,
)
from agentkeel.resilience.clock import Clock, SystemClock

ErrorKind = Literal["timeout", "rate_limited", "server_error", "bad_request"]
OnEnd = Literal["repeat", "echo"]
CursorMode = Literal["conversation", "global"]


@dataclass(frozen=True, slots=True)
class Say:
    """Reply with ``text``."""

    text: str


@dataclass(frozen=True, slots=True)
class CallTools:
    """Ask for tool calls, each a ``(tool name, arguments)`` pair.

    >>> CallTools.one("calculator", expression="2 + 2")
    """

    calls: tuple[tuple[str, Mapping[str, Any]], ...]
    text: str = ""

    @classmethod
    def one(cls, tool: str, /, **arguments: Any) -> CallTools:
        """A step that calls a single tool."""
        return cls(calls=((tool, arguments),))


@dataclass(frozen=True, slots=True)
class Fail:
    """Raise the error a real endpoint would cause, after streaming ``streamed`` (if any)."""

    error: ErrorKind
    retry_after: float | None = None
    streamed: str = ""


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait ``seconds`` on the provider's clock, then carry on with the next step."""

    seconds: float


ScriptStep: TypeAlias = Say | CallTools | Fail | Wait
StepLike: TypeAlias = ScriptStep | str | Mapping[str, Any]
"""A step, or what ``parse_step`` turns into one: a string (a reply) or a YAML-style mapping."""


@dataclass(slots=True)
class _Cursor:
    position: int = 0
    tool_calls: int = 0


@dataclass(frozen=True, slots=True)
class Script:
    """Parsed steps plus what to do once they run out."""

    steps: tuple[ScriptStep, ...]
    on_end: OnEnd = "echo"


def parse_step(raw: StepLike) -> ScriptStep:
    """One step from a string (a reply) or a mapping with one of say / tool_calls /
    error / wait."""
    if isinstance(raw, Say | CallTools | Fail | Wait):
        return raw
    if isinstance(raw, str):
        return Say(raw)
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"Script step {raw!r} is neither text nor a mapping; write e.g. "
            "{say: 'hello'} or {tool_calls: [{tool: calculator, arguments: {...}}]}."
        )
    if "say" in raw or "reply" in raw:
        return Say(str(raw.get("say", raw.get("reply"))))
    if "tool_calls" in raw or "tool" in raw:
        entries = raw.get("tool_calls", [raw])
        calls: list[tuple[str, Mapping[str, Any]]] = []
        for entry in entries:
            if not isinstance(entry, Mapping) or "tool" not in entry:
                raise ConfigError(
                    f"Script tool call {entry!r} needs a 'tool' name and optional 'arguments'."
                )
            arguments = entry.get("arguments") or {}
            if not isinstance(arguments, Mapping):
                raise ConfigError(
                    f"Script tool call '{entry['tool']}' has arguments {arguments!r}; "
                    "arguments must be a mapping."
                )
            calls.append((str(entry["tool"]), dict(arguments)))
        return CallTools(calls=tuple(calls), text=str(raw.get("say", "")))
    if "error" in raw:
        error = raw["error"]
        if error not in get_args(ErrorKind):
            raise ConfigError(
                f"Script error {error!r} is unknown; use one of {', '.join(get_args(ErrorKind))}."
            )
        retry_after = raw.get("retry_after")
        return Fail(
            error=error,
            retry_after=float(retry_after) if retry_after is not None else None,
            streamed=str(raw.get("streamed") or ""),
        )
    if "wait" in raw or "delay" in raw:
        return Wait(float(raw.get("wait", raw.get("delay", 0.0))))
    raise ConfigError(
        f"Script step {dict(raw)!r} has none of the keys say, tool_calls, error, wait."
    )


def load_script(path: Path, *, on_end: OnEnd = "echo") -> Script:
    """Read a YAML script: a list of steps, or a mapping with ``steps`` and ``on_end``
    (which overrides the ``on_end`` given here)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"Model script '{path}' cannot be read ({exc.strerror}); check models[].script."
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"Model script '{path}' is not valid YAML: {exc}") from exc
    if data is None:
        return Script(steps=(), on_end=on_end)
    if isinstance(data, list):
        return Script(steps=tuple(parse_step(step) for step in data), on_end=on_end)
    if isinstance(data, Mapping):
        chosen = data.get("on_end", on_end)
        if chosen not in get_args(OnEnd):
            raise ConfigError(f"Model script '{path}': on_end is {chosen!r}; use repeat or echo.")
        steps = data.get("steps") or []
        return Script(steps=tuple(parse_step(step) for step in steps), on_end=chosen)
    raise ConfigError(
        f"Model script '{path}' holds a {type(data).__name__}; write a list of steps "
        "or a mapping with 'steps'."
    )


@dataclass(slots=True, kw_only=True, eq=False)
class ScriptedProvider:
    """A ``ModelProvider`` that replies from a script instead of a model.

    >>> provider = ScriptedProvider(
    ...     script=[CallTools.one("calculator", expression="2 + 2"), Say("It is 4.")],
    ...     clock=ManualClock(),
    ... )

    ``requests`` keeps every request received, for assertions.
    """

    script: Sequence[StepLike] | Path = ()
    name: str = "scripted"
    model: str = "scripted"
    latency_s: float = 0.0
    clock: Clock = field(default_factory=SystemClock)
    context_window: int = 8192
    on_end: OnEnd = "echo"
    cursor: CursorMode = "conversation"
    supports_tools: bool = True
    system: str = "scripted"
    requests: list[ModelRequest] = field(default_factory=list, init=False, repr=False)
    _script: Script = field(init=False, repr=False)
    _cursors: dict[str, _Cursor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.script, Path):
            self._script = load_script(self.script, on_end=self.on_end)
        else:
            self._script = Script(
                steps=tuple(parse_step(step) for step in self.script), on_end=self.on_end
            )

    @classmethod
    def from_file(cls, path: Path | str, **options: Any) -> ScriptedProvider:
        """A provider whose script (and its ``on_end``) come from a YAML file."""
        return cls(script=Path(path), **options)

    @property
    def steps(self) -> tuple[ScriptStep, ...]:
        return self._script.steps

    def reset(self) -> None:
        """Start every conversation from the top of the script again."""
        self._cursors.clear()
        self.requests.clear()

    async def complete(
        self, request: ModelRequest, *, on_token: TokenCallback | None = None
    ) -> ModelResponse:
        self.requests.append(request)
        if self.latency_s > 0:
            await self.clock.sleep(self.latency_s)
        cursor = self._cursors.setdefault(self._conversation_key(request.messages), _Cursor())
        step = await self._next_step(cursor)
        input_tokens = estimate_tokens(request.messages, request.tools)
        if isinstance(step, Fail):
            if step.streamed and on_token is not None:
                await _stream_words(step.streamed, on_token)
            raise self._error(step)
        if isinstance(step, CallTools):
            calls = []
            for tool, arguments in step.calls:
                cursor.tool_calls += 1
                calls.append(
                    ToolCall(id=f"call_{cursor.tool_calls}", name=tool, arguments=dict(arguments))
                )
            if step.text and on_token is not None:
                await _stream_words(step.text, on_token)
            out = estimate_text_tokens(step.text) + sum(
                estimate_text_tokens(f"{c.name}{c.arguments}") for c in calls
            )
            return ModelResponse(
                content=step.text,
                tool_calls=tuple(calls),
                usage=Usage(input_tokens=input_tokens, output_tokens=out),
                model=self.model,
                provider=self.name,
                finish_reason="tool_calls",
            )
        text = step.text if step is not None else f"echo: {_last_user_message(request.messages)}"
        if on_token is not None:
            await _stream_words(text, on_token)
        return ModelResponse(
            content=text,
            usage=Usage(input_tokens=input_tokens, output_tokens=estimate_text_tokens(text)),
            model=self.model,
            provider=self.name,
        )

    async def aclose(self) -> None:
        return None

    async def _next_step(self, cursor: _Cursor) -> Say | CallTools | Fail | None:
        """The next step that produces an outcome (waiting out any Wait steps first);
        None means the default echo reply."""
        steps = self._script.steps
        while cursor.position < len(steps):
            step = steps[cursor.position]
            cursor.position += 1
            if isinstance(step, Wait):
                await self.clock.sleep(step.seconds)
                continue
            return step
        if self._script.on_end == "repeat":
            for step in reversed(steps):
                if not isinstance(step, Wait):
                    return step
        return None

    def _conversation_key(self, messages: Sequence[ChatMessage]) -> str:
        if self.cursor == "global":
            return ""
        for message in messages:
            if message.role == "user":
                return message.content
        return ""

    def _error(self, step: Fail) -> ProviderError:
        where = f"scripted provider '{self.name}'"
        if step.error == "timeout":
            return ProviderTimeout(
                f"timeout (scripted) from {where}", provider=self.name, retryable=True
            )
        if step.error == "rate_limited":
            after = f", retry after {step.retry_after:g}s" if step.retry_after is not None else ""
            return ProviderRateLimited(
                f"rate limited (HTTP 429{after}, scripted) by {where}",
                provider=self.name,
                retryable=True,
                retry_after=step.retry_after,
                status_code=429,
            )
        if step.error == "server_error":
            return ProviderError(
                f"server error (HTTP 500, scripted) from {where}",
                provider=self.name,
                retryable=True,
                retry_after=step.retry_after,
                status_code=500,
            )
        return ProviderError(
            f"bad request (HTTP 400, scripted) from {where}",
            provider=self.name,
            retryable=False,
            status_code=400,
        )


_WORDS = re.compile(r"\S+\s*|\s+")


async def _stream_words(text: str, on_token: TokenCallback) -> None:
    for piece in _WORDS.findall(text):
        await on_token(piece)


def _last_user_message(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""
