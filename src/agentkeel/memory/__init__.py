"""The memory server and its stores: durable agent memory with a hash-chained log.

>>> store = open_memory_store("sqlite:///.keel/memory/memory.db")
>>> await store.open()
>>> await store.write([CreateMemory(namespace="agent:support/user:42", content="likes tea")])

Agents reach the server through ``MemoryClient`` (``turn.memory``): reads fail fast
while it is down, writes wait in a durable local outbox.
"""

from agentkeel.config.memory import MemoryClientSettings, MemorySettings, RetentionSettings
from agentkeel.memory.api_client import MemoryApiClient
from agentkeel.memory.app import create_app
from agentkeel.memory.backends import MemoryBackend, open_memory_store
from agentkeel.memory.client import MemoryClient, WriteOutcome, build_memory_client
from agentkeel.memory.integrity import IntegrityReport, check_integrity
from agentkeel.memory.outbox import MemoryOutbox
from agentkeel.memory.postgres_store import PostgresMemoryStore
from agentkeel.memory.snapshots import SnapshotManager, plan_retention
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.memory.store import (
    CreateMemory,
    DeleteMemory,
    MemoryRecord,
    MemoryStore,
    SearchHit,
    SearchQuery,
    UpdateMemory,
    WriteResult,
)

__all__ = [
    "CreateMemory",
    "DeleteMemory",
    "IntegrityReport",
    "MemoryApiClient",
    "MemoryBackend",
    "MemoryClient",
    "MemoryClientSettings",
    "MemoryOutbox",
    "MemoryRecord",
    "MemorySettings",
    "MemoryStore",
    "PostgresMemoryStore",
    "RetentionSettings",
    "SearchHit",
    "SearchQuery",
    "SnapshotManager",
    "SqliteMemoryStore",
    "UpdateMemory",
    "WriteOutcome",
    "WriteResult",
    "build_memory_client",
    "check_integrity",
    "create_app",
    "open_memory_store",
    "plan_retention",
]
