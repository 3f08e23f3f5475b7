"""API keys: made by ``keel keys create``, stored as digests, checked at the front door.

A key looks like ``ak_<id>_<secret>``: ``id`` is 8 characters that name it in
lists and logs, ``secret`` 32 random bytes (urlsafe base64). The keys file holds
only each key's SHA-256: a key has 256 random bits, so a fast hash cannot be
reversed by guessing, and a slow password hash would only add latency to every
request (it protects low-entropy passwords, which these are not).

The keys file (YAML, mode 0600)::

    keys:
      - name: ci                   # unique
        id: 3kq9x2mz
        digest: sha256:<hex>
        organization: acme
        user: null                 # null: acts for any user of the organization
        scopes: [chat]
        created_at: 2026-01-01T00:00:00Z
        expires_at: null
        revoked_at: null

``ApiKeys`` reads it (again whenever it changes, so a revoke applies without a
restart); ``ApiKeyStore`` changes it under a file lock with an atomic rename.

>>> store = ApiKeyStore(Path(".keel/api_keys.yaml"))
>>> made = store.create(name="ci", organization="acme", scopes=["chat"])
>>> ApiKeys(Path(".keel/api_keys.yaml")).authenticate(made.key).credential
'api_key:ci'
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import string
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentkeel.errors import ConfigError, Unauthorized
from agentkeel.identity.principal import SCOPES, Principal
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.storage.atomic import atomic_write
from agentkeel.web.auth import TokensFile, token_digest, tokens_equal, yaml_error_position

KEY_PREFIX = "ak_"
_ID_ALPHABET = string.ascii_lowercase + string.digits
_ID_CHARS = 8
_SECRET_BYTES = 32
_DIGEST_PREFIX = "sha256:"
_MAX_KEY_CHARS = 128
# About 60,000 keys: a keys file is read whole whenever it changes.
_MAX_KEYS_FILE_BYTES = 16 * 1024 * 1024

WallClock = Callable[[], float]


class ApiKeyRecord(BaseModel):
    """One key as the keys file holds it (its digest, never the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    id: str = Field(min_length=_ID_CHARS, max_length=_ID_CHARS, pattern=r"^[a-z0-9]+$")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    organization: str | None = Field(default=None, min_length=1, max_length=256)
    user: str | None = Field(default=None, min_length=1, max_length=256)
    scopes: tuple[str, ...] = ()
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [scope for scope in value if scope not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; a key may have {list(SCOPES)}")
        return value

    def status(self, now: float) -> str:
        """``active``, ``expired`` or ``revoked`` at ``now`` (epoch seconds)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at.timestamp() <= now:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        return Principal(
            kind="api_key",
            credential=f"api_key:{self.name}",
            user_id=self.user,
            organization=self.organization,
            scopes=frozenset(self.scopes),
        )


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key just made: ``key`` is shown once and never stored."""

    record: ApiKeyRecord
    key: str


def new_key() -> tuple[str, str]:
    """A fresh ``(id, key)``."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_CHARS))
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"


def looks_like_api_key(token: str) -> bool:
    """Whether a bearer token is meant as one of our API keys (by its prefix)."""
    return token.startswith(KEY_PREFIX)


def parse_keys_file(text: str, source: str) -> list[ApiKeyRecord]:
    """The records of a keys file; ``ConfigError`` naming the entry for a bad one."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"The API keys file {source} is not valid YAML ({yaml_error_position(exc)}). "
            "Fix its syntax or restore it from a backup."
        ) from None
    if data is None:
        return []
    entries = data.get("keys") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise ConfigError(
            f"The API keys file {source} must be a mapping with a 'keys' list, as "
            "`keel keys create` writes it."
        )
    records: list[ApiKeyRecord] = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        try:
            record = ApiKeyRecord.model_validate(entry)
        except ValidationError as exc:
            label = entry.get("name") if isinstance(entry, Mapping) else None
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"])
            raise ConfigError(
                f"The API keys file {source}: key '{label or index}' is invalid at "
                f"'{where}': {error['msg']}."
            ) from None
        if record.name in names:
            raise ConfigError(
                f"The API keys file {source} names the key '{record.name}' twice; names are unique."
            )
        names.add(record.name)
        records.append(record)
    return records


def _by_digest(text: str, source: str) -> dict[str, ApiKeyRecord]:
    return {
        record.digest.removeprefix(_DIGEST_PREFIX): record
        for record in parse_keys_file(text, source)
    }


class ApiKeys:
    """Checks API keys against the keys file, reread whenever the file changes.

    >>> keys = ApiKeys(Path(".keel/api_keys.yaml"))
    >>> keys.authenticate("ak_3kq9x2mz_...").organization
    'acme'
    """

    def __init__(self, path: Path, *, clock: WallClock | None = None) -> None:
        self.path = path
        self._clock = clock or time.time
        # The file holds digests only, so it is not recorded as a known secret.
        self._file: TokensFile[ApiKeyRecord] = TokensFile(
            resolver=SecretResolver(max_bytes=_MAX_KEYS_FILE_BYTES),
            name=None,
            file=path,
            parse=_by_digest,
        )

    def records(self) -> list[ApiKeyRecord]:
        return list(self._file.entries().values())

    def authenticate(self, key: str) -> Principal:
        """The principal of an active key; 401 ``key_unknown``, ``key_expired`` or
        ``key_revoked`` otherwise. Messages name the key's id at most, never the key."""
        record = None
        if looks_like_api_key(key) and len(key) <= _MAX_KEY_CHARS:
            digest = token_digest(key)
            found = self._file.entries().get(digest)
            # The dict is keyed by digest; the compare keeps the final check constant-time.
            if found is not None and tokens_equal(found.digest, _DIGEST_PREFIX + digest):
                record = found
        if record is None:
            raise Unauthorized(
                "The API key is not known here. Check that the whole key was sent; "
                "`keel keys list` shows the keys that exist (by name and id).",
                code="key_unknown",
            )
        status = record.status(self._clock())
        if status == "revoked":
            raise Unauthorized(
                f"The API key '{record.name}' (id {record.id}) was revoked. Ask its owner "
                "for a new key (`keel keys create`).",
                code="key_revoked",
            )
        if status == "expired":
            assert record.expires_at is not None
            raise Unauthorized(
                f"The API key '{record.name}' (id {record.id}) expired at "
                f"{_iso(record.expires_at)}. Make a new one (`keel keys create`).",
                code="key_expired",
            )
        return record.principal()


class ApiKeyStore:
    """Changes the keys file: one writer at a time (a lock file beside it), each
    change written to a temporary file (0600) and renamed over the old one.

    >>> store = ApiKeyStore(Path(".keel/api_keys.yaml"))
    >>> made = store.create(name="ci", organization="acme", scopes=["chat"])
    >>> store.revoke("ci").revoked_at is not None
    True
    """

    def __init__(self, path: Path, *, clock: WallClock | None = None) -> None:
        self.path = path
        self._clock = clock or time.time

    def records(self) -> list[ApiKeyRecord]:
        """Every key in the file, in the order made."""
        if not self.path.exists():
            return []
        return self._read()

    def create(
        self,
        *,
        name: str,
        organization: str | None,
        scopes: Sequence[str],
        user: str | None = None,
        expires_at: datetime | None = None,
    ) -> CreatedKey:
        """A new key named ``name``; ``ConfigError`` when that name exists already."""
        key_id, key = new_key()
        now = self._now()
        if expires_at is not None and expires_at <= now:
            raise ConfigError(f"The key '{name}' would expire in the past; give a later time.")
        try:
            record = ApiKeyRecord(
                name=name,
                id=key_id,
                digest=_DIGEST_PREFIX + token_digest(key),
                organization=organization,
                user=user,
                scopes=tuple(dict.fromkeys(scopes)),
                created_at=now,
                expires_at=expires_at,
            )
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            raise ConfigError(
                f"The key '{name}' cannot be made: {error['loc'][0]}: {error['msg']}."
            ) from None
        with self._locked():
            records = self._read() if self.path.exists() else []
            if any(existing.name == name for existing in records):
                raise ConfigError(
                    f"An API key named '{name}' exists already (names are unique). Revoke it "
                    "and pick another name, e.g. "
                    f"'{name}-2'.",
                    code="key_exists",
                )
            self._write([*records, record])
        return CreatedKey(record=record, key=key)

    def revoke(self, name: str) -> ApiKeyRecord:
        """Mark the key ``name`` revoked (idempotent); ``ConfigError`` when unknown."""
        with self._locked():
            records = self._read() if self.path.exists() else []
            for index, record in enumerate(records):
                if record.name == name:
                    if record.revoked_at is not None:
                        return record
                    revoked = ApiKeyRecord.model_validate(
                        {**record.model_dump(), "revoked_at": self._now()}
                    )
                    records[index] = revoked
                    self._write(records)
                    return revoked
        raise ConfigError(
            f"There is no API key named '{name}' in {self.path}; `keel keys list` shows them.",
            code="key_not_found",
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(int(self._clock()), tz=UTC)

    def _read(self) -> list[ApiKeyRecord]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"Cannot read the API keys file {self.path}: {exc}.") from exc
        return parse_keys_file(text, str(self.path))

    def _write(self, records: list[ApiKeyRecord]) -> None:
        body = {"keys": [record.model_dump(mode="json") for record in records]}
        text = yaml.safe_dump(body, sort_keys=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, text.encode("utf-8"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
