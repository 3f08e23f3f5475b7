"""Per-organization and per-user overrides: one YAML file, watched.

    organizations:
      acme:
        agent.model_chain: premium
    users:
      alice:                 # alice without an organization
        guardrails.max_output_tokens: 256
      acme/bob:              # bob of acme (not bob of globex)
        quotas.user_daily_tokens: 5000000

Only live settings (``KeelSettings.LIVE``) may appear, as dotted keys; anything
else, a wrong value or a section other than these two is an error naming the
file, the entry and the key. ``Overrides`` is the checked document and a
``LiveLayer``: a turn of bob in acme gets acme's values (layer ``org``), then
``acme/bob``'s (layer ``user``, which wins); the detail of each value names the
entry. A user entry without ``organization/`` is that user outside any
organization.

Who an entry addresses: ``acme/bob`` is the user ``bob`` of the organization
``acme`` only; ``bob`` is the user ``bob`` outside any organization only (not bob
of acme, nor of any other). A user entry is split at its first ``/``, so a user
of an organization may have ``/`` in their id (``acme/team/bob`` is ``team/bob``
of acme), but a user outside any organization whose id holds a ``/`` cannot be
given a user override: ``a/b`` always reads as ``b`` of ``a``.

``OverridesLayer`` is the file as a replica sees it: read when the app is built
(a bad file stops the start), then checked every ``flags.poll_interval_s`` by a
background task (``start``), whose worker thread stats, reads, validates and
audits a changed file; a turn only reads the document in force. A bad change is
refused: the error is logged, the last good overrides stay in force and
``agent_overrides_valid`` drops to 0. Each applied change is audited
(``overrides_audit.py``: one record per change).

>>> overrides = read_overrides(Path("overrides.yaml"), settings=settings)
>>> overrides.values_for(TurnContext(user_id="bob", organization="acme", agent_id="support",
...                                  version="v1"))
[LayerValues(layer='org', ...), LayerValues(layer='user', ...)]
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic_core import to_jsonable_python

from agentkeel.config.live import LayerValues, TurnContext, check_live
from agentkeel.config.overrides_audit import (
    AcceptedOverrides,
    recorded_overrides,
    state_dir_for,
)
from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError, KeelError
from agentkeel.storage.file_stamp import FileStamp, file_stamp

if TYPE_CHECKING:
    from agentkeel.resilience.clock import Clock
    from agentkeel.telemetry.metrics import OverridesMetrics

__all__ = [
    "SECTIONS",
    "Overrides",
    "OverridesInForce",
    "OverridesLayer",
    "overrides_in_force",
    "overrides_path",
    "parse_overrides",
    "read_overrides",
    "watch_overrides",
]

logger = logging.getLogger("agentkeel.config.overrides")

SECTIONS = ("organizations", "users")
"""The top-level keys of an overrides file."""


class Overrides:
    """A checked overrides document: entry name -> live key -> value, per section.

    >>> Overrides(users={"acme/bob": {"quotas.user_daily_tokens": 5_000_000}}).entries
    1
    """

    def __init__(
        self,
        *,
        organizations: Mapping[str, Mapping[str, Any]] | None = None,
        users: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.organizations = {name: dict(values) for name, values in (organizations or {}).items()}
        self.users = {name: dict(values) for name, values in (users or {}).items()}
        # Built once: a turn costs two dict lookups.
        self._orgs = {
            name: LayerValues("org", values, dict.fromkeys(values, name))
            for name, values in self.organizations.items()
            if values
        }
        self._users = {
            _user_key(name): LayerValues("user", values, dict.fromkeys(values, name))
            for name, values in self.users.items()
            if values
        }

    @property
    def entries(self) -> int:
        """How many organization and user entries the document has."""
        return len(self.organizations) + len(self.users)

    def values_for(self, context: TurnContext, *, counted: bool = True) -> Sequence[LayerValues]:
        """The organization's values, then the user's (which win), for a turn of ``context``
        (nothing is counted either way)."""
        found: list[LayerValues] = []
        if context.organization is not None:
            org = self._orgs.get(context.organization)
            if org is not None:
                found.append(org)
        user = self._users.get((context.organization, context.user_id))
        if user is not None:
            found.append(user)
        return found

    def to_json(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The document as plain JSON values (what the audit compares)."""
        return {
            "organizations": to_jsonable_python(self.organizations),
            "users": to_jsonable_python(self.users),
        }


