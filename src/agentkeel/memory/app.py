"""The memory server's HTTP API (v1) as a Starlette app: ``create_app(settings)``.

    POST   /v1/memories              create               (Idempotency-Key honoured)
    GET    /v1/memories              search: q, namespace, tags, since, until, limit
    GET    /v1/memories/{id}         read one
    PATCH  /v1/memories/{id}         update (optimistic ``version``)
    DELETE /v1/memories/{id}         delete (optional ``?version=``)
    POST   /v1/memories:batch        several ops, all or none
    DELETE /v1/namespaces/{namespace} delete every memory in it (write access to it)
    GET    /v1/integrity             hash chain + state check            (admin)
    POST   /v1/restore               point in time: snapshot_id | at | seq (admin)
    GET    /v1/quarantine            events moved aside by restores      (admin)
    POST   /v1/quarantine/{id}/replay                                   (admin)
    POST   /v1/snapshots, GET /v1/snapshots, POST /v1/snapshots/{id}/verify,
    POST   /v1/snapshots:prune                                           (admin)
    POST/DELETE /admin/fence, DELETE /admin/read-only                   (admin)

Every caller presents a bearer token (``access.py``); a memory in a namespace
the token may not read is reported as not found, so ids never leak data.

A request that carries W3C ``traceparent`` (a replica's memory client sends it) runs
inside that trace, so the server's log lines for it carry the caller's ``trace_id``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import datetime
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.config.memory import MemorySettings
from agentkeel.errors import InvalidRequest, KeelError, NotFound, Unavailable
from agentkeel.memory.access import AccessControl, Principal
from agentkeel.memory.backends import open_memory_store
from agentkeel.memory.gate import WriteGate
from agentkeel.memory.integrity import IntegrityReport, check_integrity
from agentkeel.memory.metrics import MemoryMetrics
from agentkeel.memory.planner import MAX_BATCH_OPS, check_namespace
from agentkeel.memory.scheduler import MemoryScheduler
from agentkeel.memory.snapshots import SnapshotManager
from agentkeel.memory.store import (
    SNAPSHOT_KINDS,
    CreateMemory,
    DeleteMemory,
    MemoryStore,
    SearchQuery,
    SnapshotKind,
    UpdateMemory,
    WriteOp,
    WriteResult,
)
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.telemetry.audit import audit, audited
from agentkeel.telemetry.metrics import HttpMetrics
from agentkeel.telemetry.middleware import CorrelationMiddleware, HttpMetricsMiddleware
from agentkeel.telemetry.trace_context import TraceContextMiddleware
from agentkeel.web.auth import request_source
from agentkeel.web.bodies import parse_body
from agentkeel.web.errors import Endpoint, endpoint, error_response, http_exception_handler

logger = logging.getLogger("agentkeel.memory")

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


# -- request bodies -------------------------------------------------------------------


class CreateBody(BaseModel):
    """``POST /v1/memories``."""

    model_config = ConfigDict(extra="forbid")

    namespace: str
    content: str
    tags: list[str] = Field(default_factory=list)
    importance: float = 0.5
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class UpdateBody(BaseModel):
    """``PATCH /v1/memories/{id}``: the fields to change; ``version`` makes it optimistic."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1, strict=True)
    content: str | None = None
    tags: list[str] | None = None
    importance: float | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateBody:
        if all(v is None for v in (self.content, self.tags, self.importance, self.metadata)):
            raise ValueError("give at least one of content, tags, importance, metadata")
        return self


