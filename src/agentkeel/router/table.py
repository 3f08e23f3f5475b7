"""The routing table as it is stored and changed: versions, weights, replicas, stable.

A ``TableDoc`` is plain data, kept as JSON in the pin store next to the pins, so
a restarted router and routers sharing Redis read the same one. Every change is
a pure function from one document to the next (``put_version``, ``set_weights``,
...), applied with a compare-and-set on ``revision``: two routers changing it at
once never lose an update. What is *not* here: readiness and requests in flight,
which each router observes for itself (``routing.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from agentkeel.config.router import Backend, check_replica_url
from agentkeel.deploy.types import SessionPolicy
from agentkeel.errors import Conflict, InvalidRequest, NotFound

__all__ = [
    "POLICIES",
    "TableDoc",
    "VersionSpec",
    "add_replica",
    "drain_replica",
    "put_version",
    "remove_replica",
    "remove_version",
    "retire_version",
    "seed_table",
    "set_weights",
]

POLICIES: tuple[SessionPolicy, ...] = ("pinned", "move-at-turn")
MAX_WEIGHT = 1_000_000


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """One version: share of new sessions, session policy, retired or not, replica URLs."""

    weight: int = 0
    policy: SessionPolicy = "pinned"
    retired: bool = False
    replicas: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TableDoc:
    """The whole routing table; ``revision`` grows by one with every change."""

    revision: int = 0
    stable: str | None = None
    versions: Mapping[str, VersionSpec] = field(default_factory=dict)
    draining: frozenset[str] = frozenset()

    def version_of(self, url: str) -> str | None:
        """The version whose replicas include ``url``."""
        for name, spec in self.versions.items():
            if url in spec.replicas:
                return name
        return None

    def to_json(self) -> str:
        return json.dumps(
            {
                "revision": self.revision,
                "stable": self.stable,
                "versions": {
                    name: {
                        "weight": spec.weight,
                        "policy": spec.policy,
                        "retired": spec.retired,
                        "replicas": list(spec.replicas),
                    }
                    for name, spec in self.versions.items()
                },
                "draining": sorted(self.draining),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> TableDoc:
        data: Any = json.loads(text)
        versions = {
            str(name): VersionSpec(
                weight=int(spec.get("weight", 0)),
                policy=_policy(spec.get("policy", "pinned")),
                retired=bool(spec.get("retired", False)),
                replicas=tuple(str(url) for url in spec.get("replicas", ())),
            )
            for name, spec in dict(data.get("versions", {})).items()
        }
        stable = data.get("stable")
        return cls(
            revision=int(data.get("revision", 0)),
            stable=str(stable) if stable is not None else None,
            versions=versions,
            draining=frozenset(str(url) for url in data.get("draining", ())),
        )


def _policy(value: object) -> SessionPolicy:
    for policy in POLICIES:
        if value == policy:
            return policy
    raise InvalidRequest(
        f"policy {value!r} is not one of {', '.join(POLICIES)}", code="invalid_policy"
    )


def seed_table(backends: Iterable[Backend]) -> TableDoc:
    """The first table: the versions of ``backends`` in order, the first one stable with
    weight 100, the others weight 0."""
    versions: dict[str, VersionSpec] = {}
    for backend in backends:
        spec = versions.get(backend.version)
        if spec is None:
            weight = 100 if not versions else 0
            spec = VersionSpec(weight=weight)
        if backend.url not in spec.replicas:
            spec = replace(spec, replicas=(*spec.replicas, backend.url))
        versions[backend.version] = spec
    stable = next(iter(versions), None)
    return TableDoc(revision=1, stable=stable, versions=versions)


def _next(doc: TableDoc, **changes: Any) -> TableDoc:
    return replace(doc, revision=doc.revision + 1, **changes)


def _known(doc: TableDoc, version: str) -> VersionSpec:
    spec = doc.versions.get(version)
    if spec is None:
        known = ", ".join(doc.versions) or "none"
        raise NotFound(
            f"version {version!r} is not in the routing table (versions: {known}); add it "
            "with PUT /admin/versions/{version}",
            code="unknown_version",
        )
    return spec


def _check_version_name(version: str) -> None:
    if not version or len(version) > 64 or not version.isprintable() or "/" in version:
        raise InvalidRequest(
            f"version name {version!r} must be 1 to 64 printable characters without '/'",
            code="invalid_version",
        )


def _check_weight(version: str, weight: object) -> int:
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
        raise InvalidRequest(
            f"weight of {version!r} is {weight!r}; a weight is a whole number from 0 to "
            f"{MAX_WEIGHT} (relative to the other versions' weights)",
            code="invalid_weight",
        )
    return weight


def _check_url(url: str) -> str:
    try:
        return check_replica_url(url)
    except ValueError as exc:
        raise InvalidRequest(str(exc), code="invalid_replica_url") from None


def _check_unowned(doc: TableDoc, url: str, version: str) -> None:
    owner = doc.version_of(url)
    if owner is not None and owner != version:
        raise Conflict(
            f"replica {url} already serves version {owner!r}; remove it there first "
            "(POST /admin/replicas/remove)",
            code="replica_in_other_version",
        )


def put_version(
    doc: TableDoc,
    version: str,
    *,
    replicas: Iterable[str] = (),
    weight: int = 0,
    policy: SessionPolicy = "pinned",
) -> TableDoc:
    """Create or update ``version``: its weight and policy are set, replicas added (never
    removed). A new version is not retired; the first version becomes the stable one."""
    _check_version_name(version)
    weight = _check_weight(version, weight)
    policy = _policy(policy)
    urls = [_check_url(url) for url in replicas]
    for url in urls:
        _check_unowned(doc, url, version)
    spec = doc.versions.get(version, VersionSpec())
    added = tuple(url for url in dict.fromkeys(urls) if url not in spec.replicas)
    spec = replace(spec, weight=weight, policy=policy, replicas=(*spec.replicas, *added))
    versions = {**doc.versions, version: spec}
    return _next(
        doc,
        versions=versions,
        stable=doc.stable if doc.stable is not None else version,
        draining=doc.draining - set(added),
    )


def set_weights(
    doc: TableDoc, weights: Mapping[str, int], *, stable: str | None = None
) -> TableDoc:
    """Set several weights in one change and, optionally, the stable version.

    Versions not named keep their weight. A weight above 0 brings a retired version
    back (a switch-back puts new sessions on it again).
    """
    if not weights and stable is None:
        raise InvalidRequest("give at least one weight or a stable version", code="no_change")
    versions = dict(doc.versions)
    for version, weight in weights.items():
        spec = _known(doc, version)
        weight = _check_weight(version, weight)
        versions[version] = replace(spec, weight=weight, retired=spec.retired and weight == 0)
    if stable is not None:
        _known(doc, stable)
    return _next(doc, versions=versions, stable=stable if stable is not None else doc.stable)


def retire_version(doc: TableDoc, version: str, *, policy: SessionPolicy | None = None) -> TableDoc:
    """No new sessions for ``version`` (weight 0); ``policy`` replaces its session policy.
    The stable version cannot be retired: make another one stable first."""
    spec = _known(doc, version)
    if version == doc.stable:
        raise Conflict(
            f"version {version!r} is the stable version; make another version stable "
            '(POST /admin/weights with "stable") before retiring it',
            code="stable_version",
        )
    new_policy = _policy(policy) if policy is not None else spec.policy
    versions = {**doc.versions, version: replace(spec, retired=True, weight=0, policy=new_policy)}
    return _next(doc, versions=versions)


def remove_version(doc: TableDoc, version: str) -> TableDoc:
    """Drop ``version`` and its replicas (the caller drops its pins)."""
    spec = _known(doc, version)
    if version == doc.stable:
        raise Conflict(
            f"version {version!r} is the stable version and cannot be removed; make another "
            "version stable first",
            code="stable_version",
        )
    versions = {name: s for name, s in doc.versions.items() if name != version}
    return _next(doc, versions=versions, draining=doc.draining - set(spec.replicas))


def add_replica(doc: TableDoc, version: str, url: str) -> TableDoc:
    """Add ``url`` to ``version``; a drained URL added again is a new replica (not draining)."""
    spec = _known(doc, version)
    url = _check_url(url)
    _check_unowned(doc, url, version)
    replicas = spec.replicas if url in spec.replicas else (*spec.replicas, url)
    versions = {**doc.versions, version: replace(spec, replicas=replicas)}
    return _next(doc, versions=versions, draining=doc.draining - {url})


def _owner(doc: TableDoc, url: str) -> str:
    url = url.rstrip("/")
    owner = doc.version_of(url)
    if owner is None:
        raise NotFound(f"replica {url} is not in the routing table", code="unknown_replica")
    return owner


def remove_replica(doc: TableDoc, url: str) -> TableDoc:
    """Take ``url`` out of its version."""
    url = url.rstrip("/")
    owner = _owner(doc, url)
    spec = doc.versions[owner]
    replicas = tuple(u for u in spec.replicas if u != url)
    versions = {**doc.versions, owner: replace(spec, replicas=replicas)}
    return _next(doc, versions=versions, draining=doc.draining - {url})


def drain_replica(doc: TableDoc, url: str) -> TableDoc:
    """Send nothing new to ``url`` (what is in flight finishes)."""
    url = url.rstrip("/")
    _owner(doc, url)
    return _next(doc, draining=doc.draining | {url})
