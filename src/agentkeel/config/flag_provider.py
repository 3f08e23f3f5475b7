"""The flagd provider keel evaluates flags with, and its binding to an OpenFeature domain.

- ``source: file``: the provider's FILE resolver (flagd's in-process evaluator) reads
  the accepted copy (``flag_accepted.py``), never the flag file itself, so only a
  validated document is ever served.
- ``source: flagd``: the provider against a flagd service: ``in-process`` syncs the
  flags over gRPC (``flagd_port``, 8015) and evaluates them locally, ``rpc`` asks
  flagd for each evaluation (8013).

Each ``BoundProvider`` registers its provider under an OpenFeature domain of its own,
so two apps in one process (tests, benchmarks) never share flags, and unregisters
it (the SDK shuts it down) on close.

>>> bound = BoundProvider(file_provider(copy.file, poll_interval_s=1.0))
>>> client = bound.open(wait=True)
>>> bound.close()
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.provider import FeatureProvider
from openfeature.provider.no_op_provider import NoOpProvider

from agentkeel.config.flags import FlagsSettings

__all__ = [
    "BACKUP_POLL_S",
    "BoundProvider",
    "file_provider",
    "flagd_provider",
    "reload_file_provider",
]


BACKUP_POLL_S = 3600.0
"""How often a file provider's own watcher looks at its file when the gate's reload
call (``reload_file_provider``) is there to tell it of every change."""


def file_provider(path: Path, *, poll_interval_s: float) -> FlagdProvider:
    """A flagd provider evaluating the flag document at ``path`` in process.

    Whoever changes the file calls ``reload_file_provider`` (the gate does, before it
    puts a document in force), so the provider's own watcher only backs that up, once
    an hour (flagd's ``deadline_ms`` paces it); with a flagd version that lacks the
    reload call, the watcher checks every ``poll_interval_s`` instead.
    """
    provider = _file_provider(path, BACKUP_POLL_S)
    return provider if _reloadable(provider) else _file_provider(path, poll_interval_s)


def _file_provider(path: Path, poll_s: float) -> FlagdProvider:
    return FlagdProvider(
        resolver_type=ResolverType.FILE,
        offline_flag_source_path=str(path),
        deadline_ms=max(1, round(poll_s * 1000)),
    )


def flagd_provider(flags: FlagsSettings) -> FlagdProvider:
    """A flagd provider against the flagd service the ``flags:`` settings name."""
    resolver = ResolverType.IN_PROCESS if flags.flagd_resolver == "in-process" else ResolverType.RPC
    return FlagdProvider(
        host=flags.flagd_host,
        port=flags.flagd_port,
        tls=flags.flagd_tls,
        resolver_type=resolver,
        selector=flags.flagd_selector,
    )


def reload_file_provider(provider: FeatureProvider) -> None:
    """Have a FILE-resolver flagd provider read its file now, not at its next poll, so a
    new document and the flags a turn evaluates change together."""
    load = _reload_call(provider)
    if load is not None:
        load()


def _reload_call(provider: FeatureProvider) -> Callable[[], None] | None:
    # The file watcher's own check (mtime, then load); absent, the provider polls.
    connector = getattr(getattr(provider, "resolver", None), "connector", None)
    load = getattr(connector, "safe_load_data", None)
    return load if callable(load) else None


def _reloadable(provider: FeatureProvider) -> bool:
    return _reload_call(provider) is not None


class BoundProvider:
    """A provider registered under a domain of its own while open."""

    def __init__(self, provider: FeatureProvider) -> None:
        self.provider = provider
        self.domain = f"agentkeel-flags-{uuid.uuid4().hex[:12]}"
        self._open = False

    def open(self, *, wait: bool) -> OpenFeatureClient:
        """Register the provider and return a client of its domain. ``wait``: initialize
        it now and raise the provider's error (an unreadable file, flagd not answering
        within its deadline); otherwise it initializes in the background and
        evaluations fail (and fall back) until it is ready."""
        self._open = True  # registered even when its initialization fails: close() undoes it
        if wait:
            api.set_provider_and_wait(self.provider, self.domain)
        else:
            api.set_provider(self.provider, self.domain)
        return self.client()

    def client(self) -> OpenFeatureClient:
        """A client of this provider's domain."""
        return api.get_client(self.domain)

    def close(self) -> None:
        """Unregister the provider; the SDK shuts it down (its watcher thread stops)."""
        if self._open:
            self._open = False
            api.set_provider(NoOpProvider(), self.domain)