class BatchOpBody(BaseModel):
    """One operation of ``POST /v1/memories:batch``."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["create", "update", "delete"]
    id: str | None = None
    namespace: str | None = None
    version: int | None = Field(default=None, ge=1, strict=True)
    content: str | None = None
    tags: list[str] | None = None
    importance: float | None = None
    metadata: dict[str, Any] | None = None


class BatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ops: list[BatchOpBody] = Field(min_length=1, max_length=MAX_BATCH_OPS)


class RestoreBody(BaseModel):
    """``POST /v1/restore``: exactly one of snapshot_id, at (ISO 8601 or epoch), seq."""

    model_config = ConfigDict(extra="forbid")

    snapshot_id: str | None = None
    at: str | float | None = None
    seq: int | None = Field(default=None, ge=0, strict=True)
    reason: str = Field(default="point-in-time restore", max_length=500)

    @model_validator(mode="after")
    def _exactly_one(self) -> RestoreBody:
        given = [v for v in (self.snapshot_id, self.at, self.seq) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of snapshot_id, at, seq")
        return self


class SnapshotBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(default="", max_length=200)
    kind: SnapshotKind = "manual"


class FenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="operator fence", max_length=500)


# -- the app --------------------------------------------------------------------------


class MemoryServer:
    """What the routes share: the store (once open), the gate, metrics and access."""

    def __init__(
        self,
        *,
        settings: MemorySettings,
        clock: Clock,
        metrics: MemoryMetrics,
        access: AccessControl,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = metrics
        self.access = access
        self.gate = WriteGate(metrics=metrics, retry_after_s=settings.fence_retry_after_s)
        self.store: MemoryStore | None = None
        self.snapshots: SnapshotManager | None = None
        self.last_integrity: IntegrityReport | None = None
        self._integrity_lock = asyncio.Lock()

    def require_store(self) -> MemoryStore:
        if self.store is None:
            raise Unavailable(
                "the memory server is still starting (its store is not open yet). Retry in a "
                "moment.",
                retry_after=1,
                code="starting",
            )
        return self.store

    def require_snapshots(self) -> SnapshotManager:
        self.require_store()
        assert self.snapshots is not None
        return self.snapshots

    def principal(self, request: Request) -> Principal:
        return self.access.authenticate(request.headers.get("authorization"))

    @contextmanager
    def observe(self, operation: str) -> Iterator[None]:
        """Count the operation by status and time it."""
        started = time.perf_counter()
        status = "ok"
        try:
            yield
        except KeelError as exc:
            status = exc.code
            raise
        except Exception:
            status = "internal_error"
            raise
        finally:
            self.metrics.operations.labels(operation, status).inc()
            self.metrics.duration.labels(operation).observe(time.perf_counter() - started)

    async def run_integrity_check(self) -> IntegrityReport:
        """Check now; a failure sets the metric, logs an error and makes writes read-only."""
        store = self.require_store()
        async with self._integrity_lock:
            with self.observe("check_integrity"):
                report = await check_integrity(store, clock=self.clock)
        self.last_integrity = report
        self.metrics.integrity_ok.set(1 if report.ok else 0)
        self.metrics.integrity_checked.set(report.checked_at)
        if report.ok:
            logger.info(report.summary(), extra={"duration_ms": round(report.duration_s * 1e3)})
        else:
            logger.error(
                "%s; writes are refused until an operator repairs the store and clears "
                "read-only (DELETE /admin/read-only)",
                report.summary(),
                extra={"event": "integrity", "reason": ",".join(report.bad_namespaces)},
            )
            self.gate.set_read_only(f"the integrity check at seq {report.head_seq} failed")
        return report

    async def refresh_gauges(self) -> None:
        if self.store is None:
            return
        stats = await self.store.stats()
        self.metrics.memories.set(stats.memories)
        self.metrics.events.set(stats.events)
        if stats.size_bytes is not None:
            self.metrics.size_bytes.set(stats.size_bytes)


def create_app(
    settings: MemorySettings,
    *,
    store: MemoryStore | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    run_scheduler: bool = True,
) -> Starlette:
    """Build the memory server for ``settings``.

    A store passed in must be open already and is not closed by the app;
    otherwise ``settings.resolved_store_url()`` is opened in the lifespan and
    closed with it. ``run_scheduler=False`` leaves out the background integrity
    checks and daily snapshots (tests drive ``app.state.scheduler`` instead).

    ``app.state`` exposes ``server`` (a ``MemoryServer``), ``registry`` and ``scheduler``.

    >>> app = create_app(MemorySettings(tokens_file=Path("tokens.yaml")))
    """
    clock = clock or SystemClock()
    registry = registry if registry is not None else CollectorRegistry()
    metrics = MemoryMetrics(registry)
    http_metrics = HttpMetrics(registry)
    access = AccessControl(settings=settings)
    # A broken tokens file stops the process before it listens.
    access.check_configured()
    server = MemoryServer(settings=settings, clock=clock, metrics=metrics, access=access)
    scheduler = MemoryScheduler(server=server, clock=clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            the_store = store
            if the_store is None:
                backend = open_memory_store(
                    settings.resolved_store_url(), pool_size=settings.pool_size, clock=clock
                )
                await backend.open()
                stack.push_async_callback(backend.aclose)
                the_store = backend
            server.store = the_store
            server.snapshots = SnapshotManager(
                store=the_store, directory=settings.snapshot_dir, clock=clock, metrics=metrics
            )
            await server.snapshots.refresh_metrics()
            if run_scheduler:
                await scheduler.start()
                stack.push_async_callback(scheduler.stop)
            logger.info("memory server ready on %s", getattr(the_store, "describe", lambda: "")())
            try:
                yield
            finally:
                server.store = None

    api = _Routes(server)
    routes = [
        Route("/health", endpoint(api.health), methods=["GET"]),
        Route("/ready", endpoint(api.ready), methods=["GET"]),
        Route("/metrics", api.metrics_endpoint(registry), methods=["GET"]),
        Route("/v1/memories", endpoint(api.create), methods=["POST"]),
        Route("/v1/memories", endpoint(api.search), methods=["GET"]),
        Route("/v1/memories:batch", endpoint(api.batch), methods=["POST"]),
        Route("/v1/memories/{memory_id}", endpoint(api.get), methods=["GET"]),
        Route("/v1/memories/{memory_id}", endpoint(api.update), methods=["PATCH"]),
        Route("/v1/memories/{memory_id}", endpoint(api.delete), methods=["DELETE"]),
        Route(
            "/v1/namespaces/{namespace:path}", endpoint(api.delete_namespace), methods=["DELETE"]
        ),
        Route("/v1/integrity", endpoint(api.integrity), methods=["GET"]),
        Route("/v1/restore", endpoint(api.restore), methods=["POST"]),
        Route("/v1/quarantine", endpoint(api.quarantine_list), methods=["GET"]),
        Route(
            "/v1/quarantine/{quarantine_id}/replay",
            endpoint(api.quarantine_replay),
            methods=["POST"],
        ),
        Route("/v1/snapshots", endpoint(api.snapshot_create), methods=["POST"]),
        Route("/v1/snapshots", endpoint(api.snapshot_list), methods=["GET"]),
        Route("/v1/snapshots:prune", endpoint(api.snapshot_prune), methods=["POST"]),
        Route(
            "/v1/snapshots/{snapshot_id}/verify",
            endpoint(api.snapshot_verify),
            methods=["POST"],
        ),
        Route("/admin/fence", endpoint(api.fence_up), methods=["POST"]),
        Route("/admin/fence", endpoint(api.fence_down), methods=["DELETE"]),
        Route("/admin/read-only", endpoint(api.read_only_clear), methods=["DELETE"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(TraceContextMiddleware),
            Middleware(CorrelationMiddleware),
            Middleware(HttpMetricsMiddleware, metrics=http_metrics),
        ],
        exception_handlers={HTTPException: http_exception_handler},
        lifespan=lifespan,
    )
    app.state.server = server
    app.state.registry = registry
    app.state.scheduler = scheduler
    return app


class _Routes:
    """The endpoints, each a method over the shared ``MemoryServer``."""

    def __init__(self, server: MemoryServer) -> None:
        self.s = server

    # --- probes -------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": "memory"})

    async def ready(self, request: Request) -> Response:
        self.s.require_store()
        return JSONResponse(
            {
                "status": "ready",
                "fenced": self.s.gate.fenced,
                "read_only": self.s.gate.read_only,
            }
        )

    def metrics_endpoint(self, registry: CollectorRegistry) -> Endpoint:
        async def metrics(request: Request) -> Response:
            try:
                await self.s.refresh_gauges()
            except KeelError as exc:
                logger.warning("store gauges not refreshed: %s", exc.message)
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        return metrics

    # --- memories -----------------------------------------------------------

    async def create(self, request: Request) -> Response:
        principal = self.s.principal(request)
        with self.s.observe("create_memory"):
            self.s.gate.check()
            body = await parse_body(request, CreateBody, empty=b"{}")
            principal.require_write(body.namespace)
            op = CreateMemory(
                namespace=body.namespace,
                content=body.content,
                tags=body.tags,
                importance=body.importance,
                metadata=body.metadata,
                memory_id=body.id,
            )
            result = await self._write(request, principal, [op])
        item = result.items[0]
        return JSONResponse(
            {
                "memory": None if item.memory is None else item.memory.to_json(),
                "seq": item.seq,
                "replayed": result.replayed,
            },
            status_code=200 if result.replayed else 201,
        )

    async def search(self, request: Request) -> Response:
        principal = self.s.principal(request)
        with self.s.observe("search_memory"):
            params = request.query_params
            namespace = params.get("namespace")
            if not namespace:
                raise InvalidRequest(
                    "search needs ?namespace=<namespace>; memories are searched one "
                    "namespace at a time."
                )
            principal.require_read(namespace)
            tags = [
                tag for value in params.getlist("tags") for tag in value.split(",") if tag.strip()
            ]
            query = SearchQuery(
                namespace=namespace,
                text=params.get("q") or None,
                tags=[tag.strip() for tag in tags],
                since=_parse_time(params.get("since"), "since"),
                until=_parse_time(params.get("until"), "until"),
                limit=_parse_limit(params.get("limit"), self.s.settings.max_search_limit),
            )
            result = await self.s.require_store().search(query)
        return JSONResponse(result.to_json())

    async def get(self, request: Request) -> Response:
        principal = self.s.principal(request)
        with self.s.observe("get_memory"):
            memory_id = request.path_params["memory_id"]
            memory = await self.s.require_store().get(memory_id)
            if memory is None or not principal.can_read(memory.namespace):
                raise _memory_not_found(memory_id)
        return JSONResponse({"memory": memory.to_json()})

    async def update(self, request: Request) -> Response:
        principal = self.s.principal(request)
        with self.s.observe("update_memory"):
            self.s.gate.check()
            memory_id = request.path_params["memory_id"]
            body = await parse_body(request, UpdateBody, empty=b"{}")
            namespace = await self._writable_namespace(principal, memory_id)
            op = UpdateMemory(
                memory_id=memory_id,
                namespace=namespace,
                expected_version=body.version,
                content=body.content,
                tags=body.tags,
                importance=body.importance,
                metadata=body.metadata,
            )
            result = await self._write(request, principal, [op])
        item = result.items[0]
        return JSONResponse(
            {
                "memory": None if item.memory is None else item.memory.to_json(),
                "seq": item.seq,
                "replayed": result.replayed,
            }
        )

    async def delete(self, request: Request) -> Response:
        principal = self.s.principal(request)
        with self.s.observe("delete_memory"):
            self.s.gate.check()
            memory_id = request.path_params["memory_id"]
            version = _parse_version(request.query_params.get("version"))
            namespace = await self._writable_namespace(principal, memory_id, request=request)
            op = DeleteMemory(memory_id=memory_id, namespace=namespace, expected_version=version)
            result = await self._write(request, principal, [op])
        item = result.items[0]
        return JSONResponse(
            {"deleted": item.memory_id, "seq": item.seq, "replayed": result.replayed}
        )

    async def delete_namespace(self, request: Request) -> Response:
        """Delete every memory in the namespace through the normal delete path, in
        batches: each delete is an event in the hash-chained log, like any other.
        The audit line is written however it ends, with what was deleted by then."""
        principal = self.s.principal(request)
        namespace = check_namespace(request.path_params["namespace"])
        deleted = 0
        last_seq: int | None = None
        outcome = "failed"
        try:
            with self.s.observe("delete_namespace"):
                self.s.gate.check()
                principal.require_write(namespace)
                store = self.s.require_store()
                while True:
                    found = await store.search(
                        SearchQuery(namespace=namespace, limit=MAX_BATCH_OPS)
                    )
                    if not found.hits:
                        break
                    ops: list[WriteOp] = [
                        DeleteMemory(memory_id=hit.memory.id, namespace=namespace)
                        for hit in found.hits
                    ]
                    result = await store.write(ops)
                    deleted += len(result.items)
                    last_seq = result.items[-1].seq
            outcome = "ok"
        finally:
            audit(
                "memory.delete_namespace",
                actor=_actor(principal),
                outcome=outcome,
                namespace=namespace,
                deleted=deleted,
                source=request_source(request),
            )
        return JSONResponse({"namespace": namespace, "deleted": deleted, "seq": last_seq})

    async def batch(self, request: Request) -> Response:
        principal = self.s.principal(request)
        with self.s.observe("batch_memory"):
            self.s.gate.check()
            body = await parse_body(request, BatchBody, empty=b"{}")
            ops = [
                await self._batch_op(principal, index, item) for index, item in enumerate(body.ops)
            ]
            result = await self._write(request, principal, ops)
        return JSONResponse(result.to_json())

    async def _batch_op(self, principal: Principal, index: int, item: BatchOpBody) -> WriteOp:
        if item.op == "create":
            if item.namespace is None or item.content is None:
                raise InvalidRequest(f"ops.{index}: a create needs namespace and content.")
            principal.require_write(item.namespace)
            return CreateMemory(
                namespace=item.namespace,
                content=item.content,
                tags=item.tags or [],
                importance=0.5 if item.importance is None else item.importance,
                metadata=item.metadata or {},
                memory_id=item.id,
            )
        if item.id is None:
            raise InvalidRequest(f"ops.{index}: an {item.op} needs the memory id.")
        namespace = await self._writable_namespace(principal, item.id)
        if item.namespace is not None and item.namespace != namespace:
            raise _memory_not_found(item.id)
        if item.op == "delete":
            return DeleteMemory(
                memory_id=item.id, namespace=namespace, expected_version=item.version
            )
        return UpdateMemory(
            memory_id=item.id,
            namespace=namespace,
            expected_version=item.version,
            content=item.content,
            tags=item.tags,
            importance=item.importance,
            metadata=item.metadata,
        )

    async def _writable_namespace(
        self, principal: Principal, memory_id: str, *, request: Request | None = None
    ) -> str:
        memory = await self.s.require_store().get(memory_id)
        if memory is None or not principal.can_read(memory.namespace):
            if memory is None and request is not None:
                # A retried delete whose first attempt went through answers as before.
                key = _idempotency_key(request, principal)
                if key is not None:
                    return ""
            raise _memory_not_found(memory_id)
        principal.require_write(memory.namespace)
        return memory.namespace

    async def _write(
        self, request: Request, principal: Principal, ops: list[WriteOp]
    ) -> WriteResult:
        key = _idempotency_key(request, principal)
        return await self.s.require_store().write(ops, idempotency_key=key)

    # --- integrity, restore, quarantine ----------------------------------------

    async def integrity(self, request: Request) -> Response:
        self.s.principal(request).require_admin()
        report = await self.s.run_integrity_check()
        return JSONResponse(
            {
                **report.to_json(),
                "read_only": self.s.gate.read_only,
                "summary": report.summary(),
            }
        )

    async def restore(self, request: Request) -> Response:
        principal = self.s.principal(request)
        principal.require_admin()
        body = await parse_body(request, RestoreBody, empty=b"{}")
        with (
            audited(
                "memory.restore",
                actor=_actor(principal),
                source=request_source(request),
                snapshot_id=body.snapshot_id,
                at=str(body.at) if body.at is not None else None,
                seq=body.seq,
                reason=body.reason,
            ) as more,
            self.s.observe("restore_memory"),
        ):
            snapshots = self.s.require_snapshots()
            if body.snapshot_id is not None:
                result = await snapshots.restore(body.snapshot_id, reason=body.reason)
            else:
                store = self.s.require_store()
                if body.seq is not None:
                    target = body.seq
                else:
                    at = _parse_time(str(body.at), "at")
                    assert at is not None
                    target = await store.seq_at_time(at)
                result = await store.restore(target_seq=target, reason=body.reason)
            more.update(
                target_seq=result.target_seq,
                quarantined=result.quarantined_events,
                quarantine_id=result.quarantine_id,
            )
        logger.warning(
            "restored memory to seq %d (%s); %d event(s) quarantined in %s",
            result.target_seq,
            body.reason,
            result.quarantined_events,
            result.quarantine_id,
            extra={"event": "restore"},
        )
        return JSONResponse(result.to_json())

    async def quarantine_list(self, request: Request) -> Response:
        self.s.principal(request).require_admin()
        store = self.s.require_store()
        quarantines = await store.list_quarantines()
        out = []
        for quarantine in quarantines:
            data = quarantine.to_json()
            if request.query_params.get("events") in ("1", "true"):
                events = await store.quarantine_events(quarantine.id)
                data["events"] = [event.to_json() for event in events]
            out.append(data)
        return JSONResponse({"quarantines": out})

    async def quarantine_replay(self, request: Request) -> Response:
        principal = self.s.principal(request)
        principal.require_admin()
        with (
            audited(
                "memory.quarantine.replay",
                actor=_actor(principal),
                source=request_source(request),
                quarantine_id=request.path_params["quarantine_id"],
            ),
            self.s.observe("replay_quarantine"),
        ):
            self.s.gate.check()
            result = await self.s.require_store().replay_quarantine(
                request.path_params["quarantine_id"]
            )
        return JSONResponse(result.to_json())

    # --- snapshots ----------------------------------------------------------

    async def snapshot_create(self, request: Request) -> Response:
        principal = self.s.principal(request)
        principal.require_admin()
        body = await parse_body(request, SnapshotBody, empty=b"{}")
        with (
            audited(
                "memory.snapshot.create",
                actor=_actor(principal),
                source=request_source(request),
                label=body.label,
                kind=body.kind,
            ) as more,
            self.s.observe("create_snapshot"),
        ):
            snapshot = await self.s.require_snapshots().create(label=body.label, kind=body.kind)
            more["snapshot_id"] = snapshot.id
        return JSONResponse(snapshot.to_json(), status_code=201)

    async def snapshot_list(self, request: Request) -> Response:
        self.s.principal(request).require_admin()
        snapshots = await self.s.require_store().list_snapshots()
        return JSONResponse({"snapshots": [snapshot.to_json() for snapshot in snapshots]})

    async def snapshot_verify(self, request: Request) -> Response:
        self.s.principal(request).require_admin()
        # deep=true also replays the log up to the snapshot (as long again at scale).
        deep = request.query_params.get("deep") in ("1", "true")
        with self.s.observe("verify_snapshot"):
            outcome = await self.s.require_snapshots().verify(
                request.path_params["snapshot_id"], deep=deep
            )
        return JSONResponse(outcome.to_json(), status_code=200)

    async def snapshot_prune(self, request: Request) -> Response:
        principal = self.s.principal(request)
        principal.require_admin()
        dry_run = request.query_params.get("dry_run") in ("1", "true")
        with audited(
            "memory.snapshot.prune",
            actor=_actor(principal),
            source=request_source(request),
            dry_run=dry_run,
        ):
            decision = await self.s.require_snapshots().prune(
                self.s.settings.retention, dry_run=dry_run
            )
        return JSONResponse(decision.to_json())

    # --- admin --------------------------------------------------------------

    async def fence_up(self, request: Request) -> Response:
        principal = self.s.principal(request)
        principal.require_admin()
        body = await parse_body(request, FenceBody, empty=b"{}")
        with audited(
            "memory.fence.up",
            actor=_actor(principal),
            source=request_source(request),
            reason=body.reason,
        ) as more:
            raised = self.s.gate.raise_fence(body.reason)
            more["already_fenced"] = not raised
        logger.warning("write fence raised: %s", body.reason, extra={"reason": body.reason})
        return JSONResponse({"fenced": True, "already_fenced": not raised})

    async def fence_down(self, request: Request) -> Response:
        principal = self.s.principal(request)
        principal.require_admin()
        with audited(
            "memory.fence.down", actor=_actor(principal), source=request_source(request)
        ) as more:
            was_up = self.s.gate.lift_fence()
            more["was_fenced"] = was_up
        logger.warning("write fence lifted")
        return JSONResponse({"fenced": False, "was_fenced": was_up})

    async def read_only_clear(self, request: Request) -> Response:
        principal = self.s.principal(request)
        principal.require_admin()
        with audited(
            "memory.read_only.clear", actor=_actor(principal), source=request_source(request)
        ) as more:
            was = self.s.gate.clear_read_only()
            more["was_read_only"] = was
        logger.warning("read-only cleared by an operator")
        return JSONResponse({"read_only": False, "was_read_only": was})


# -- helpers ---------------------------------------------------------------------------


def _actor(principal: Principal) -> str:
    """The token's name and its non-secret key, for the audit trail."""
    return f"{principal.name}:{principal.key}"