def overrides_path(settings: KeelSettings) -> Path:
    """The overrides file: ``overrides.file``, else ``<data_dir>/overrides.yaml``."""
    return settings.overrides.file or settings.data_dir / "overrides.yaml"


def parse_overrides(data: Any, *, origin: str, settings: KeelSettings | None = None) -> Overrides:
    """``data`` (the file's YAML) checked as an overrides document, or one ``ConfigError``
    naming ``origin`` and every bad section, entry and key. With ``settings``,
    ``agent.model_chain`` values must name one of its chains or providers.

    >>> parse_overrides({"users": {"ana": {"agent.tools": ["calculator"]}}}, origin="o.yaml")
    """
    if data is None:
        return Overrides()
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"The overrides file '{origin}' must hold a mapping with 'organizations:' and/or "
            f"'users:' at the top level, got {type(data).__name__}."
        )
    problems: list[str] = [
        f"'{key}' is not a section of an overrides file; the sections are {' and '.join(SECTIONS)}"
        for key in data
        if key not in SECTIONS
    ]
    sections: dict[str, dict[str, dict[str, Any]]] = {section: {} for section in SECTIONS}
    for section in SECTIONS:
        entries = data.get(section)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            problems.append(f"{section} must map names to settings, got {type(entries).__name__}")
            continue
        for raw_name, values in entries.items():
            name = str(raw_name)
            where = f"{section}.{name}"
            problem = _name_problem(section, name)
            if problem is not None:
                problems.append(f"{where}: {problem}")
                continue
            if values is None:
                values = {}
            if not isinstance(values, Mapping):
                problems.append(
                    f"{where}: must map live settings to values (e.g. "
                    f"guardrails.max_output_tokens: 256), got {type(values).__name__}"
                )
                continue
            try:
                sections[section][name] = check_live(
                    {str(key): value for key, value in values.items()},
                    origin=where,
                    settings=settings,
                )
            except ConfigError as exc:
                problems.append(exc.message.replace("\n", "\n  "))
    if problems:
        raise ConfigError(
            f"The overrides file '{origin}' is not valid; fix it and save it again:\n  "
            + "\n  ".join(problems)
        )
    return Overrides(organizations=sections["organizations"], users=sections["users"])


