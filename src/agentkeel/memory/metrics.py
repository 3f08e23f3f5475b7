"""The memory server's metric families, built on a registry passed in.

Operation names follow the OpenTelemetry GenAI memory operations
(``create_memory``, ``search_memory``, ``update_memory``, ``delete_memory``)
plus ``get_memory``, ``batch_memory``, ``check_integrity``,
``create_snapshot``, ``verify_snapshot``, ``restore_memory`` and
``replay_quarantine``. ``status`` is ``ok`` or the error code.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentkeel.telemetry.metrics import LATENCY_BUCKETS, Children


class MemoryMetrics:
    """Operations, latency, store size, integrity and snapshot health."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.operations = Counter(
            "agent_memory_operations_total",
            "Memory operations by operation name and status (ok or the error code).",
            ["operation", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "agent_memory_operation_duration_seconds",
            "Memory operation duration by operation name.",
            ["operation"],
            buckets=(*LATENCY_BUCKETS, 120, 300),
            registry=registry,
        )
        self.memories = Gauge(
            "agent_memory_store_memories", "Memories in the current state.", registry=registry
        )
        self.events = Gauge(
            "agent_memory_store_events", "Events in the live log.", registry=registry
        )
        self.size_bytes = Gauge(
            "agent_memory_store_size_bytes", "On-disk size of the memory store.", registry=registry
        )
        self.integrity_ok = Gauge(
            "agent_memory_integrity_status",
            "Result of the latest integrity check: 1 ok, 0 failed (-1 not checked yet).",
            registry=registry,
        )
        self.integrity_checked = Gauge(
            "agent_memory_integrity_last_check_timestamp_seconds",
            "When the latest integrity check finished (epoch seconds).",
            registry=registry,
        )
        self.read_only = Gauge(
            "agent_memory_read_only",
            "1 while writes are refused after a failed integrity check, else 0.",
            registry=registry,
        )
        self.fenced = Gauge(
            "agent_memory_fenced", "1 while the write fence is up, else 0.", registry=registry
        )
        self.last_snapshot = Gauge(
            "agent_memory_last_snapshot_timestamp_seconds",
            "When the newest snapshot was taken (epoch seconds; 0 = none).",
            registry=registry,
        )
        self.last_verified_snapshot = Gauge(
            "agent_memory_last_verified_snapshot_timestamp_seconds",
            "When the newest successfully verified snapshot was taken (0 = none).",
            registry=registry,
        )
        self.last_verification_ok = Gauge(
            "agent_memory_last_verification_status",
            "Result of the latest snapshot verification: 1 ok, 0 failed, -1 none yet.",
            registry=registry,
        )
        self.integrity_ok.set(-1)
        self.last_verification_ok.set(-1)


class MemoryClientMetrics:
    """The agent side: calls to the memory server and the local outbox.

    A replica passes its ``version`` (``agent.version``), which labels the calls so
    the canary judge can compare memory write errors per version; a process that
    serves every version (the tool server) passes none and gets no such label.
    """

    def __init__(self, registry: CollectorRegistry, *, version: str | None = None) -> None:
        bound = (version,) if version is not None else ()
        self.calls = Counter(
            "agent_memory_client_calls_total",
            "Memory client calls by operation and outcome (ok, queued, error code).",
            ["operation", "status", *(["version"] if version is not None else [])],
            registry=registry,
        )
        self.calls_for = Children(self.calls, bound=bound)
        self.outbox_depth = Gauge(
            "agent_memory_outbox_depth",
            "Writes waiting in the local outbox for the memory server.",
            registry=registry,
        )
        self.outbox_delivered = Counter(
            "agent_memory_outbox_delivered_total",
            "Outbox writes delivered to the memory server.",
            registry=registry,
        )
        self.outbox_failed = Counter(
            "agent_memory_outbox_failed_total",
            "Outbox writes the memory server refused for good (kept in the outbox file).",
            registry=registry,
        )
        self.breaker_state = Gauge(
            "agent_memory_client_breaker_state",
            "The memory client's circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=registry,
        )
        self.outbox_depth.set(0)
        self.breaker_state.set(0)