def _memory_not_found(memory_id: str) -> NotFound:
    return NotFound(
        f"memory {memory_id!r} was not found in any namespace this token may read.",
        code="memory_not_found",
    )


def _idempotency_key(request: Request, principal: Principal) -> str | None:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    if not _IDEMPOTENCY_KEY.match(raw):
        raise InvalidRequest(
            "Idempotency-Key must be 1-200 visible ASCII characters (a UUID works well)."
        )
    # Scoped per token: one caller's key can never return another caller's result.
    return f"{principal.key}:{raw}"


def _parse_time(value: str | None, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequest(
            f"{name}={value!r} is not a time; give epoch seconds or ISO 8601 such as "
            "2025-01-31T12:00:00Z."
        ) from exc
    if parsed.tzinfo is None:
        raise InvalidRequest(f"{name}={value!r} has no timezone; add Z or an offset like +02:00.")
    return parsed.timestamp()


def _parse_limit(value: str | None, maximum: int) -> int:
    if value is None:
        return min(20, maximum)
    if not value.isdigit() or not 1 <= int(value) <= maximum:
        raise InvalidRequest(f"limit={value!r} must be a whole number from 1 to {maximum}.")
    return int(value)


def _parse_version(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise InvalidRequest(f"version={value!r} must be a whole number of at least 1.")
    return int(value)


__all__ = ["SNAPSHOT_KINDS", "MemoryServer", "create_app", "error_response"]
