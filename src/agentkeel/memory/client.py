"""``MemoryClient``: the guarded memory handle agents use as ``turn.memory``.

Reads (``search``, ``get``) go to the memory server through a circuit
breaker and timeouts; when the server is down they fail at once with
``MemoryUnavailable``, which an agent can catch and answer without memories.

Writes (``store``, ``update``, ``delete``) get an ``Idempotency-Key`` the
moment they are accepted. The client sends a write straight away when it can;
when the server is down, slow, fenced (503 ``memory_fenced``) or read-only, or
when earlier writes are still waiting, the write goes to the local outbox
(``outbox.py``) and the call returns ``status="queued"`` instead of
``"stored"``. The outbox commit is the acknowledgement: nothing acknowledged
is lost. A background task delivers the outbox oldest first with each write's
own key, so a delivery whose response was lost is a no-op when it is sent
again: in order, exactly once.

    write ──▶ outbox empty, breaker closed, not fenced? ──yes──▶ server ──2xx──▶ stored
                   │ no                                          │ down / 5xx / fenced
                   ▼                                             ▼
                 outbox (same key) ◀─────────────────────────────┘   ──▶ queued
                   │ background delivery, in order, same key
                   ▼
                 server ──2xx──▶ removed    4xx (the write is wrong) ──▶ set aside, kept

While writes are queued, reads do not see them yet.

Every call is a ``memory {operation}`` CLIENT span (``keel.memory.operation``,
``keel.memory.outcome``: ``ok``, ``stored``, ``queued`` or the error code) under the
caller's span, and its request carries the span's ``traceparent``; background outbox
deliveries belong to no turn and open none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from opentelemetry.trace import Span, SpanKind

from agentkeel.config.memory import MemoryClientSettings
from agentkeel.errors import (
    ConfigError,
    InvalidRequest,
    KeelError,
    LimitExceeded,
    MemoryUnavailable,
    NotFound,
    SecretError,
    Unauthorized,
    Unavailable,
)
from agentkeel.memory import planner
from agentkeel.memory.api_client import MemoryApiClient, delete_path
from agentkeel.memory.metrics import MemoryClientMetrics
from agentkeel.memory.outbox import MemoryOutbox, OutboxEntry, OutboxOperation
from agentkeel.memory.store import MemoryRecord, SearchHit
from agentkeel.resilience.breaker import CircuitBreaker
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.telemetry import semconv
from agentkeel.telemetry.metrics import BREAKER_STATE_VALUES
from agentkeel.telemetry.tracing import Tracing, mark_failed, tracing_off

__all__ = ["MemoryClient", "WriteOutcome", "build_memory_client", "outbox_path_for"]

logger = logging.getLogger("agentkeel.memory.client")

_T = TypeVar("_T")
WriteStatus = Literal["stored", "queued"]
_Verdict = Literal["down", "server_error", "paused", "refused", "auth", "local"]

# 503s that mean "healthy, but not taking writes now": wait, do not trip the breaker.
_PAUSE_CODES = frozenset({"memory_fenced", "memory_read_only"})
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What a write did: ``stored`` on the server, or ``queued`` in the local outbox
    (durable, delivered later). ``memory_id`` is known either way: the client
    assigns a new memory's id itself.

    >>> outcome = await turn.memory.store(namespace, "likes tea")
    >>> if outcome.queued:
    ...     ...  # the server has not got it yet; a search will not find it for now
    """

    status: WriteStatus
    operation: OutboxOperation
    memory_id: str
    idempotency_key: str
    memory: MemoryRecord | None = None
    seq: int | None = None
    replayed: bool = False
    outbox_id: int | None = None
    reason: str | None = None

    @property
    def stored(self) -> bool:
        return self.status == "stored"

    @property
    def queued(self) -> bool:
        return self.status == "queued"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "operation": self.operation,
            "id": self.memory_id,
            "idempotency_key": self.idempotency_key,
            "memory": None if self.memory is None else self.memory.to_json(),
            "seq": self.seq,
            "replayed": self.replayed,
            "outbox_id": self.outbox_id,
            "reason": self.reason,
        }


