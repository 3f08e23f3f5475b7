"""The audit of overrides changes: one ``overrides.changed`` record per change of the
file, written once per data directory.

Every replica watches the same overrides file; the first that applies a new
content compares it with the document last audited for that file (kept, with
its SHA-256, in ``<data_dir>/overrides/<id>/accepted.json`` under a file lock),
writes one audit record whose ``changes`` list every entry and key that changed
(``entry``, ``key``, ``from``, ``to``; ``null`` for a key added or removed), then
stores the new document; the others find it already recorded. One record is
written whole or not at all, so a change whose record failed is audited again,
once, by the next check. A replica applies a change only after its record is
written. Changes made while no replica ran are audited by the first one that
starts.

>>> accepted = AcceptedOverrides(state_dir=Path(".keel/overrides/3f2a9c"),
...     source=Path(".keel/overrides.yaml"), actor="replica:replica-1")
>>> accepted.record(new.to_json(), digest, previous=old.to_json())
[OverrideChange(entry='users.acme/bob', key='quotas.user_daily_tokens', before=None, after=5000000)]
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentkeel.storage.atomic import atomic_write
from agentkeel.storage.file_lock import exclusive_lock
from agentkeel.telemetry.audit import audit

__all__ = [
    "AUDIT_ACTION",
    "AcceptedOverrides",
    "OverrideChange",
    "override_changes",
    "recorded_overrides",
    "state_dir_for",
]

logger = logging.getLogger("agentkeel.config.overrides")

AUDIT_ACTION = "overrides.changed"

Document = Mapping[str, Mapping[str, Mapping[str, Any]]]
"""``{section: {entry: {live key: JSON value}}}`` (``Overrides.to_json``)."""


@dataclass(frozen=True, slots=True)
class OverrideChange:
    """One key of one entry that a new document changed."""

    entry: str
    """``organizations.<name>`` or ``users.<name>``."""
    key: str
    before: Any
    """The value before; ``None`` when the key was not set."""
    after: Any
    """The value now; ``None`` when the key was removed."""


def override_changes(before: Document, after: Document) -> list[OverrideChange]:
    """Every (entry, key) whose value differs between two documents, in a stable order.

    >>> override_changes({"users": {}}, {"users": {"ana": {"agent.tools": []}}})
    [OverrideChange(entry='users.ana', key='agent.tools', before=None, after=[])]
    """
    changes: list[OverrideChange] = []
    for section in sorted(set(before) | set(after)):
        old_entries, new_entries = before.get(section, {}), after.get(section, {})
        for name in sorted(set(old_entries) | set(new_entries)):
            old, new = old_entries.get(name, {}), new_entries.get(name, {})
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key) or (key in old) != (key in new):
                    changes.append(
                        OverrideChange(f"{section}.{name}", key, old.get(key), new.get(key))
                    )
    return changes


def state_dir_for(data_dir: Path, source: Path) -> Path:
    """Where the document last audited for ``source`` is kept: one directory per file."""
    digest = hashlib.sha256(str(source.absolute()).encode()).hexdigest()[:12]
    return data_dir / "overrides" / digest


def recorded_overrides(state_dir: Path) -> Document | None:
    """The document last audited in ``state_dir`` (the one replicas applied last), or
    ``None`` when there is none or it cannot be read."""
    try:
        state = json.loads((state_dir / "accepted.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    document = state.get("document") if isinstance(state, dict) else None
    return document if isinstance(document, dict) else None


class AcceptedOverrides:
    """The document last audited for one overrides file, shared by the replicas of a
    data directory (see the module doc)."""

    def __init__(self, *, state_dir: Path, source: Path, actor: str) -> None:
        self.state_dir = state_dir
        self.source = source
        self.actor = actor
        """Who applied a change, in the audit record (``replica:<id>``)."""

    def record(
        self, document: Document, digest: str, *, previous: Document
    ) -> list[OverrideChange]:
        """Audit ``document`` (SHA-256 ``digest`` of the file) unless it is the one last
        recorded, and keep it as such; the changes audited. ``previous`` is what this
        replica had in force, the comparison when the shared record cannot be read.
        Raises what ``audit`` raises when the audit file cannot be written."""
        if not any(document.values()) and not self._path.exists():
            return []  # no overrides now and none recorded: nothing to audit or keep
        try:
            with exclusive_lock(self.state_dir / "accepted.lock"):
                return self._record_locked(document, digest, previous)
        except OSError as exc:
            # Only taking the lock raises it: the locked part handles its own.
            return self._unshared(document, digest, previous, exc)

    def _record_locked(
        self, document: Document, digest: str, previous: Document
    ) -> list[OverrideChange]:
        try:
            state = self._read()
        except OSError as exc:
            return self._unshared(document, digest, previous, exc)
        if state is not None and state.get("sha256") == digest:
            return []
        before: Document = state["document"] if state is not None else {}
        changes = override_changes(before, document)
        self._audit(changes, digest=digest, previous_sha256=state.get("sha256") if state else None)
        try:
            self._write(document, digest)
        except OSError as exc:
            logger.warning(
                "cannot record the audited overrides in %s (%s); another replica may "
                "audit this change again",
                self.state_dir,
                exc,
                extra={"event": "config"},
            )
        return changes

    def _unshared(
        self, document: Document, digest: str, previous: Document, exc: OSError
    ) -> list[OverrideChange]:
        """The audit without the shared record: against what this replica had in force."""
        logger.warning(
            "cannot keep the audited overrides in %s (%s); auditing this replica's change only",
            self.state_dir,
            exc,
            extra={"event": "config"},
        )
        changes = override_changes(previous, document)
        self._audit(changes, digest=digest, previous_sha256=None)
        return changes

    def _audit(
        self, changes: list[OverrideChange], *, digest: str, previous_sha256: str | None
    ) -> None:
        """One record for the whole change (none when nothing changed)."""
        if not changes:
            return
        audit(
            AUDIT_ACTION,
            actor=self.actor,
            file=str(self.source),
            changes=[
                {"entry": c.entry, "key": c.key, "from": c.before, "to": c.after} for c in changes
            ],
            sha256=digest,
            previous_sha256=previous_sha256,
        )

    @property
    def _path(self) -> Path:
        return self.state_dir / "accepted.json"

    def _read(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            logger.warning("%s is not valid JSON; starting the overrides audit afresh", self._path)
            return None
        return state if isinstance(state, dict) and "document" in state else None

    def _write(self, document: Document, digest: str) -> None:
        body = {"source": str(self.source), "sha256": digest, "document": document}
        atomic_write(self._path, json.dumps(body, sort_keys=True).encode("utf-8"))
