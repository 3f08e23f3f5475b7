"""The flagd provider keel evaluates flags with, and its binding to an OpenFeature domain.

- ``source: file``: ``ServedFlags``, the provider's FILE resolver (flagd's in-process
  evaluator) over a copy of the flags in force that only this process writes, in a
  scratch directory of its own. The gate puts each accepted document there and has the
  provider read it at once (``serve``), while no turn evaluates (the gate's lock), so
  a turn sees one document or the next, never a mix. The provider's own file watcher
  finds nothing that ``serve`` has not loaded already; it polls every
  ``WATCHER_POLL_S``, so its thread ends that soon after the provider is shut down.
- ``source: flagd``: the provider against a flagd service, in-process: flagd syncs the
  flags over gRPC (``flagd_port``, 8015) and each turn evaluates them locally. (flagd's
  RPC resolver, a network call per flag per turn, is not offered: ``flags.py``.)

Each ``BoundProvider`` registers its provider under an OpenFeature domain of its own,
so two apps in one process (tests, benchmarks) never share flags. ``close`` shuts the
provider down before it unregisters it (the SDK alone would do that later, in a
thread of its own).

>>> served = ServedFlags()
>>> served.serve(document.content)          # blocking: off the event loop
>>> served.client().get_boolean_value("agent.memory_writes", True)
>>> served.close()                           # its watcher thread has ended
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
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
from agentkeel.errors import ConfigError
from agentkeel.storage.atomic import atomic_write

__all__ = [
    "WATCHER_POLL_S",
    "BoundProvider",
    "ServedFlags",
    "file_provider",
    "flagd_provider",
]

logger = logging.getLogger("agentkeel.flags")

WATCHER_POLL_S = 0.2
"""How often a file provider's own watcher thread looks at its file (one ``stat``), and
so how long the thread outlives the provider's shutdown at most."""


def file_provider(path: Path, *, poll_s: float = WATCHER_POLL_S) -> FlagdProvider:
    """A flagd provider evaluating the flag document at ``path`` in process; its watcher
    checks the file every ``poll_s`` (flagd's ``deadline_ms`` paces it)."""
    return FlagdProvider(
        resolver_type=ResolverType.FILE,
        offline_flag_source_path=str(path),
        deadline_ms=max(1, round(poll_s * 1000)),
    )


def flagd_provider(flags: FlagsSettings) -> FlagdProvider:
    """A flagd provider that syncs the flags from the flagd service ``flags:`` names and
    evaluates them in process."""
    return FlagdProvider(
        host=flags.flagd_host,
        port=flags.flagd_port,
        tls=flags.flagd_tls,
        resolver_type=ResolverType.IN_PROCESS,
        selector=flags.flagd_selector,
    )


class BoundProvider:
    """A provider registered under a domain of its own while open."""

    def __init__(self, provider: FeatureProvider, *, domain: str | None = None) -> None:
        self.provider = provider
        self.domain = domain or _new_domain()
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
        """Shut the provider down before this returns (a file watcher stops polling, a
        flagd connection closes), then unregister it. A file watcher's thread is asleep
        for up to its poll and ends then (``ServedFlags.close`` waits for it). Blocking:
        call it off the event loop."""
        if not self._open:
            return
        self._open = False
        try:
            self.provider.shutdown()
        except Exception as exc:  # a provider failing to stop must not stop the process
            logger.warning(
                "the flag provider did not shut down cleanly: %s", exc, extra={"event": "flags"}
            )
        api.set_provider(NoOpProvider(), self.domain)


class ServedFlags:
    """The flags in force of one process, as a flagd FILE provider serves them.

    Nothing is written or started until the first ``serve``; ``close`` shuts the
    provider down, waits for its watcher thread to end and removes the scratch copy.
    """

    def __init__(self, *, poll_s: float = WATCHER_POLL_S) -> None:
        self.domain = _new_domain()
        self._poll_s = poll_s
        self._directory = Path(tempfile.gettempdir()) / f"keel-{self.domain}"
        self.file = self._directory / "flags.json"
        """The copy the provider reads; only ``serve`` writes it."""
        provider = file_provider(self.file, poll_s=poll_s)
        self._reload = _reload_call(provider)
        if self._reload is None:
            raise ConfigError(
                "the installed openfeature-provider-flagd cannot be told to reread its flag "
                "file (its file watcher has no safe_load_data); install the version "
                "agentkeel's pyproject.toml names (pip install -e .)"
            )
        self.bound = BoundProvider(provider, domain=self.domain)
        self._served = False

    def client(self) -> OpenFeatureClient:
        """A client of this process's flags (no flags before the first ``serve``)."""
        return self.bound.client()

    def serve(self, content: bytes) -> None:
        """Put the flag document ``content`` (canonical JSON, validated) in force: written
        to the copy, read by the provider before this returns. The first call registers
        the provider and raises its ``OpenFeatureError`` when it cannot start. Blocking."""
        if not self._served:
            self._directory.mkdir(mode=0o700, exist_ok=True)
            atomic_write(self.file, content, durable=False)
            self._served = True
            self.bound.open(wait=True)
            return
        # A later modification time than the copy's: the provider rereads only then.
        atomic_write(self.file, content, durable=False, newer=True)
        assert self._reload is not None
        self._reload()

    def close(self) -> None:
        """Shut the provider down and unregister it, wait (at most a second more than
        the watcher's poll) for its watcher thread to end, remove the copy. Blocking."""
        if self._served:
            self._served = False
            self.bound.close()
            thread = _watcher_thread(self.bound.provider)
            if thread is None:
                return  # no telling when its watcher last looks at the copy: leave it
            thread.join(timeout=self._poll_s + 1.0)
            if thread.is_alive():
                return  # its last look at a missing copy would be an error log
        shutil.rmtree(self._directory, ignore_errors=True)


def _new_domain() -> str:
    return f"agentkeel-flags-{uuid.uuid4().hex}"


def _reload_call(provider: FeatureProvider) -> Callable[[], None] | None:
    # The file watcher's own check (modification time, then load).
    connector = getattr(getattr(provider, "resolver", None), "connector", None)
    load = getattr(connector, "safe_load_data", None)
    return load if callable(load) else None


def _watcher_thread(provider: FeatureProvider) -> threading.Thread | None:
    connector = getattr(getattr(provider, "resolver", None), "connector", None)
    thread = getattr(connector, "thread", None)
    return thread if isinstance(thread, threading.Thread) else None
