"""Secrets in HashiCorp Vault (or OpenBao) KV version 2, through hvac: ``VaultSecretSource``.

A secret ``path`` lives at ``<mount>/data/<prefix>/<path>``. Its entry is either
a plain ``{"value": "..."}`` (one active version, generation 1, as an operator
would write it with ``vault kv put``) or the versions a rotation wrote:

    {"versions": [{"value": "...", "generation": 2, "created_at": 1700000000.0,
                   "activated_at": null}, ...]}

Authentication: ``token`` (the token is read from ``token_file``, never a
setting) or ``kubernetes`` (``auth/<auth_mount>/login`` with the pod's
service-account JWT and the role). A 403 re-authenticates once — the token
may have expired or been rotated — before it becomes a ``SecretError``.

hvac is synchronous: code on the event loop reads through ``CachedSecretSource``,
whose ``aread`` runs a miss in a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
from pydantic import SecretStr

from agentkeel.config.secrets import VaultSettings
from agentkeel.errors import ConfigError, SecretError
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.paths import check_path
from agentkeel.secrets.source import Secret, SecretVersion

_T = TypeVar("_T")


class VaultSecretSource:
    """Reads and writes secrets in Vault KV v2 (see the module doc).

    >>> source = VaultSecretSource(settings=VaultSettings(url="https://vault:8200",
    ...     auth="kubernetes", role="agentkeel"), known=KnownSecrets())
    >>> source.read("orgs/acme/openai")
    """

    kind = "vault"

    def __init__(self, *, settings: VaultSettings, known: KnownSecrets | None = None) -> None:
        if settings.auth == "token" and settings.token_file is None:
            raise ConfigError(
                "secrets.vault.auth is 'token' but secrets.vault.token_file is unset; point it "
                "at the file that holds the Vault token (or use auth: kubernetes)."
            )
        if settings.auth == "kubernetes" and not settings.role:
            raise ConfigError(
                "secrets.vault.auth is 'kubernetes' but secrets.vault.role is unset; set it to "
                "the Vault role bound to this service account."
            )
        self.settings = settings
        self._known = known
        self._lock = threading.Lock()
        self._client: hvac.Client | None = None

    def where(self, path: str) -> str:
        return f"Vault {self.settings.url} at '{self.settings.mount}/{self._full(path)}'"

    def read(self, path: str) -> Secret | None:
        full = self._full(path)
        try:
            response = self._call(
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path=full, mount_point=self.settings.mount, raise_on_deleted_version=True
                ),
                path,
            )
        except hvac.exceptions.InvalidPath:
            return None
        data = response.get("data") or {}
        versions = self._versions(path, data.get("data") or {}, data.get("metadata") or {})
        for version in versions:
            self._remember(version.value.get_secret_value())
        return Secret(path=path, versions=versions)

    def write(self, path: str, versions: Sequence[SecretVersion]) -> None:
        secret = Secret(path=path, versions=tuple(versions))
        entry = {
            "versions": [
                {
                    "value": v.value.get_secret_value(),
                    "generation": v.generation,
                    "created_at": v.created_at,
                    "activated_at": v.activated_at,
                }
                for v in secret.versions
            ]
        }
        full = self._full(path)
        self._call(
            lambda c: c.secrets.kv.v2.create_or_update_secret(
                path=full, secret=entry, mount_point=self.settings.mount
            ),
            path,
        )

    def delete(self, path: str) -> None:
        full = self._full(path)
        try:
            self._call(
                lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions(
                    path=full, mount_point=self.settings.mount
                ),
                path,
            )
        except hvac.exceptions.InvalidPath:
            return

    def paths(self, prefix: str = "") -> list[str]:
        """Every secret path under ``prefix`` (``""``: all), sorted."""
        found: list[str] = []
        pending = [check_path(prefix.rstrip("/")) if prefix else ""]
        while pending:
            folder = pending.pop()
            full = self._full(folder) if folder else self.settings.prefix.strip("/")
            try:
                response = self._call(self._lister(full), folder or "/")
            except hvac.exceptions.InvalidPath:
                if folder and self.read(folder) is not None:
                    found.append(folder)
                continue
            for key in (response.get("data") or {}).get("keys") or []:
                child = f"{folder}/{key}" if folder else str(key)
                if child.endswith("/"):
                    pending.append(child.rstrip("/"))
                else:
                    found.append(child)
        return sorted(found)

    def _lister(self, full: str) -> Callable[[hvac.Client], Any]:
        return lambda c: c.secrets.kv.v2.list_secrets(path=full, mount_point=self.settings.mount)

    def _full(self, path: str) -> str:
        if path:
            check_path(path)
        prefix = self.settings.prefix.strip("/")
        return f"{prefix}/{path}" if prefix else path

    def _versions(
        self, path: str, data: dict[str, Any], metadata: dict[str, Any]
    ) -> tuple[SecretVersion, ...]:
        try:
            if "versions" in data:
                versions = [
                    SecretVersion(
                        value=SecretStr(str(v["value"])),
                        generation=int(v["generation"]),
                        created_at=float(v["created_at"]),
                        activated_at=(
                            None if v.get("activated_at") is None else float(v["activated_at"])
                        ),
                    )
                    for v in data["versions"]
                ]
                versions.sort(key=lambda v: v.generation, reverse=True)
                if versions:
                    return tuple(versions)
            elif isinstance(data.get("value"), str) and data["value"].strip():
                created = _timestamp(metadata.get("created_time"))
                return (
                    SecretVersion(
                        value=SecretStr(data["value"].strip()),
                        generation=1,
                        created_at=created,
                        activated_at=created,
                    ),
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise SecretError(
                f"The Vault entry for the secret '{path}' ({self.where(path)}) has a malformed "
                f"version ({type(exc).__name__}: {exc}); rewrite it with `keel secrets put`."
            ) from exc
        raise SecretError(
            f"The Vault entry for the secret '{path}' ({self.where(path)}) has neither a "
            "'value' nor 'versions' key; write it as `vault kv put ... value=@file`."
        )

    def _call(self, operation: Callable[[hvac.Client], _T], path: str) -> _T:
        """``operation`` with a logged-in client; one fresh login after a 403."""
        for attempt in (1, 2):
            client = self._authenticated(fresh=attempt == 2)
            try:
                return operation(client)
            except hvac.exceptions.Forbidden as exc:
                if attempt == 1:
                    continue
                raise SecretError(
                    f"Vault refused access to the secret '{path}' ({self.where(path)}) even "
                    f"after a fresh login ({self._auth_hint()}); check the policy of the "
                    "token or role."
                ) from exc
            except hvac.exceptions.InvalidPath:
                raise
            except hvac.exceptions.VaultError as exc:
                raise SecretError(
                    f"Vault failed on the secret '{path}' ({self.where(path)}): "
                    f"{type(exc).__name__}; is Vault unsealed and healthy?"
                ) from exc
            except OSError as exc:  # requests' connection errors are OSErrors
                raise SecretError(
                    f"Vault cannot be reached at {self.settings.url} ({type(exc).__name__}) "
                    f"for the secret '{path}'; is it running and is secrets.vault.url right?"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _authenticated(self, *, fresh: bool) -> hvac.Client:
        with self._lock:
            if self._client is not None and not fresh:
                return self._client
            s = self.settings
            client = hvac.Client(
                url=s.url,
                timeout=s.timeout_s,
                verify=str(s.ca_file) if s.ca_file is not None else True,
                namespace=s.namespace,
            )
            if s.auth == "token":
                assert s.token_file is not None
                client.token = _read_file(s.token_file, what="Vault token file")
            else:
                jwt = _read_file(s.jwt_file, what="service-account token file")
                try:
                    client.auth.kubernetes.login(
                        role=s.role, jwt=jwt, use_token=True, mount_point=s.auth_mount
                    )
                except (hvac.exceptions.VaultError, OSError) as exc:
                    raise SecretError(
                        f"Vault Kubernetes login at {s.url} (auth/{s.auth_mount}, role "
                        f"'{s.role}') failed: {type(exc).__name__}; check the role's bound "
                        "service accounts and namespaces."
                    ) from exc
            self._client = client
            return client

    def _auth_hint(self) -> str:
        s = self.settings
        if s.auth == "token":
            return f"token from '{s.token_file}'"
        return f"kubernetes role '{s.role}'"

    def _remember(self, value: str) -> None:
        if self._known is not None:
            self._known.add(value)

    def __repr__(self) -> str:
        return f"VaultSecretSource(url={self.settings.url!r}, mount={self.settings.mount!r})"


def _read_file(path: Path, *, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(f"The {what} '{path}' cannot be read ({type(exc).__name__}).") from exc
    if not value:
        raise SecretError(f"The {what} '{path}' is empty.")
    return value


def _timestamp(rfc3339: object) -> float:
    """Vault's ``created_time`` (RFC 3339, nanoseconds) as epoch seconds; 0 when absent."""
    if not isinstance(rfc3339, str) or not rfc3339:
        return 0.0
    text = rfc3339.replace("Z", "+00:00")
    if "." in text:  # Python parses at most microseconds.
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
