"""Feature flags as a live layer: each turn's flag values, evaluated through OpenFeature.

At the start of every turn ``FlagLayer.values_for`` evaluates each flag in force (the
accepted document's keys; with ``source: flagd``, every live key, a missing flag
meaning no value) through the OpenFeature client and the flagd provider, as the
OpenFeature type of its setting (``flag_file.setting_kind``). The evaluation context
is the turn's: targeting key ``<organization>/<user>`` (or the user without an
organization), so a ``fractional`` rollout buckets per user, and the attributes
``user``, ``organization``, ``agent``, ``version``, ``task``, ``session``.

A flag whose evaluation fails, or whose value does not pass ``check_live`` (a remote
flagd's, or a chain this replica lacks), leaves its setting to the layers below for
that turn, with a warning at most once a minute per flag. Disabled flags and flags
without a variant for the context leave it too. Each evaluation of a turn is counted
in ``agent_flag_evaluations_total{flag, variant}``; a look that is not a turn
(``counted=False``: ``GET /admin/config``, usage reports) is not. With a ``lock`` (the
gate's), a turn's flags are evaluated under it, all of them against one document.

``open_flag_layer(settings)`` is the one-shot form commands use (``keel flags show``,
``keel config show --user``): it reads the configured flag file directly, or the
document it is given.

>>> with open_flag_layer(settings) as layer:
...     layer.values_for(TurnContext(user_id="ana", organization="acme", agent_id="support",
...                                  version="v1"))
(LayerValues(layer='flag', values={'agent.model_chain': 'premium'},
             detail={'agent.model_chain': 'variant premium'}),)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagType, Reason

from agentkeel.config.flag_file import (
    FlagDefinition,
    FlagDocument,
    FlagFileError,
    flag_source_path,
    load_flag_file,
    setting_kind,
)
from agentkeel.config.flag_provider import BoundProvider, ServedFlags, flagd_provider
from agentkeel.config.live import LayerValues, TurnContext, base_values, check_live, live_keys
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError, Unavailable
from agentkeel.telemetry.metrics import FlagMetrics

__all__ = ["FlagLayer", "FlagOutcome", "evaluation_context", "open_flag_layer"]

logger = logging.getLogger("agentkeel.flags")

WARN_EVERY_S = 60.0
"""At most one warning per flag in this many seconds."""
MAX_UNDECLARED_VARIANTS = 16
"""``source: flagd``: variant labels kept per flag before the rest count as ``other``."""

_FLAG_TYPES = {
    "boolean": FlagType.BOOLEAN,
    "integer": FlagType.INTEGER,
    "float": FlagType.FLOAT,
    "string": FlagType.STRING,
    "object": FlagType.OBJECT,
}


@dataclass(frozen=True, slots=True)
class FlagOutcome:
    """One flag evaluated for one context."""

    key: str
    served: bool
    """Whether the flag sets the value (else the layers below do)."""
    value: Any
    """The checked value when ``served``; ``None`` otherwise."""
    variant: str | None
    label: str
    """The metric's variant label: the variant, ``default``, ``disabled``, ``error``, ``other``."""
    reason: str | None
    """OpenFeature's reason: ``STATIC``, ``TARGETING_MATCH``, ``DEFAULT``, ``DISABLED``, ..."""
    error: str | None = None


def evaluation_context(context: TurnContext) -> EvaluationContext:
    """The OpenFeature context of a turn: targeting key ``<org>/<user>`` (or the user),
    attributes from ``TurnContext.attributes()``. An empty user (a command asking for
    no one in particular) has no targeting key and no ``user`` attribute."""
    attributes: dict[str, Any] = context.attributes()
    if not context.user_id:
        attributes.pop("user", None)
        return EvaluationContext(targeting_key=None, attributes=attributes)
    key = f"{context.organization}/{context.user_id}" if context.organization else context.user_id
    return EvaluationContext(targeting_key=key, attributes=attributes)


