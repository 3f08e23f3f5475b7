"""``AgentService``: sessions and turns, with every guardrail, and no HTTP.

One turn: check the replica is not draining, validate the input, take the
session's lock (one turn at a time per session), check the turn limit, load
the context, give the agent a ``Turn`` with guarded handles, and commit one
``TurnRecord`` whose parent is the session's head. The turn is acknowledged
only after the store has it; a turn that fails stores nothing.

The live settings of a turn (flags, per-organization and per-user overrides over
the process's settings; ``config/live.py``) are resolved once, right after the
session is loaded under its lock, for the session's user, organization and
``metadata.task``: a flag change takes effect on the next turn of every live
session, and a turn never sees two versions of them.

A session that has ended (deleted, idle, past its maximum duration; see
``lifecycle.py``) refuses turns, rewinds and a second DELETE with 410
``session_ended``, saying when and why.

A session belongs to the user and organization that started it. Every method
that names a session takes the caller's ``Principal`` and answers a session the
caller does not own exactly as an unknown one (404 ``session_not_found``, the
same message), before anything else could tell them apart: before the session
lock (a running turn would be a 409) and before the ended check (a 410).

Every turn is one ``invoke_agent {agent}`` span (GenAI conventions, ``semconv.py``:
INTERNAL, the agent runs in this process), the parent of its ``chat`` and
``execute_tool`` spans, and ends with one ``turn`` log line inside it (turn, steps,
tool calls, tokens, duration, status: INFO, or WARNING with the error code), so the
line carries the turn's trace and span ids. With ``tracing.capture_content`` the span
holds the input once it passed validation (a refused one is never recorded) and the
reply, both through ``Tracing.set_content`` (redacted).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span, SpanKind

from agentkeel.config.live import LiveSettings, TurnContext, TurnSettings
from agentkeel.config.sessions import SessionSettings
from agentkeel.config.settings import GuardrailSettings
from agentkeel.errors import (
    Conflict,
    InputEmpty,
    InputTooLarge,
    InvalidRequest,
    KeelError,
    NotFound,
    RequestError,
    SessionEnded,
    TurnInProgress,
    TurnLimitReached,
)
from agentkeel.identity.principal import ANONYMOUS, Principal
from agentkeel.models.trace_content import text_message_json
from agentkeel.models.types import ChatMessage, Usage
from agentkeel.resilience.budget import TokenBudget
from agentkeel.resilience.clock import Clock
from agentkeel.resilience.ratelimit import RateLimiter
from agentkeel.runtime.draining import DrainState
from agentkeel.runtime.guards import (
    EventSink,
    GuardedModel,
    GuardedTools,
    ModelBackend,
    StepLimitReached,
    TurnLog,
)
from agentkeel.runtime.lifecycle import SessionLifecycle
from agentkeel.runtime.memory_guard import ReadOnlyMemory
from agentkeel.runtime.sanitize import OutputSanitizer
from agentkeel.runtime.store import (
    FeedbackRecord,
    SessionRecord,
    SessionStore,
    TurnRecord,
)
from agentkeel.runtime.types import Agent, Reply, Turn
from agentkeel.runtime.usage import UsageMeter
from agentkeel.runtime.validation import ValidatedInput, validate_input
from agentkeel.telemetry import semconv
from agentkeel.telemetry.correlation import get_correlation_id
from agentkeel.telemetry.metrics import AgentMetrics
from agentkeel.telemetry.tracing import Tracing, mark_failed, tracing_off
from agentkeel.tools.types import ToolContext, ToolSet

logger = logging.getLogger("agentkeel.runtime")

FEEDBACK_MIN = 0.0
FEEDBACK_MAX = 5.0
"""Feedback scores are numbers from 0 (bad) to 5 (excellent); fractions allowed."""


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """A committed turn, as the API returns it."""

    session_id: str
    turn: int
    reply: str
    usage: Usage
    tool_calls: Sequence[Mapping[str, Any]]
    version: str
    agent_id: str
    guardrails: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "reply": self.reply,
            "turn": self.turn,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "tool_calls": [dict(call) for call in self.tool_calls],
            "version": self.version,
            "agent_id": self.agent_id,
            "guardrails": list(self.guardrails),
        }


@dataclass(slots=True)
class _TurnProgress:
    """How far a turn got, for its span and its log line however it ends."""

    number: int | None = None
    content: str | None = None
    """The input once it passed validation (what the agent reads)."""
    model: GuardedModel | None = None
    tools: GuardedTools | None = None
    reply: str | None = None

    @property
    def usage(self) -> Usage:
        return self.model.usage if self.model is not None else Usage()


@dataclass(slots=True)
class _LockEntry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _SessionLocks:
    """One asyncio lock per session that has a turn running or waiting; entries
    go away with their last user, so idle sessions cost nothing."""

    def __init__(self) -> None:
        self._entries: dict[str, _LockEntry] = {}

    @asynccontextmanager
    async def hold(self, session_id: str, *, wait_s: float | None) -> AsyncIterator[None]:
        entry = self._entries.get(session_id)
        if entry is None:
            entry = self._entries[session_id] = _LockEntry()
        entry.users += 1
        acquired = False
        try:
            if wait_s is None:
                if entry.lock.locked():
                    raise TurnInProgress(
                        f"Session '{session_id}' already has a turn running. Wait for its "
                        "reply, then send the next message (or set "
                        "guardrails.concurrent_turns=enqueue to queue messages)."
                    )
                await entry.lock.acquire()
            else:
                try:
                    async with asyncio.timeout(wait_s):
                        await entry.lock.acquire()
                except TimeoutError as exc:
                    raise TurnInProgress(
                        f"Session '{session_id}' still had a turn running after waiting "
                        f"{wait_s:g}s (guardrails.enqueue_timeout_s). Retry once it has replied."
                    ) from exc
            acquired = True
            yield
        finally:
            if acquired:
                entry.lock.release()
            entry.users -= 1
            if entry.users == 0:
                self._entries.pop(session_id, None)


class AgentService:
    """Sessions and turns for one agent, on a shared store.

    Every collaborator is passed in; ``create_app`` builds them from settings.
    ``replica`` names this process in the store (the session's last replica);
    ``lifecycle`` ends, counts and purges sessions (default: the built-in
    ``SessionSettings`` over the same store, metrics and clock). ``tracing`` records
    each turn's spans (default: none).
    """

    def __init__(
        self,
        *,
        agent: Agent,
        agent_id: str,
        version: str,
        store: SessionStore,
        gateway: ModelBackend,
        guardrails: GuardrailSettings,
        metrics: AgentMetrics,
        clock: Clock,
        toolset: ToolSet | None = None,
        allowed_tools: Sequence[str] | None = None,
        budget: TokenBudget | None = None,
        rate_limiter: RateLimiter | None = None,
        drain: DrainState | None = None,
        memory: Any | None = None,
        replica: str = "local",
        lifecycle: SessionLifecycle | None = None,
        sanitizer: OutputSanitizer | None = None,
        live: LiveSettings | None = None,
        usage: UsageMeter | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.agent = agent
        self.agent_id = agent_id
        self.version = version
        self.store = store
        self.gateway = gateway
        self.guardrails = guardrails
        self.metrics = metrics
        self.clock = clock
        self.toolset = toolset
        self.allowed_tools = tuple(allowed_tools) if allowed_tools is not None else None
        self.budget = budget
        self.rate_limiter = rate_limiter
        self.drain = drain or DrainState(metrics=metrics, clock=clock)
        self.memory = memory
        self.replica = replica
        self.lifecycle = lifecycle or SessionLifecycle(
            store=store,
            settings=SessionSettings(),
            metrics=metrics,
            clock=clock,
            replica=replica,
            version=version,
            memory=memory,
        )
        self.sanitizer = sanitizer
        self.usage = usage
        """Records each model call's usage and spend (``usage.py``); ``None``: not recorded."""
        self.live = live
        """Resolves each turn's live settings; ``None``: ``guardrails`` and ``allowed_tools``
        as given, for every turn."""
        self._read_only_memory = ReadOnlyMemory(memory) if memory is not None else None
        # What a turn's tools run through: redacting when output is sanitized (built once).
        self._turn_toolset = sanitizer.tools(toolset) if sanitizer is not None else toolset
        """Replaces secrets in replies, streamed tokens and tool results (``sanitize.py``)."""
        self._locks = _SessionLocks()
        self.tracing = tracing or tracing_off()
        self._tracer = self.tracing.tracer("agentkeel.runtime")
        self._turn_span_name = semconv.span_name(semconv.OP_INVOKE_AGENT, agent_id)

    # -- sessions -------------------------------------------------------------

    async def create_session(
        self,
        user_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        organization: str | None = None,
    ) -> SessionRecord:
        """Start a session for ``user_id`` of ``organization``. Raises ``Draining`` while
        draining."""
        self.drain.check()
        now = self.clock.time()
        record = SessionRecord(
            session_id=uuid.uuid4().hex,
            user_id=user_id,
            agent_id=self.agent_id,
            version=self.version,
            created_at=now,
            metadata=dict(metadata or {}),
            last_active_at=now,
            replica=self.replica,
            organization=organization,
        )
        await self.store.create_session(record)
        await self.refresh_active_sessions()
        logger.info(
            "session started",
            extra={"session_id": record.session_id, "agent_id": self.agent_id},
        )
        return record

    async def owned_session(
        self, session_id: str, principal: Principal = ANONYMOUS
    ) -> SessionRecord:
        """The session, if ``principal`` owns it; 404 ``session_not_found`` when it is
        unknown or someone else's (one error, built in one place, for both)."""
        session = await self.store.get_session(session_id)
        if session is None or not principal.owns(session.user_id, session.organization):
            raise _unknown_session(session_id)
        return session

    async def get_session(
        self, session_id: str, principal: Principal = ANONYMOUS
    ) -> tuple[SessionRecord, list[TurnRecord]]:
        """The session and all its stored turns (rewound ones included); an ended one
        too, with ``ended_at`` and ``end_reason``, until it is purged."""
        session = await self.owned_session(session_id, principal)
        session = await self.lifecycle.end_if_expired(session, grace=True)
        return session, await self.store.list_turns(session_id)

    async def end_session(self, session_id: str, principal: Principal = ANONYMOUS) -> SessionRecord:
        """End a session (reason ``deleted``); later turns on it get 410 ``session_ended``,
        as does a DELETE of a session that had already ended."""
        await self._active_session(session_id, principal)
        ended = await self.lifecycle.end_deleted(session_id)
        if ended is None:
            raise await self._ended_error(session_id)
        await self.refresh_active_sessions()
        return ended

    async def rewind(
        self, session_id: str, turn: int, principal: Principal = ANONYMOUS
    ) -> SessionRecord:
        """Move the session's head back to ``turn`` (0 = before the first turn); the
        next turn continues from there and the later turns leave the context."""
        # Owners never change, so one check before the lock covers the whole rewind.
        await self.owned_session(session_id, principal)
        async with self._locks.hold(session_id, wait_s=None):
            session = await self._active_session(session_id)
            if not 0 <= turn <= session.turn_count:
                raise InvalidRequest(
                    f"Cannot rewind session '{session_id}' to turn {turn}: it has turns "
                    f"1..{session.turn_count}. Pick one of those, or 0 for the start."
                )
            record = await self.store.rewind(session_id, turn)
        logger.info(
            "session rewound from turn %d to turn %d",
            session.head,
            turn,
            extra={"session_id": session_id, "agent_id": self.agent_id},
        )
        return record

    async def feedback(
        self,
        session_id: str,
        score: float,
        *,
        turn: int | None = None,
        comment: str | None = None,
        principal: Principal = ANONYMOUS,
    ) -> FeedbackRecord:
        """Record a user-satisfaction score from 0 to 5 for a session (or one turn)."""
        if not FEEDBACK_MIN <= score <= FEEDBACK_MAX:
            raise InvalidRequest(
                f"Feedback score {score} is out of range; send a number from "
                f"{FEEDBACK_MIN:g} to {FEEDBACK_MAX:g}."
            )
        session = await self.owned_session(session_id, principal)
        if turn is not None and not 1 <= turn <= session.turn_count:
            raise InvalidRequest(
                f"Feedback names turn {turn}, but session '{session_id}' has turns "
                f"1..{session.turn_count}. Omit 'turn' to rate the whole session."
            )
        record = FeedbackRecord(
            session_id=session_id,
            score=score,
            created_at=self.clock.time(),
            turn=turn,
            comment=comment,
        )
        await self.store.add_feedback(record)
        self.metrics.feedback_for(self.agent_id).observe(score)
        return record

    async def refresh_active_sessions(self) -> None:
        """Set the active-sessions gauge from the store's count."""
        self.metrics.active_sessions.set(await self.store.count_active_sessions())

    # -- turns ------------------------------------------------------------------

    async def run_turn(
        self, session_id: str, content: str, *, sink: EventSink | None = None
    ) -> TurnOutcome:
        """Run one turn and commit it. ``sink`` receives the stream events.

        The caller has checked ownership (``owned_session``) before starting the turn's
        task, so that an attempt on someone else's session never reaches the lock."""
        start = self.clock.monotonic()
        progress = _TurnProgress()
        with self._tracer.start_as_current_span(
            self._turn_span_name,
            kind=SpanKind.INTERNAL,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():
                self._describe_turn(span, session_id)
            try:
                outcome = await self._run_turn(session_id, content, sink, progress, start)
            except KeelError as exc:
                # A refused input's message may quote it: the code says enough there.
                said = None if isinstance(exc, RequestError) else exc.message
                self._end_turn(span, session_id, progress, start, exc.code, said)
                raise
            except BaseException as exc:
                status = (
                    "cancelled" if isinstance(exc, asyncio.CancelledError) else "internal_error"
                )
                self._end_turn(span, session_id, progress, start, status, type(exc).__qualname__)
                raise
            self._end_turn(span, session_id, progress, start, "ok")
        return outcome

    async def _run_turn(
        self,
        session_id: str,
        content: str,
        sink: EventSink | None,
        progress: _TurnProgress,
        start: float,
    ) -> TurnOutcome:
        stream = self.sanitizer.stream(sink) if self.sanitizer is not None else None
        if stream is not None:
            sink = stream
        try:
            with self.drain.track():
                # Without live settings the input is checked before waiting for the lock;
                # with them, once the turn's own limits are known (a flag may raise them).
                checked = self._validate(content) if self.live is None else None
                if checked is not None:
                    progress.content = checked.content
                self.metrics.turns_in_flight.inc()
                try:
                    wait_s = (
                        self.guardrails.enqueue_timeout_s
                        if self.guardrails.concurrent_turns == "enqueue"
                        else None
                    )
                    async with self._locks.hold(session_id, wait_s=wait_s):
                        outcome = await self._run_locked(
                            session_id, content, checked, sink, progress
                        )
                finally:
                    self.metrics.turns_in_flight.dec()
                    if stream is not None:
                        await stream.flush()
        except KeelError as exc:
            self.metrics.turns_for(self.agent_id, exc.code).inc()
            raise
        self.metrics.turns_for(self.agent_id, "ok").inc()
        self.metrics.turn_duration_for(self.agent_id).observe(self.clock.monotonic() - start)
        self.metrics.turn_tokens_for(self.agent_id).observe(outcome.usage.total_tokens)
        return outcome

    def _describe_turn(self, span: Span, session_id: str) -> None:
        span.set_attributes(
            {
                semconv.GEN_AI_OPERATION_NAME: semconv.OP_INVOKE_AGENT,
                semconv.GEN_AI_AGENT_ID: self.agent_id,
                semconv.GEN_AI_AGENT_NAME: self.agent_id,
                semconv.GEN_AI_CONVERSATION_ID: session_id,
                semconv.KEEL_AGENT_VERSION: self.version,
            }
        )
        correlation_id = get_correlation_id()
        if correlation_id is not None:
            span.set_attribute(semconv.KEEL_CORRELATION_ID, correlation_id)

    def _end_turn(
        self,
        span: Span,
        session_id: str,
        progress: _TurnProgress,
        start: float,
        status: str,
        error: str | None = None,
    ) -> None:
        """The turn's span attributes and its one ``turn`` log line (inside the span)."""
        steps = progress.model.steps if progress.model is not None else 0
        tool_calls = len(progress.tools.calls) if progress.tools is not None else 0
        usage = progress.usage
        if span.is_recording():
            span.set_attributes(
                {
                    semconv.KEEL_TURN_STEPS: steps,
                    semconv.KEEL_TURN_TOOL_CALLS: tool_calls,
                    semconv.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
                    semconv.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
                }
            )
            if progress.number is not None:
                span.set_attribute(semconv.KEEL_TURN, progress.number)
            if self.tracing.capture_content and progress.content is not None:
                self.tracing.set_content(
                    span, semconv.GEN_AI_INPUT_MESSAGES, text_message_json("user", progress.content)
                )
            if self.tracing.capture_content and progress.reply is not None:
                self.tracing.set_content(
                    span,
                    semconv.GEN_AI_OUTPUT_MESSAGES,
                    text_message_json("assistant", progress.reply, finish_reason="stop"),
                )
        if status != "ok":
            mark_failed(span, status, error)
        fields: dict[str, Any] = {
            "event": "turn",
            "session_id": session_id,
            "agent_id": self.agent_id,
            "steps": steps,
            "tool_calls": tool_calls,
            "tokens": usage.total_tokens,
            "duration_ms": round((self.clock.monotonic() - start) * 1000, 3),
            "status": status,
        }
        if progress.number is not None:
            fields["turn"] = progress.number
        summary = (steps, tool_calls, usage.total_tokens)
        if status == "ok":
            logger.info(
                "turn committed: %d model step(s), %d tool call(s), %d tokens",
                *summary,
                extra=fields,
            )
        else:
            logger.warning(
                "turn failed (%s): %d model step(s), %d tool call(s), %d tokens",
                status,
                *summary,
                extra=fields,
            )

    def _validate(
        self, content: str, guardrails: GuardrailSettings | None = None
    ) -> ValidatedInput:
        guardrails = guardrails or self.guardrails
        try:
            checked = validate_input(
                content,
                max_input_chars=guardrails.max_input_chars,
                block_prompt_injection=guardrails.block_prompt_injection,
            )
        except InputTooLarge:
            self.metrics.guardrails_for("input_too_large", self.agent_id).inc()
            raise
        except InputEmpty:
            self.metrics.guardrails_for("input_empty", self.agent_id).inc()
            raise
        except InvalidRequest:
            self.metrics.guardrails_for("prompt_injection", self.agent_id).inc()
            logger.warning(
                "prompt injection blocked",
                extra={"agent_id": self.agent_id, "event": "guardrail"},
            )
            raise
        for flag in checked.flags:
            self.metrics.guardrails_for(flag, self.agent_id).inc()
        if checked.markers:
            logger.warning(
                "possible prompt injection flagged (%s); passing it on",
                ", ".join(repr(m) for m in checked.markers),
                extra={"agent_id": self.agent_id, "event": "guardrail"},
            )
        return checked

    def turn_settings(self, session: SessionRecord) -> TurnSettings | None:
        """The live settings for the next turn of ``session`` (``None`` without ``live``)."""
        if self.live is None:
            return None
        task = session.metadata.get("task")
        return self.live.for_turn(
            TurnContext(
                user_id=session.user_id,
                organization=session.organization,
                agent_id=self.agent_id,
                version=self.version,
                session_id=session.session_id,
                task=task if isinstance(task, str) else None,
            )
        )

    async def _run_locked(
        self,
        session_id: str,
        content: str,
        checked: ValidatedInput | None,
        sink: EventSink | None,
        progress: _TurnProgress,
    ) -> TurnOutcome:
        session = await self._active_session(session_id)
        settings = self.turn_settings(session)
        guardrails = settings.guardrails if settings is not None else self.guardrails
        if checked is None:
            checked = self._validate(content, guardrails)
        progress.content = checked.content
        limit = guardrails.max_turns_per_session
        if session.turn_count >= limit:
            self.metrics.guardrails_for("turn_limit", self.agent_id).inc()
            raise TurnLimitReached(
                f"Session '{session_id}' has reached its limit of {limit} turns "
                "(guardrails.max_turns_per_session). Start a new session to continue."
            )
        number = session.turn_count + 1
        progress.number = number
        history = [
            m for record in await self.store.context_turns(session_id) for m in record.messages
        ]
        correlation_id = get_correlation_id()
        log = TurnLog(
            logger,
            {"session_id": session_id, "turn": number, "agent_id": self.agent_id},
        )
        model = GuardedModel(
            gateway=self.gateway,
            metrics=self.metrics,
            log=log,
            agent_id=self.agent_id,
            session_id=session_id,
            user_id=session.user_id,
            organization=session.organization,
            max_steps=guardrails.max_steps_per_turn,
            max_output_tokens=guardrails.max_output_tokens,
            context_trim_ratio=guardrails.context_trim_ratio,
            budget=self.budget,
            sink=sink,
            settings=settings,
            usage=self.usage,
        )
        memory_writes = settings.memory_writes if settings is not None else True
        tools = GuardedTools(
            toolset=self._turn_toolset,
            context=ToolContext(
                agent_id=self.agent_id,
                session_id=session_id,
                user_id=session.user_id,
                turn=number,
                correlation_id=correlation_id,
                organization=session.organization,
            ),
            metrics=self.metrics,
            log=log,
            clock=self.clock,
            allowed=settings.tools if settings is not None else self.allowed_tools,
            storm_threshold=guardrails.tool_storm_threshold,
            rate_limiter=self.rate_limiter,
            sink=sink,
            memory_writes=memory_writes,
            tracing=self.tracing,
        )
        progress.model, progress.tools = model, tools
        turn = Turn(
            session_id=session_id,
            user_id=session.user_id,
            agent_id=self.agent_id,
            number=number,
            content=checked.content,
            history=history,
            model=model,
            tools=tools,
            log=log,
            memory=self.memory if memory_writes else self._read_only_memory,
            metadata=session.metadata,
            settings=settings,
        )
        started_at = self.clock.time()
        reply = await self._respond(turn, log, correlation_id)
        if self.sanitizer is not None:
            reply = self.sanitizer.reply(reply)
        progress.reply = reply.content
        user_message = ChatMessage(role="user", content=checked.content)
        kept = list(reply.messages) or [ChatMessage(role="assistant", content=reply.content)]
        record = TurnRecord(
            session_id=session_id,
            number=number,
            parent=session.head,
            content=checked.content,
            reply=reply.content,
            messages=[user_message, *kept],
            usage=model.usage,
            tool_calls=tools.calls,
            started_at=started_at,
            completed_at=self.clock.time(),
            version=self.version,
            correlation_id=correlation_id,
            replica=self.replica,
        )
        try:
            await self.store.append_turn(record)
        except SessionEnded as exc:
            # Another replica recorded its end while this turn ran.
            raise await self._ended_error(session_id) from exc
        except Conflict as exc:
            raise Conflict(
                f"Turn {number} of session '{session_id}' was not stored: another turn or a "
                "rewind on this session was committed while it ran. Fetch the session and "
                "send the message again."
            ) from exc
        return TurnOutcome(
            session_id=session_id,
            turn=number,
            reply=reply.content,
            usage=model.usage,
            tool_calls=tools.calls,
            version=self.version,
            agent_id=self.agent_id,
            guardrails=checked.flags,
        )

    async def _respond(
        self, turn: Turn, log: logging.LoggerAdapter[logging.Logger], correlation_id: str | None
    ) -> Reply:
        try:
            reply = await self.agent.respond(turn)
        except StepLimitReached as stop:
            # A custom agent that does not handle the step limit still ends the
            # turn with a reply, as ToolAgent does.
            return Reply(content=stop.reply)
        except KeelError:
            raise
        except Exception as exc:
            log.exception("the agent raised %s while answering", type(exc).__name__)
            raise _agent_error(turn, correlation_id) from exc
        if not isinstance(reply, Reply) or not isinstance(reply.content, str):
            log.error(
                "the agent returned %s instead of a Reply with text content",
                type(reply).__name__,
            )
            raise _agent_error(turn, correlation_id)
        return reply

    async def _active_session(
        self, session_id: str, principal: Principal = ANONYMOUS
    ) -> SessionRecord:
        """The session if it takes changes; 404 if unknown (or not ``principal``'s), 410
        if it has ended (an expired one is ended here first)."""
        session = await self.owned_session(session_id, principal)
        session = await self.lifecycle.end_if_expired(session)
        if session.ended_at is not None:
            raise self.lifecycle.ended_error(session)
        return session

    async def _ended_error(self, session_id: str) -> KeelError:
        session = await self.store.get_session(session_id)
        if session is None:
            return _unknown_session(session_id)
        return self.lifecycle.ended_error(session)


def _unknown_session(session_id: str) -> NotFound:
    return NotFound(
        f"Session '{session_id}' does not exist. Check the id, or create a session with "
        "POST /v1/sessions.",
        code="session_not_found",
    )


def _agent_error(turn: Turn, correlation_id: str | None) -> KeelError:
    return KeelError(
        f"The agent failed while answering turn {turn.number}; nothing was stored. This is "
        f"a server-side fault: retry, and if it persists report correlation id "
        f"{correlation_id or 'unknown'}, under which the server log has the details.",
        code="agent_error",
    )
