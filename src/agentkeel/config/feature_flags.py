"""A replica's feature flags, put together: the gate, the flagd provider and the layer.

``source: file`` (the default): the ``FlagGate`` watches the flag file and keeps the
accepted copy, ``ServedFlags`` (the flagd provider, FILE resolver) evaluates the
document in force in process, and the ``FlagLayer`` evaluates the gate's flags at
each turn, under the gate's lock. ``source: flagd``: the provider syncs from a flagd
service and the layer evaluates every live key. ``source: none``: no flags
(``build_feature_flags`` returns ``None``).

``aclose`` stops the gate (waiting for a check in flight, so nothing is put in force
after it), then shuts the provider down and unregisters it; with the file source it
also waits for the provider's watcher thread to end.

The agent server builds it in ``create_app`` and starts and stops it in its lifespan;
``report()`` is ``GET /admin/flags``.

>>> flags = build_feature_flags(settings, metrics=FlagMetrics(registry),
...                             actor="replica:replica-1")
>>> await flags.start()
>>> live = LiveSettings(settings, layers=[flags])   # flags is the LiveLayer
>>> await flags.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from openfeature.exception import OpenFeatureError

from agentkeel.config.flag_accepted import AcceptedFlags
from agentkeel.config.flag_file import FlagDocument, flag_source_path
from agentkeel.config.flag_gate import FlagGate
from agentkeel.config.flag_layer import FlagLayer
from agentkeel.config.flag_provider import BoundProvider, ServedFlags, flagd_provider
from agentkeel.config.live import LayerValues, TurnContext
from agentkeel.config.settings import KeelSettings
from agentkeel.telemetry.metrics import FlagMetrics

__all__ = ["FeatureFlags", "build_feature_flags"]

logger = logging.getLogger("agentkeel.flags")


class FeatureFlags:
    """The flags of one process; it is the ``flag`` live layer (``values_for``).

    Either ``gate`` and ``served`` (``source: file``) or ``bound`` (``source: flagd``).
    """

    def __init__(
        self,
        *,
        settings: KeelSettings,
        gate: FlagGate | None = None,
        served: ServedFlags | None = None,
        bound: BoundProvider | None = None,
        metrics: FlagMetrics | None = None,
    ) -> None:
        if (gate is None) != (served is None) or (gate is None) == (bound is None):
            raise ValueError("FeatureFlags takes a gate and served flags, or a bound provider")
        self.settings = settings
        self.gate = gate
        self.served = served
        self.bound = bound
        self.metrics = metrics
        if gate is not None and served is not None:
            client = served.client()
            gate.before_apply = self._before_apply
            self.layer = FlagLayer(
                client=client,
                settings=settings,
                flags=lambda: gate.document.flags,
                metrics=metrics,
                lock=gate.lock,
            )
        else:
            assert bound is not None
            self.layer = FlagLayer(
                client=bound.client(), settings=settings, flags=lambda: None, metrics=metrics
            )
        self._started = False
        self._task: asyncio.Task[None] | None = None

    def values_for(self, context: TurnContext, *, counted: bool = True) -> Sequence[LayerValues]:
        """The ``LiveLayer``: the turn's flag values (none before ``start``)."""
        return self.layer.values_for(context, counted=counted) if self._started else ()

    async def start(self) -> None:
        """Check the flag file and start watching it (file source), or connect to flagd."""
        if self.gate is not None:
            gate = self.gate
            # The provider is registered when a first document goes in force, so a
            # replica without a flag file never writes to the data directory.
            await asyncio.to_thread(gate.start)
            interval = self.settings.flags.poll_interval_s
            self._task = asyncio.get_running_loop().create_task(gate.run(interval_s=interval))
        else:
            assert self.bound is not None
            # A flagd service may be down now and up later: the provider connects in
            # the background, and evaluations fall back until it has.
            try:
                self.bound.open(wait=False)
            except OpenFeatureError as exc:
                _log_not_started(exc)
            if self.metrics is not None:
                self.metrics.valid.set(1)
        self._started = True

    async def aclose(self) -> None:
        """Stop watching (a check in flight finishes first), then shut the provider down
        and unregister it."""
        self._started = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        if self.gate is not None:
            self.gate.close()  # waits for a check still running in its worker thread
        if self.served is not None:
            self.served.close()
        if self.bound is not None:
            self.bound.close()

    def report(self) -> dict[str, Any]:
        """``GET /admin/flags``: where the flags come from, whether the current file is
        the one in force (and why not), when they were applied, and each flag."""
        flags = self.settings.flags
        if self.gate is None:
            return {
                "source": "flagd",
                "file": None,
                "flagd": {
                    "host": flags.flagd_host,
                    "port": flags.flagd_port,
                    "resolver": "in-process",
                    "selector": flags.flagd_selector,
                },
                "valid": True,
                "error": None,
                "applied_at": None,
                "sha256": None,
                "flags": {},
            }
        gate = self.gate
        document = gate.document
        return {
            "source": "file",
            "file": str(gate.source),
            "valid": gate.valid,
            "error": gate.error,
            "applied_at": _iso(gate.applied_at),
            "sha256": document.sha256 if document.flags else None,
            "flags": {key: flag.summary() for key, flag in document.flags.items()},
        }

    def _before_apply(self, document: FlagDocument) -> None:
        # In the gate's worker thread, under its lock: the provider has read the
        # document by the time a turn evaluates its flags.
        assert self.served is not None
        try:
            self.served.serve(document.content)
        except OpenFeatureError as exc:
            _log_not_started(exc)


def build_feature_flags(
    settings: KeelSettings, *, metrics: FlagMetrics | None, actor: str
) -> FeatureFlags | None:
    """The flags ``settings.flags`` configure (``None`` for ``source: none``); nothing is
    read or started until ``start``. ``actor`` names this process in the audit
    records of the changes it accepts (``replica:<id>``)."""
    flags = settings.flags
    if flags.source == "none":
        return None
    if flags.source == "flagd":
        return FeatureFlags(
            settings=settings, bound=BoundProvider(flagd_provider(flags)), metrics=metrics
        )
    source = flag_source_path(settings).absolute()
    accepted = AcceptedFlags(data_dir=settings.data_dir, source=source)
    gate = FlagGate(
        source=source, accepted=accepted, settings=settings, actor=actor, metrics=metrics
    )
    return FeatureFlags(settings=settings, gate=gate, served=ServedFlags(), metrics=metrics)


def _log_not_started(exc: OpenFeatureError) -> None:
    # Evaluations fail (and fall back) until the provider can read its source.
    logger.error(
        "the flag provider did not start: %s",
        exc.error_message or exc,
        extra={"event": "flags"},
    )


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat()