class FlagLayer:
    """The ``flag`` live layer over an OpenFeature client.

    ``flags()`` returns the flags in force (the accepted document's), or ``None`` to
    evaluate every live key (``source: flagd``, where keel does not see the document).
    ``lock`` is held while ``flags()`` is read and its flags evaluated (the gate's: the
    document and the provider change together under it).
    """

    def __init__(
        self,
        *,
        client: OpenFeatureClient,
        settings: KeelSettings,
        flags: Callable[[], Mapping[str, FlagDefinition] | None],
        metrics: FlagMetrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        lock: AbstractContextManager[Any] | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self._flags = flags
        self._lock: AbstractContextManager[Any] = lock if lock is not None else nullcontext()
        self._metrics = metrics
        self._monotonic = monotonic
        self._all_keys = live_keys()
        self._types: dict[str, tuple[FlagType, Any]] = {}
        for key, value in base_values(settings).items():
            kind = setting_kind(key)
            default: Any = value
            if kind == "string" and value is None:
                default = ""
            elif kind == "object":
                default = _plain(value)
            self._types[key] = (_FLAG_TYPES[kind], default)
        self._checked: dict[tuple[str, str], tuple[Any, Any]] = {}
        """(key, variant) -> (the raw value seen, its checked value or _INVALID)."""
        self._warned: dict[str, float] = {}
        self._seen: dict[str, set[str]] = {}

    def values_for(self, context: TurnContext, *, counted: bool = True) -> Sequence[LayerValues]:
        """The flag values of a turn of ``context`` (see the module docstring); with
        ``counted=False`` the evaluations are not counted."""
        values: dict[str, Any] = {}
        detail: dict[str, str] = {}
        metrics = self._metrics if counted else None
        with self._lock:
            flags = self._flags()
            keys = self._all_keys if flags is None else tuple(flags)
            if not keys:
                return ()
            evaluation = evaluation_context(context)
            for key in keys:
                outcome = self._evaluate(key, evaluation, flags)
                if outcome is None:
                    continue
                if metrics is not None:
                    metrics.evaluations_for(key, outcome.label).inc()
                if outcome.served:
                    values[key] = outcome.value
                    detail[key] = f"variant {outcome.variant}"
        return (LayerValues("flag", values, detail),) if values else ()

    def explain(self, context: TurnContext, key: str) -> FlagOutcome | None:
        """How ``key`` evaluates for ``context`` (not counted); ``None`` when no flag sets it."""
        with self._lock:
            return self._evaluate(key, evaluation_context(context), self._flags())

    def _evaluate(
        self,
        key: str,
        evaluation: EvaluationContext,
        flags: Mapping[str, FlagDefinition] | None,
    ) -> FlagOutcome | None:
        if flags is not None and key not in flags:
            return None
        flag_type, default = self._types[key]
        details = self.client.evaluate_flag_details(flag_type, key, default, evaluation)
        reason = str(details.reason) if details.reason is not None else None
        if details.error_code is not None:
            if details.error_code == ErrorCode.FLAG_NOT_FOUND and flags is None:
                return None  # flagd serves no flag for this setting
            message = f"{details.error_code}: {details.error_message or 'no detail'}"
            self._warn(key, f"flag '{key}' could not be evaluated ({message})")
            return FlagOutcome(key, False, None, None, "error", reason, message)
        if details.reason == Reason.DISABLED:
            return FlagOutcome(key, False, None, None, "disabled", reason)
        variant = details.variant
        if variant is None:
            return FlagOutcome(key, False, None, None, "default", reason)
        checked, problem = self._check(key, variant, details.value)
        if problem is not None:
            self._warn(key, problem)
            return FlagOutcome(key, False, None, variant, "error", reason, problem)
        return FlagOutcome(key, True, checked, variant, self._label(key, variant, flags), reason)

    def _check(self, key: str, variant: str, raw: Any) -> tuple[Any, str | None]:
        """``raw`` checked for ``key`` (``check_live``), once per value a variant has."""
        seen = self._checked.get((key, variant))
        if seen is not None and (seen[0] is raw or seen[0] == raw):
            checked = seen[1]
        else:
            try:
                origin = f"flag '{key}' variant '{variant}'"
                checked = check_live({key: raw}, origin=origin, settings=self.settings)[key]
            except ConfigError as exc:
                checked = _Invalid(" ".join(line.strip() for line in exc.message.splitlines()))
            if len(self._checked) > 4096:
                self._checked.clear()
            self._checked[(key, variant)] = (raw, checked)
        if isinstance(checked, _Invalid):
            return None, f"{checked.problem}; the settings below the flags apply"
        return checked, None

    def _label(self, key: str, variant: str, flags: Mapping[str, FlagDefinition] | None) -> str:
        if flags is not None:
            return variant if variant in flags[key].variants else "other"
        seen = self._seen.setdefault(key, set())
        if variant in seen:
            return variant
        if len(seen) < MAX_UNDECLARED_VARIANTS:
            seen.add(variant)
            return variant
        return "other"

    def _warn(self, key: str, message: str) -> None:
        now = self._monotonic()
        last = self._warned.get(key)
        if last is not None and now - last < WARN_EVERY_S:
            return
        self._warned[key] = now
        logger.warning(
            "%s; the turn uses the settings below the flags for it",
            message,
            extra={"event": "flags", "flag": key},
        )


@dataclass(frozen=True, slots=True)
class _Invalid:
    problem: str


def _plain(value: Any) -> Any:
    """A live value as the JSON an object flag's default holds."""
    if isinstance(value, dict):
        return {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in value.items()}
    if isinstance(value, list | tuple):
        return list(value)
    return value


@contextmanager
def open_flag_layer(
    settings: KeelSettings, *, document: FlagDocument | None = None
) -> Iterator[FlagLayer | None]:
    """A ``FlagLayer`` for one-shot evaluations (commands), closed on exit; ``None`` with
    ``flags.source: none``.

    ``source: file`` reads the configured flag file directly (``flag_source_path``),
    validated: a bad file raises its ``FlagFileError`` (a ``ConfigError`` listing every
    problem); a missing one means no flags. ``document`` evaluates that document
    instead (``flags_in_force``: what the replicas serve while the file is refused).
    ``source: flagd`` connects to flagd first and raises ``Unavailable`` when it does not
    answer within the provider's deadline.

    >>> with open_flag_layer(load_settings().settings) as layer:
    ...     outcome = layer.explain(context, "agent.model_chain") if layer else None
    """
    flags = settings.flags
    if flags.source == "none":
        yield None
        return
    if flags.source == "flagd":
        bound = BoundProvider(flagd_provider(flags))
        try:
            try:
                client = bound.open(wait=True)
            except OpenFeatureError as exc:
                raise Unavailable(
                    f"flagd at {flags.flagd_host}:{flags.flagd_port} did not answer: "
                    f"{exc.error_message or exc}; check flags.flagd_host and "
                    "flags.flagd_port, or that flagd is running"
                ) from None
            yield FlagLayer(client=client, settings=settings, flags=lambda: None)
        finally:
            bound.close()
        return
    if document is None:
        path = flag_source_path(settings)
        document = (
            load_flag_file(path, settings=settings) if path.exists() else FlagDocument.empty()
        )
    served = ServedFlags()
    try:
        try:
            served.serve(document.content)
        except OpenFeatureError as exc:  # pragma: no cover - the document was validated
            raise FlagFileError(str(served.file), [str(exc.error_message or exc)]) from None
        in_force = document.flags
        yield FlagLayer(client=served.client(), settings=settings, flags=lambda: in_force)
    finally:
        served.close()