class MemoryClient:
    """Search, get, store, update and delete memories, with a breaker and an outbox.

    Collaborators come in: the HTTP API client, the outbox, the metrics, the
    clock, the breaker and the tracing. ``build_memory_client`` builds them from settings.
    ``open()`` opens the outbox and starts the delivery task; ``aclose()``
    stops them (writes still queued stay in the file for the next start).

    >>> async with build_memory_client(settings.memory_client, url=url, name="replica-1",
    ...         data_dir=Path(".keel"), secrets_dir=None, metrics=metrics) as memory:
    ...     await memory.store("agent:support/user:42", "prefers email", tags=["contact"])
    ...     hits = await memory.search("agent:support/user:42", "email")
    """

    def __init__(
        self,
        *,
        api: MemoryApiClient,
        outbox: MemoryOutbox,
        metrics: MemoryClientMetrics,
        breaker: CircuitBreaker,
        clock: Clock | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        deliver_in_background: bool = True,
        poison_after: int = 10,
        tracing: Tracing | None = None,
    ) -> None:
        self._tracer = (tracing or tracing_off()).tracer("agentkeel.memory.client")
        self._api = api
        self._outbox = outbox
        self._metrics = metrics
        self._breaker = breaker
        self._clock: Clock = clock or SystemClock()
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = max(retry_max_s, retry_initial_s)
        self._deliver_in_background = deliver_in_background
        self._poison_after = poison_after
        self._paused_until = 0.0
        self._pause_reason = ""
        self._open = False
        self._queueing = False
        self._deliver_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        breaker.add_listener(self._on_breaker_change)

    @property
    def url(self) -> str:
        return self._api.base_url

    @property
    def outbox(self) -> MemoryOutbox:
        return self._outbox

    @property
    def breaker(self) -> CircuitBreaker:
        return self._breaker

    @property
    def pending(self) -> int:
        """Writes waiting in the outbox."""
        return self._outbox.pending

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        """Open the outbox and start delivering what it holds (from before, too)."""
        if self._open:
            return
        await self._outbox.open()
        self._open = True
        self._set_depth()
        if self._outbox.pending:
            self._queueing = True
            logger.info(
                "%d memory write(s) left in the outbox %s from an earlier run; delivering them "
                "to %s",
                self._outbox.pending,
                self._outbox.path,
                self.url,
                extra={"event": "memory_outbox"},
            )
        if self._deliver_in_background:
            self._task = asyncio.get_running_loop().create_task(self._delivery_loop())

    async def aclose(self, *, flush_timeout_s: float = 0.0) -> None:
        """Stop delivering (after trying for up to ``flush_timeout_s``) and close.

        Writes still queued stay in the outbox file and go out after the next ``open()``.
        """
        if not self._open:
            await self._api.aclose()
            return
        if flush_timeout_s > 0 and self._outbox.pending:
            await self.flush(timeout_s=flush_timeout_s)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with self._deliver_lock:
            self._open = False
            left = self._outbox.pending
            await self._outbox.aclose()
        await self._api.aclose()
        if left:
            logger.warning(
                "memory client closed with %d write(s) still in the outbox %s; they are "
                "delivered when a client opens that outbox again",
                left,
                self._outbox.path,
                extra={"event": "memory_outbox"},
            )

    async def __aenter__(self) -> MemoryClient:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- reads ----------------------------------------------------------------

    async def search(
        self,
        namespace: str,
        query: str | None = None,
        *,
        limit: int = 10,
        tags: Sequence[str] = (),
        since: float | None = None,
        until: float | None = None,
    ) -> list[SearchHit]:
        """Ranked full-text hits in ``namespace`` (the newest memories without ``query``).

        Raises ``MemoryUnavailable`` at once while the server is down.
        """
        return await self._read(
            "search_memory",
            lambda: self._api.search(
                namespace, query, limit=limit, tags=tags, since=since, until=until
            ),
        )

    async def get(self, memory_id: str) -> MemoryRecord | None:
        """The memory, or None when it does not exist (or this token may not read it)."""
        try:
            return await self._read("get_memory", lambda: self._api.get(memory_id))
        except NotFound:
            return None

    # --- writes ---------------------------------------------------------------

    async def store(
        self,
        namespace: str,
        content: str,
        *,
        tags: Sequence[str] = (),
        importance: float = 0.5,
        metadata: Mapping[str, Any] | None = None,
        memory_id: str | None = None,
    ) -> WriteOutcome:
        """Create a memory; stored now, or queued when the server cannot take it."""
        the_id = memory_id or uuid.uuid4().hex
        planner.check_fields(
            namespace=namespace,
            memory_id=the_id,
            content=content,
            tags=tags,
            importance=importance,
            metadata=metadata or {},
        )
        body = {
            "namespace": namespace,
            "content": content,
            "tags": list(tags),
            "importance": importance,
            "metadata": dict(metadata or {}),
            "id": the_id,
        }
        return await self._write("create_memory", "POST", "/v1/memories", body, the_id)

    async def update(
        self,
        memory_id: str,
        *,
        content: str | None = None,
        tags: Sequence[str] | None = None,
        importance: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        version: int | None = None,
    ) -> WriteOutcome:
        """Change some fields of a memory (``version``: only if it is still at that version)."""
        planner.check_fields(
            memory_id=memory_id,
            content=content,
            tags=tags,
            importance=importance,
            metadata=metadata,
        )
        body: dict[str, Any] = {}
        for key, value in (
            ("content", content),
            ("tags", None if tags is None else list(tags)),
            ("importance", importance),
            ("metadata", None if metadata is None else dict(metadata)),
        ):
            if value is not None:
                body[key] = value
        if not body:
            raise InvalidRequest(
                "update needs at least one of content, tags, importance, metadata."
            )
        if version is not None:
            body["version"] = version
        return await self._write(
            "update_memory", "PATCH", f"/v1/memories/{memory_id}", body, memory_id
        )

    async def delete(self, memory_id: str, *, version: int | None = None) -> WriteOutcome:
        """Delete a memory (the server's log keeps its history)."""
        planner.check_fields(memory_id=memory_id)
        path = delete_path(memory_id, version=version)
        return await self._write("delete_memory", "DELETE", path, None, memory_id)

    # --- the outbox -------------------------------------------------------------

    async def delete_namespace(self, namespace: str) -> int:
        """Delete every memory in ``namespace`` on the server now (no outbox: an erasure
        must not wait); how many were deleted. ``MemoryUnavailable`` when it cannot be
        reached. Used by ``keel sessions forget``."""
        self._require_open()
        with self._traced("delete_namespace") as span:
            data = await self._api.delete_namespace(namespace)
            _outcome(span, "ok")
        return int(data.get("deleted", 0))

    async def deliver_pending(self) -> int:
        """Deliver queued writes oldest first until none is left or one must wait;
        returns how many were delivered. The background task calls this; so can tests."""
        delivered = 0
        async with self._deliver_lock:
            while self._open:
                entry = await self._outbox.peek()
                if entry is None:
                    break
                if self._paused_remaining() > 0 or not self._breaker.allow():
                    break
                outcome = await self._deliver(entry)
                if outcome == "retry":
                    break
                if outcome == "delivered":
                    delivered += 1
            if self._queueing and self._open and self._outbox.pending == 0:
                self._queueing = False
                logger.info(
                    "memory outbox drained: every queued write reached %s",
                    self.url,
                    extra={"event": "memory_outbox"},
                )
        return delivered

    async def flush(self, *, timeout_s: float) -> bool:
        """Deliver the outbox, retrying for up to ``timeout_s``; True when it is empty."""
        deadline = self._clock.monotonic() + timeout_s
        backoff = self._retry_initial_s
        while True:
            await self.deliver_pending()
            if self._outbox.pending == 0:
                return True
            remaining = deadline - self._clock.monotonic()
            if remaining <= 0:
                return False
            await self._clock.sleep(min(max(backoff, self._blocked_for()), remaining))
            backoff = min(backoff * 2, self._retry_max_s)

    async def wait_drained(self) -> None:
        """Return once the outbox is empty (the background task delivers it); bound it
        with ``asyncio.timeout``."""
        await self._drained.wait()

    async def failed_writes(self) -> list[OutboxEntry]:
        """Queued writes the server refused for good (kept in the outbox for an operator)."""
        return await self._outbox.failed()

    # --- internals --------------------------------------------------------------

    def _require_open(self) -> None:
        if not self._open:
            raise MemoryUnavailable(
                "the memory client is not open (the process is starting or shutting down); "
                "retry in a moment.",
                retry_after=1.0,
            )

    @contextlib.contextmanager
    def _traced(self, operation: str) -> Iterator[Span]:
        """The span of one call; a ``KeelError`` out of it is its outcome (a miss,
        ``NotFound``, is an answer, not a failure)."""
        with self._tracer.start_as_current_span(
            f"memory {operation}",
            kind=SpanKind.CLIENT,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():
                span.set_attribute(semconv.KEEL_MEMORY_OPERATION, operation)
            try:
                yield span
            except KeelError as exc:
                _outcome(span, exc.code)
                if not isinstance(exc, NotFound):
                    mark_failed(span, exc.code, exc.message)
                raise

    async def _read(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        with self._traced(operation) as span:
            result = await self._read_now(operation, call)
            _outcome(span, "ok")
            return result

    async def _read_now(self, operation: str, call: Callable[[], Awaitable[_T]]) -> _T:
        self._require_open()
        if not self._breaker.allow():
            wait = self._breaker.retry_after()
            self._metrics.calls_for(operation, MemoryUnavailable.code).inc()
            raise MemoryUnavailable(
                f"memory is unavailable: the memory server at {self.url} failed recently "
                f"({self._breaker.last_open_reason or 'breaker open'}); reads fail fast for "
                f"{wait:.0f}s more. Answer without memories; writes wait in the outbox "
                "meanwhile.",
                retry_after=max(wait, 1.0),
            )
        started = self._clock.monotonic()
        try:
            result = await call()
        except asyncio.CancelledError:
            self._breaker.release()
            raise
        except KeelError as exc:
            verdict = self._judge(exc, self._clock.monotonic() - started)
            if verdict in ("down", "server_error"):
                self._metrics.calls_for(operation, MemoryUnavailable.code).inc()
                raise MemoryUnavailable(
                    f"memory is unavailable: {exc.message} Answer without memories; writes "
                    "wait in the outbox meanwhile.",
                    retry_after=getattr(exc, "retry_after", None) or 1.0,
                ) from exc
            self._metrics.calls_for(operation, exc.code).inc()
            raise
        self._breaker.record_success(self._clock.monotonic() - started)
        self._metrics.calls_for(operation, "ok").inc()
        return result

    async def _write(
        self,
        operation: OutboxOperation,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        memory_id: str,
    ) -> WriteOutcome:
        with self._traced(operation) as span:
            outcome = await self._write_now(operation, method, path, body, memory_id)
            _outcome(span, outcome.status)
            return outcome

    async def _write_now(
        self,
        operation: OutboxOperation,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        memory_id: str,
    ) -> WriteOutcome:
        self._require_open()
        key = uuid.uuid4().hex
        reason = self._queue_reason()
        if reason is None:
            started = self._clock.monotonic()
            try:
                data = await self._api.request(method, path, json=body, idempotency_key=key)
            except asyncio.CancelledError:
                self._breaker.release()
                raise
            except KeelError as exc:
                verdict = self._judge(exc, self._clock.monotonic() - started)
                if verdict in ("refused", "auth", "local"):
                    self._metrics.calls_for(operation, exc.code).inc()
                    raise
                if verdict == "paused":
                    self._pause(exc)
                reason = f"{exc.code}: {exc.message}"
            else:
                self._breaker.record_success(self._clock.monotonic() - started)
                self._metrics.calls_for(operation, "ok").inc()
                return _stored(operation, memory_id, key, data)
        # The same key as the attempt above: if that attempt did reach the server,
        # delivering it again is a no-op there.
        entry = await self._outbox.put(
            operation=operation,
            method=method,
            path=path,
            body=body,
            idempotency_key=key,
            memory_id=memory_id,
        )
        self._set_depth()
        self._metrics.calls_for(operation, "queued").inc()
        if not self._queueing:
            self._queueing = True
            logger.warning(
                "memory writes go to the outbox %s until %s takes them again (%s)",
                self._outbox.path,
                self.url,
                reason,
                extra={"event": "memory_outbox"},
            )
        self._wake.set()
        return WriteOutcome(
            status="queued",
            operation=operation,
            memory_id=memory_id,
            idempotency_key=key,
            outbox_id=entry.id,
            reason=reason,
        )

    def _queue_reason(self) -> str | None:
        """Why a write must go to the outbox now, or None to send it straight away."""
        if self._outbox.pending:
            # Sending now would overtake the writes already waiting.
            return f"{self._outbox.pending} earlier write(s) are still waiting in the outbox"
        if self._paused_remaining() > 0:
            return self._pause_reason
        # Asked last: a True from a half-open breaker is the probe, and must be used.
        if not self._breaker.allow():
            return (
                f"the memory server failed recently "
                f"({self._breaker.last_open_reason or 'breaker open'})"
            )
        return None

    async def _deliver(self, entry: OutboxEntry) -> Literal["delivered", "failed", "retry"]:
        started = self._clock.monotonic()
        try:
            await self._api.request(
                entry.method, entry.path, json=entry.body, idempotency_key=entry.idempotency_key
            )
        except asyncio.CancelledError:
            self._breaker.release()
            raise
        except KeelError as exc:
            verdict = self._judge(exc, self._clock.monotonic() - started)
            error = f"{exc.code}: {exc.message}"
            poisoned = verdict == "server_error" and entry.attempts + 1 >= self._poison_after
            if verdict == "refused" or poisoned:
                await self._outbox.fail(entry.id, error)
                self._set_depth()
                self._metrics.outbox_failed.inc()
                logger.error(
                    "memory server refused queued write %d (%s %s, memory %s) for good: %s. "
                    "It is kept in the outbox %s (state 'failed'); delivery goes on with the "
                    "next one.",
                    entry.id,
                    entry.method,
                    entry.path,
                    entry.memory_id,
                    error,
                    self._outbox.path,
                    extra={"event": "memory_outbox", "status": exc.code},
                )
                return "failed"
            if verdict == "paused":
                self._pause(exc)
            await self._outbox.record_attempt(entry.id, error)
            log = logger.error if verdict in ("auth", "local") else logger.info
            log(
                "queued memory write %d not delivered yet (%s); %d waiting",
                entry.id,
                error,
                self._outbox.pending,
                extra={"event": "memory_outbox", "status": exc.code},
            )
            return "retry"
        self._breaker.record_success(self._clock.monotonic() - started)
        await self._outbox.remove(entry.id)
        self._set_depth()
        self._metrics.outbox_delivered.inc()
        return "delivered"

    def _judge(self, exc: KeelError, latency_s: float) -> _Verdict:
        """Report the call's outcome to the breaker and say what kind of failure it was."""
        if isinstance(exc, SecretError | ConfigError):
            # Our own configuration (the token file); the server was never asked.
            self._breaker.release()
            return "local"
        if isinstance(exc, MemoryUnavailable):
            self._breaker.record_failure()
            return "down"
        if exc.code in _PAUSE_CODES or isinstance(exc, LimitExceeded):
            self._breaker.record_success(latency_s)
            return "paused"
        if isinstance(exc, Unavailable):
            self._breaker.record_failure()
            return "down"
        if exc.status >= 500:
            self._breaker.record_failure()
            return "server_error"
        self._breaker.record_success(latency_s)
        return "auth" if isinstance(exc, Unauthorized) else "refused"

    def _pause(self, exc: KeelError) -> None:
        retry_after = getattr(exc, "retry_after", None) or self._retry_initial_s
        self._paused_until = self._clock.monotonic() + retry_after
        self._pause_reason = f"{exc.code}: {exc.message}"

    def _paused_remaining(self) -> float:
        return max(0.0, self._paused_until - self._clock.monotonic())

    def _blocked_for(self) -> float:
        """How long until a delivery may be tried again (0: now)."""
        breaker_wait = self._breaker.retry_after() if self._breaker.state != "closed" else 0.0
        return max(self._paused_remaining(), breaker_wait)

    async def _delivery_loop(self) -> None:
        backoff = self._retry_initial_s
        while True:
            if self._outbox.pending == 0:
                self._wake.clear()
                await self._wake.wait()
                backoff = self._retry_initial_s
                continue
            before = self._outbox.pending
            try:
                await self.deliver_pending()
            except KeelError as exc:
                logger.error(
                    "memory outbox delivery failed: %s", exc.message, extra={"status": exc.code}
                )
            except Exception:
                logger.exception("memory outbox delivery failed unexpectedly")
            if self._outbox.pending == 0:
                continue
            if self._outbox.pending < before:
                backoff = self._retry_initial_s
            await self._clock.sleep(max(backoff, self._blocked_for()))
            backoff = min(backoff * 2, self._retry_max_s)

    def _set_depth(self) -> None:
        self._metrics.outbox_depth.set(self._outbox.pending)
        if self._outbox.pending:
            self._drained.clear()
        else:
            self._drained.set()

    def _on_breaker_change(self, old: str, new: str) -> None:
        self._metrics.breaker_state.set(BREAKER_STATE_VALUES[new])
        log = logger.warning if new == "open" else logger.info
        log(
            "memory client breaker: %s -> %s%s",
            old,
            new,
            f" ({self._breaker.last_open_reason})" if new == "open" else "",
            extra={"event": "breaker", "status": new},
        )


def _outcome(span: Span, outcome: str) -> None:
    if span.is_recording():
        span.set_attribute(semconv.KEEL_MEMORY_OUTCOME, outcome)


def _stored(
    operation: OutboxOperation, memory_id: str, key: str, data: Mapping[str, Any]
) -> WriteOutcome:
    memory = data.get("memory")
    return WriteOutcome(
        status="stored",
        operation=operation,
        memory_id=memory_id,
        idempotency_key=key,
        memory=MemoryRecord.from_json(memory) if isinstance(memory, Mapping) else None,
        seq=int(data["seq"]) if data.get("seq") is not None else None,
        replayed=bool(data.get("replayed", False)),
    )


# -- building one from settings ---------------------------------------------------------


def outbox_path_for(settings: MemoryClientSettings, *, data_dir: Path, name: str) -> Path:
    """The outbox file of the client called ``name``: one file per client."""
    directory = settings.outbox_dir or (data_dir / "memory-outbox")
    safe = _SAFE_NAME.sub("-", name).strip("-.") or "client"
    return directory / f"{safe}.db"


def _token_path(settings: MemoryClientSettings, secrets_dir: Path | None) -> Path:
    if settings.token_file is not None:
        path = settings.token_file
    elif secrets_dir is not None:
        path = secrets_dir / settings.token_secret
    else:
        raise SecretError(
            "the memory client needs a bearer token: set memory_client.token_file to a file "
            f"that holds it, or put it in secrets_dir as '{settings.token_secret}'."
        )
    if not path.is_file():
        raise SecretError(
            f"the memory client's token file {path} does not exist. Put the token there "
            "(one of the tokens in the memory server's tokens file), or point "
            "memory_client.token_file at the right file."
        )
    return path


def build_memory_client(
    settings: MemoryClientSettings,
    *,
    url: str,
    name: str,
    data_dir: Path,
    secrets_dir: Path | None,
    metrics: MemoryClientMetrics,
    clock: Clock | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    deliver_in_background: bool = True,
    tracing: Tracing | None = None,
) -> MemoryClient:
    """A ``MemoryClient`` for ``url`` (not opened yet) with its outbox under ``data_dir``;
    ``tracing`` gets a span per call.

    ``name`` picks the outbox file, so give every process its own (the replica id).
    Raises ``SecretError`` when the token file is missing.
    """
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"memory server URL {url!r} must start with http:// or https://, e.g. "
            "http://127.0.0.1:8788"
        )
    the_clock: Clock = clock or SystemClock()
    api = MemoryApiClient(
        base_url=url,
        token_file=_token_path(settings, secrets_dir),
        timeout_s=settings.timeout_s,
        connect_timeout_s=settings.connect_timeout_s,
        transport=transport,
    )
    outbox = MemoryOutbox(
        path=outbox_path_for(settings, data_dir=data_dir, name=name), clock=the_clock
    )
    breaker_settings = settings.breaker
    breaker = CircuitBreaker(
        name="memory",
        clock=the_clock,
        failure_threshold=breaker_settings.failure_threshold,
        failure_window_s=breaker_settings.failure_window_s,
        latency_threshold_s=breaker_settings.latency_threshold_s,
        latency_window=breaker_settings.latency_window,
        min_latency_samples=breaker_settings.min_latency_samples,
        open_s=breaker_settings.open_s,
    )
    return MemoryClient(
        api=api,
        outbox=outbox,
        metrics=metrics,
        breaker=breaker,
        clock=the_clock,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
        deliver_in_background=deliver_in_background,
        tracing=tracing,
    )