def read_overrides(path: Path, *, settings: KeelSettings | None = None) -> Overrides:
    """The overrides in ``path`` (none when it does not exist), checked; a ``ConfigError``
    naming the file, entries and keys when it is not valid."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return Overrides()
    except OSError as exc:
        raise ConfigError(f"Cannot read the overrides file '{path}': {exc}.") from exc
    return _parse_text(text, path=path, settings=settings)


@dataclass(frozen=True, slots=True)
class OverridesInForce:
    """The overrides a command shows (``overrides_in_force``)."""

    path: Path
    overrides: Overrides
    refused: ConfigError | None = None
    """Why the file is not the document shown (it is refused); ``None`` when it is."""
    from_record: bool = False
    """With ``refused``: whether ``overrides`` is the document last applied (else none)."""

    @property
    def warning(self) -> str | None:
        """What to tell the operator when the file is refused: why, and what is shown."""
        if self.refused is None:
            return None
        shown = (
            "showing the last good overrides, the ones replicas last applied"
            if self.from_record
            else "no replica applied any overrides from it yet, so none are shown"
        )
        return f"{self.refused.message}\nThe overrides file is refused; {shown}."


def overrides_in_force(settings: KeelSettings) -> OverridesInForce:
    """The overrides of ``settings`` as replicas apply them: the file, checked; while it
    is refused, the document replicas last applied (the last audited one), with why.

    >>> shown = overrides_in_force(settings)
    >>> shown.warning is None, shown.overrides.entries
    (True, 2)
    """
    path = overrides_path(settings)
    try:
        return OverridesInForce(path=path, overrides=read_overrides(path, settings=settings))
    except ConfigError as refused:
        document = recorded_overrides(state_dir_for(settings.data_dir, path))
        if document is not None:
            try:
                last = parse_overrides(document, origin=str(path), settings=settings)
            except ConfigError:
                pass  # recorded by another version of the settings: nothing to show
            else:
                return OverridesInForce(
                    path=path, overrides=last, refused=refused, from_record=True
                )
        return OverridesInForce(path=path, overrides=Overrides(), refused=refused)


class OverridesLayer:
    """The overrides file of one replica, watched: a ``LiveLayer`` over the last good
    document.

    ``load()`` reads it once (the app calls it when built: a bad file stops the
    start); ``start()`` audits what came into force and checks the file every
    ``poll_interval_s`` in a worker thread (``check``), applying a valid change or
    refusing a bad one and keeping the last good overrides (see the module doc);
    ``aclose()`` stops that, after a check in flight. ``values_for`` only reads the
    document in force.

    >>> layer = OverridesLayer(path=Path(".keel/overrides.yaml"), settings=settings,
    ...     clock=SystemClock(), accepted=AcceptedOverrides(...))
    >>> layer.load()
    >>> await layer.start()
    >>> live = LiveSettings(settings, layers=[flags, layer])
    >>> await layer.aclose()
    """

    def __init__(
        self,
        *,
        path: Path,
        settings: KeelSettings,
        clock: Clock,
        accepted: AcceptedOverrides,
        poll_interval_s: float | None = None,
        metrics: OverridesMetrics | None = None,
    ) -> None:
        self.path = path
        self.settings = settings
        self.clock = clock
        self.accepted = accepted
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else settings.flags.poll_interval_s
        )
        self.metrics = metrics
        self.overrides = Overrides()
        """The document in force."""
        self.error: str | None = None
        """Why the file's latest content was refused, while it is."""
        self.applied_at: float | None = None
        """Unix time at which the document in force was applied."""
        self._digest: str | None = None
        self._stamp: FileStamp | None = None
        self._seen: str | None = None
        self._checking = threading.Lock()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._set_valid(True)

    @property
    def valid(self) -> bool:
        """Whether the document in force is the file's latest content."""
        return self.error is None

    def load(self) -> None:
        """Read the file and put it in force; ``ConfigError`` when it is not valid."""
        try:
            stamp = file_stamp(self.path)
        except OSError as exc:
            raise ConfigError(f"Cannot read the overrides file '{self.path}': {exc}.") from exc
        if stamp is None:
            self._stamp = None
            return
        text = self._read()
        overrides = _parse_text(text, path=self.path, settings=self.settings)
        self._stamp, self._seen = stamp, _digest(text)
        self._put_in_force(overrides, self._seen)

    def record(self) -> None:
        """Audit the document in force against the one last audited for this file
        (changes made while no replica ran); raises when the audit cannot be written."""
        self.accepted.record(self.overrides.to_json(), self._digest or _digest(b""), previous={})

    def values_for(self, context: TurnContext, *, counted: bool = True) -> Sequence[LayerValues]:
        """The overrides in force for a turn of ``context`` (no file is touched)."""
        return self.overrides.values_for(context)

    async def start(self) -> None:
        """Audit the document in force (``record``), then check the file every
        ``poll_interval_s`` in a worker thread until ``aclose``."""
        await asyncio.to_thread(self.record)
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Check the file every ``poll_interval_s`` until cancelled, off the event loop."""
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                # A bug, not a bad file: say so, keep the overrides in force, keep watching.
                logger.exception(
                    "checking the overrides file %s failed; the overrides in force stay",
                    self.path,
                    extra={"event": "config"},
                )

    async def aclose(self) -> None:
        """Stop checking; a check already in its worker thread finishes first."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """No check after this one (blocking while a check runs)."""
        with self._checking:
            self._closed = True

    def check(self) -> bool:
        """Reload the file if it changed; whether a new document came into force.
        Blocking file work and audit writes: the background task runs it in a thread."""
        with self._checking:
            if self._closed:
                return False
            return self._check()

    def _check(self) -> bool:
        try:
            stamp = file_stamp(self.path)
        except OSError:
            return False  # unreadable for now (a permission change): checked again later
        if stamp == self._stamp:
            return False
        if stamp is None:
            self._stamp, self._seen = None, None
            if self._digest is not None:
                self._refuse(
                    f"The overrides file '{self.path}' disappeared; the last good overrides "
                    "stay in force. To remove every override, save an empty file instead.",
                    count=False,
                )
            else:
                self._set_valid(True)  # never had one: no file is no overrides
            return False
        try:
            text = self._read()
        except ConfigError as exc:
            self._refuse(exc.message)
            return False
        digest = _digest(text)
        if digest == self._seen:
            self._stamp = stamp
            if digest == self._digest:
                self._set_valid(True)
            return False
        self._seen = digest
        try:
            overrides = _parse_text(text, path=self.path, settings=self.settings)
        except ConfigError as exc:
            self._stamp = stamp
            self._refuse(exc.message)
            return False
        if digest == self._digest:
            self._stamp = stamp
            self._set_valid(True)
            return False
        try:
            changes = self.accepted.record(
                overrides.to_json(), digest, previous=self.overrides.to_json()
            )
        except KeelError as exc:
            # Not applied without its audit record; the next check tries again.
            self._seen = None
            logger.error(
                "overrides file %s changed but the change is not applied: %s",
                self.path,
                exc.message,
                extra={"event": "config"},
            )
            return False
        self._stamp = stamp
        self._put_in_force(overrides, digest)
        if self.metrics is not None:
            self.metrics.reloads.labels("applied").inc()
        logger.info(
            "overrides file %s applied: %d entries, %d setting(s) changed",
            self.path,
            overrides.entries,
            len(changes),
            extra={"event": "config"},
        )
        return True

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"Cannot read the overrides file '{self.path}': {exc}.") from exc

    def _put_in_force(self, overrides: Overrides, digest: str) -> None:
        self.overrides = overrides
        self._digest = digest
        self.applied_at = self.clock.time()
        self._set_valid(True)

    def _refuse(self, message: str, *, count: bool = True) -> None:
        self.error = message
        if self.metrics is not None:
            self.metrics.valid.set(0)
            if count:
                self.metrics.reloads.labels("rejected").inc()
        log = logger.warning if not count else logger.error
        log(
            "%s%s",
            message,
            "" if not count else "\nThe last good overrides stay in force.",
            extra={"event": "config"},
        )

    def _set_valid(self, valid: bool) -> None:
        if valid:
            self.error = None
        if self.metrics is not None:
            self.metrics.valid.set(1 if valid else 0)


def watch_overrides(
    settings: KeelSettings,
    *,
    clock: Clock,
    actor: str,
    metrics: OverridesMetrics | None = None,
) -> OverridesLayer:
    """The replica's ``OverridesLayer`` over ``overrides_path(settings)``, loaded: a
    ``ConfigError`` naming the problems when the file is not valid. ``actor`` names the
    replica in the audit records of the changes it applies.

    >>> layer = watch_overrides(settings, clock=SystemClock(), actor="replica:replica-1")
    """
    path = overrides_path(settings)
    layer = OverridesLayer(
        path=path,
        settings=settings,
        clock=clock,
        accepted=AcceptedOverrides(
            state_dir=state_dir_for(settings.data_dir, path), source=path, actor=actor
        ),
        metrics=metrics,
    )
    layer.load()
    return layer


def _parse_text(text: bytes, *, path: Path, settings: KeelSettings | None) -> Overrides:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"The overrides file '{path}' is not valid YAML: {exc}") from exc
    return parse_overrides(data, origin=str(path), settings=settings)


def _name_problem(section: str, name: str) -> str | None:
    if not name.strip():
        return "an entry needs a name"
    if section == "users" and "/" in name:
        organization, _, user = name.partition("/")
        if not organization or not user:
            return (
                "a user entry is 'organization/user' (that user of that organization) or "
                "'user' (that user outside any organization)"
            )
    return None


def _user_key(name: str) -> tuple[str | None, str]:
    """(organization, user) of a user entry: ``acme/bob`` or ``alice`` (no organization)."""
    organization, slash, user = name.partition("/")
    return (organization, user) if slash else (None, name)


def _digest(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()
