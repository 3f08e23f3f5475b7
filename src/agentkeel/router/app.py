"""``RouterApp``: the router assembled: store, table, replicas, server and background loops.

>>> router = create_router(settings.router, data_dir=settings.data_dir,
...     secrets_dir=settings.secrets_dir)
>>> await router.start()          # opens the store, seeds the table, probes, listens
>>> router.port
8080
>>> await router.aclose()         # stops listening, lets requests in flight finish

Nothing runs at import or construction; ``start`` does the work and every
collaborator (store, registry, RNG, clock) can be passed in, so tests run two
routers side by side on one loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentkeel.config.router import RouterSettings
from agentkeel.errors import KeelError, Unavailable
from agentkeel.router.admin import RouterAdmin
from agentkeel.router.affinity import SessionPins
from agentkeel.router.connection import ClientConnection, Request
from agentkeel.router.frontdoor import RouterFrontDoor
from agentkeel.router.metrics import RouterMetrics
from agentkeel.router.pins import PinCache, PinStore, open_pin_store, pins_url
from agentkeel.router.probe import probe_all
from agentkeel.router.proxy import Proxy
from agentkeel.router.responses import json_response, response_bytes, router_error
from agentkeel.router.routing import Replica, RoutingTable, address_of
from agentkeel.router.table import TableDoc, seed_table
from agentkeel.router.upstream import UpstreamPool
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.metrics import SecretMetrics
from agentkeel.web.auth import AdminToken
from agentkeel.web.secrets_admin import HeldSecrets

__all__ = ["RouterApp", "create_router"]

logger = logging.getLogger("agentkeel.router")

_MUTATE_ATTEMPTS = 10
_PURGE_EVERY_S = 300.0


def create_router(
    settings: RouterSettings,
    *,
    data_dir: Path,
    secrets_dir: Path | None = None,
    store: PinStore | None = None,
    registry: CollectorRegistry | None = None,
    rng: random.Random | None = None,
    front_door: RouterFrontDoor | None = None,
    allow_request_keys: bool = False,
    trust_trace_context: bool = False,
) -> RouterApp:
    """A router for ``settings``; its pin store from ``router.pins`` unless one is passed.

    ``front_door`` (``build_router_front_door``, auth on) authenticates and limits every
    ``/v1`` request; ``allow_request_keys`` lets a client's ``PROVIDER_KEY_HEADER``
    through (``secrets.key_chain.allow_request_keys``); ``trust_trace_context`` passes a
    client's ``traceparent`` and ``tracestate`` on to the replica (``tracing.
    trust_incoming``; otherwise they are dropped and the replica starts the trace)."""
    admin_token = AdminToken(
        resolver=SecretResolver(secrets_dir=secrets_dir),
        name=settings.admin_token_secret,
        file=settings.admin_token_file,
        setting="router.admin_token_file",
        service="router",
    )
    return RouterApp(
        settings=settings,
        store=store or open_pin_store(pins_url(settings, data_dir), settings=settings),
        admin_token=admin_token,
        registry=registry if registry is not None else CollectorRegistry(),
        rng=rng or random.Random(),
        front_door=front_door,
        allow_request_keys=allow_request_keys,
        trust_trace_context=trust_trace_context,
    )


class RouterApp:
    """One router process's state and lifecycle."""

    def __init__(
        self,
        *,
        settings: RouterSettings,
        store: PinStore,
        admin_token: AdminToken,
        registry: CollectorRegistry,
        rng: random.Random,
        front_door: RouterFrontDoor | None = None,
        allow_request_keys: bool = False,
        trust_trace_context: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.admin_token = admin_token
        self.registry = registry
        self.rng = rng
        self.metrics = RouterMetrics(registry)
        # The router's own secret is its admin token; /admin/secrets reports it for rotation.
        self.held_secrets = HeldSecrets(
            service="router",
            secrets=[admin_token.source] if admin_token.source is not None else [],
            metrics=SecretMetrics(registry),
        )
        self.front_door = front_door
        self.allow_request_keys = allow_request_keys
        self.trust_trace_context = trust_trace_context
        if front_door is not None:
            self.metrics.count_auth(front_door.outcomes)
        self.pins = SessionPins(app=self, store=store, cache=PinCache(settings.pin_cache_size))
        self.replicas: dict[str, Replica] = {}
        self.table = RoutingTable(TableDoc(), {})
        self.connections: set[ClientConnection] = set()
        self.admin = RouterAdmin(self)
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._table_lock = asyncio.Lock()
        self._probed: set[Replica] = set()
        self.port = settings.port

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, load (or seed) the table, probe every replica once, listen."""
        await self.store.open()
        doc = await self.store.read_table()
        if doc is None:
            seeded = seed_table(self.settings.backend_list())
            if await self.store.write_table(seeded, expected_revision=0):
                doc = seeded
                logger.info(
                    "routing table seeded from router.backends: %s",
                    _summary(seeded),
                    extra={"event": "router"},
                )
            else:
                doc = await self.store.read_table() or seeded
        else:
            logger.info(
                "routing table revision %d read from %s: %s",
                doc.revision,
                self.store.where,
                _summary(doc),
                extra={"event": "router"},
            )
        self._apply(doc)
        await self.probe()
        loop = asyncio.get_running_loop()
        proxy = Proxy(self)
        self._server = await loop.create_server(
            lambda: ClientConnection(proxy),
            self.settings.host,
            self.settings.port,
            backlog=2048,
            reuse_address=True,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._tasks = [
            loop.create_task(self._every(self.settings.probe_interval_s, self.probe)),
            loop.create_task(self._every(self.settings.table_refresh_s, self.refresh)),
            loop.create_task(self._every(self._sweep_interval, self._sweep)),
            loop.create_task(self._every(_PURGE_EVERY_S, self._purge)),
        ]
        logger.info(
            "router listening on %s:%d (pins in %s)",
            self.settings.host,
            self.port,
            self.store.where,
            extra={"event": "router"},
        )

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    async def aclose(self, *, drain_timeout_s: float | None = None) -> None:
        """Stop listening, give requests in flight up to ``drain_timeout_s``, close."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        limit = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        for conn in list(self.connections):
            if conn.idle:
                conn.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        # Polled: a request ends in many places, and this runs once per process.
        while any(not conn.idle for conn in self.connections) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for replica in self.replicas.values():
            replica.pool.close()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
        if self.front_door is not None:
            await self.front_door.aclose()
        await self.store.aclose()

    async def _every(self, interval_s: float, job: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except KeelError as exc:
                logger.error("router background job failed: %s", exc.message)
            except Exception:
                logger.exception("router background job failed")

    # -- the table ------------------------------------------------------------------------

    def _apply(self, doc: TableDoc) -> None:
        """Make ``doc`` the table; replicas it still names keep their state and pools."""
        settings = self.settings
        replicas: dict[str, Replica] = {}
        for version, spec in doc.versions.items():
            for url in spec.replicas:
                existing = self.replicas.get(url)
                if existing is not None and existing.version == version:
                    replicas[url] = existing
                    continue
                host, port = address_of(url)
                pool = UpstreamPool(
                    host=host,
                    port=port,
                    connect_timeout_s=settings.connect_timeout_s,
                    idle_s=settings.upstream_idle_s,
                    size=settings.pool_size,
                )
                replicas[url] = Replica(url=url, version=version, pool=pool)
        for url, old in self.replicas.items():
            if replicas.get(url) is not old:
                old.pool.close()
        self.replicas = replicas
        self._probed &= set(replicas.values())
        self.table = RoutingTable.build(doc, replicas)
        self._update_ready_gauge()

    async def refresh(self) -> None:
        """Reread the table when another router (or a restart) changed it."""
        revision = await self.store.table_revision()
        if revision == self.table.doc.revision:
            return
        async with self._table_lock:
            doc = await self.store.read_table()
            if doc is not None and doc.revision != self.table.doc.revision:
                self._apply(doc)
                logger.info(
                    "routing table revision %d from %s: %s",
                    doc.revision,
                    self.store.where,
                    _summary(doc),
                    extra={"event": "router"},
                )
        await self.probe(only_new=True)

    async def mutate(self, change: Callable[[TableDoc], TableDoc]) -> TableDoc:
        """Apply ``change`` to the stored table with a compare-and-set, retrying when
        another router changed it first; the new table is in force on return."""
        async with self._table_lock:
            for _ in range(_MUTATE_ATTEMPTS):
                current = self.table.doc
                if await self.store.table_revision() != current.revision:
                    current = await self.store.read_table() or TableDoc()
                    self._apply(current)
                updated = change(current)
                if await self.store.write_table(updated, expected_revision=current.revision):
                    self._apply(updated)
                    logger.info(
                        "routing table revision %d: %s",
                        updated.revision,
                        _summary(updated),
                        extra={"event": "router"},
                    )
                    break
            else:
                raise Unavailable(
                    "the routing table kept changing under this request (another router is "
                    "writing it); retry",
                    code="table_conflict",
                )
        await self.probe(only_new=True)
        return updated

    # -- replicas -------------------------------------------------------------------------

    async def probe(self, *, only_new: bool = False) -> None:
        """Probe the replicas (``only_new``: those never probed yet) and record changes."""
        replicas = list(self.replicas.values())
        if only_new:
            replicas = [replica for replica in replicas if replica not in self._probed]
        if not replicas:
            return
        results = await probe_all(replicas, timeout_s=self.settings.probe_timeout_s)
        for replica, (ready, why) in zip(replicas, results, strict=True):
            self._probed.add(replica)
            if ready != replica.ready:
                replica.ready = ready
                logger.info(
                    "replica %s (version %s) is %s: %s",
                    replica.url,
                    replica.version,
                    "ready" if ready else "not ready",
                    why,
                    extra={
                        "replica": replica.url,
                        "version": replica.version,
                        "event": "router",
                    },
                )
            if not ready:
                replica.pool.close_idle()
        self._update_ready_gauge()

    def mark_unready(self, replica: Replica, why: str) -> None:
        """The data path saw ``replica`` refuse work: nothing new until a probe says ready."""
        replica.pool.close_idle()
        if not replica.ready:
            return
        replica.ready = False
        logger.info(
            "replica %s (version %s) is not ready: %s",
            replica.url,
            replica.version,
            why,
            extra={"replica": replica.url, "version": replica.version, "event": "router"},
        )
        self._update_ready_gauge()

    def _update_ready_gauge(self) -> None:
        gauge = self.metrics.ready_replicas
        for version, count in self.table.ready_replicas().items():
            gauge.labels(version).set(count)

    @property
    def _sweep_interval(self) -> float:
        return min(1.0, self.settings.upstream_timeout_s / 4, self.settings.client_idle_s / 4)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        interval = self._sweep_interval
        limit = max(1, math.ceil(self.settings.upstream_timeout_s / interval))
        for replica in self.replicas.values():
            replica.pool.sweep(now, limit=limit)
        idle_limit = max(1, math.ceil(self.settings.client_idle_s / interval))
        for conn in list(self.connections):
            if conn.idle:
                conn.silent += 1
                if conn.silent > idle_limit:
                    conn.close()

    async def _purge(self) -> None:
        purge = getattr(self.store, "purge_expired", None)
        if purge is not None:
            await purge()

    # -- reports --------------------------------------------------------------------------

    async def pin_counts(self) -> dict[str, int]:
        counts = await self.store.counts(self.table.versions)
        gauge = self.metrics.pinned_sessions
        for version, count in counts.items():
            gauge.labels(version).set(count)
        return counts

    async def versions_report(self) -> dict[str, Any]:
        """``GET /admin/versions``."""
        counts = await self.pin_counts()
        table = self.table
        return {
            "stable": table.doc.stable,
            "revision": table.doc.revision,
            "versions": [
                {
                    "version": route.name,
                    "weight": route.weight,
                    "policy": route.policy,
                    "retired": route.retired,
                    "pinned_sessions": counts.get(route.name, 0),
                    "replicas": [
                        {
                            "url": replica.url,
                            "version": replica.version,
                            "ready": replica.ready,
                            "draining": replica.draining,
                            "in_flight": replica.in_flight,
                        }
                        for replica in route.replicas
                    ],
                }
                for route in table.versions.values()
            ],
        }

    # -- the router's own endpoints ------------------------------------------------------

    async def serve_local(self, client: ClientConnection, request: Request) -> None:
        path = request.path
        keep = request.keep_alive
        headers = request.id_header
        if path.startswith(b"/admin/"):
            await self.admin.handle(client, request)
            return
        if request.method != b"GET" and path in (b"/health", b"/ready", b"/metrics"):
            client.write(
                router_error(
                    405,
                    "method_not_allowed",
                    f"Use GET on {path.decode()}.",
                    headers=headers,
                    keep_alive=keep,
                )
            )
            return
        if path == b"/health":
            client.write(json_response(200, {"status": "ok"}, headers=headers, keep_alive=keep))
        elif path == b"/ready":
            stable = self.table.stable
            if stable is not None and stable.has_available():
                body = {"status": "ready", "stable": stable.name}
                client.write(json_response(200, body, headers=headers, keep_alive=keep))
            else:
                name = stable.name if stable is not None else None
                client.write(
                    router_error(
                        503,
                        "not_ready",
                        f"No ready replica of the stable version ({name or 'none configured'}).",
                        retry_after_s=self.settings.retry_after_s,
                        headers=headers,
                        keep_alive=keep,
                    )
                )
        elif path == b"/metrics":
            try:
                await self.pin_counts()
            except KeelError as exc:
                logger.warning("pin counts for /metrics failed: %s", exc.message)
            client.write(
                response_bytes(
                    200,
                    generate_latest(self.registry),
                    content_type=CONTENT_TYPE_LATEST.encode(),
                    headers=headers,
                    keep_alive=keep,
                )
            )
        else:
            client.write(
                router_error(
                    404,
                    "not_found",
                    f"No route {request.method.decode()} {path.decode('latin-1')} on the router; "
                    "it forwards /v1/* and serves /health, /ready, /metrics and /admin/*.",
                    headers=headers,
                    keep_alive=keep,
                )
            )


def _summary(doc: TableDoc) -> str:
    parts = []
    for name, spec in doc.versions.items():
        flags = " retired" if spec.retired else ""
        parts.append(
            f"{name}{' (stable)' if name == doc.stable else ''} weight {spec.weight}{flags}, "
            f"{spec.policy}, {len(spec.replicas)} replica(s)"
        )
    return "; ".join(parts) or "empty"
