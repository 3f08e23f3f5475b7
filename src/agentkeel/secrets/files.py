"""Secrets in files under one root directory: ``FileSecretSource``.

Layout, so that anything reading the plain file keeps working:

- ``root/<path>`` always holds the **current** value (``Secret.current``). A plain
  file with nothing next to it is one active version, generation 1, created and
  activated at its modification time: a mounted secrets directory works as it is.
- ``root/<dir>/.<name>.versions.json`` (the sidecar, only once something wrote
  versions) holds the metadata of every version (generation, created_at,
  activated_at) and the values of the versions that are not current. It also
  records a SHA-256 fingerprint of the current value: when the plain file was
  replaced by hand (or by a secret mount), the plain file wins and the sidecar is
  ignored, with the new value counted as the next generation.

Writes are atomic (a temporary file, fsync, rename), files are mode 0600 and
directories 0700. The plain file is written before the sidecar: a crash in
between leaves the new current value in place, never a half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from agentkeel.errors import SecretError
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.paths import check_path
from agentkeel.secrets.source import Secret, SecretVersion
from agentkeel.storage.atomic import atomic_write

_MAX_SECRET_BYTES = 64 * 1024
_SIDECAR_SUFFIX = ".versions.json"


class FileSecretSource:
    """Reads and writes secrets as files under ``root`` (see the module doc).

    >>> source = FileSecretSource(root=Path("/run/secrets"), known=KnownSecrets())
    >>> source.read("openai_api_key").current.generation
    1
    """

    kind = "files"

    def __init__(self, *, root: Path, known: KnownSecrets | None = None) -> None:
        self.root = root
        self._known = known

    def where(self, path: str) -> str:
        return f"'{self.root / path}'"

    def read(self, path: str) -> Secret | None:
        plain = self._file(path)
        try:
            stat = plain.stat()
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise SecretError(
                f"The secret file '{plain}' cannot be read by this process (permissions)."
            ) from exc
        if not plain.is_file():
            return None
        current = _read_value(plain)
        self._remember(current)
        versions = self._sidecar_versions(path, current)
        if versions is None:
            versions = (
                SecretVersion(
                    value=SecretStr(current),
                    generation=1,
                    created_at=stat.st_mtime,
                    activated_at=stat.st_mtime,
                ),
            )
        return Secret(path=path, versions=versions)

    def write(self, path: str, versions: Sequence[SecretVersion]) -> None:
        secret = Secret(path=path, versions=tuple(versions))
        current = secret.current
        plain = self._file(path)
        _ensure_dir(plain.parent)
        value = current.value.get_secret_value()
        # The plain file first: a crash before the sidecar leaves the new value current.
        if not plain.is_file() or _read_value(plain) != value:
            atomic_write(plain, value.encode() + b"\n")
        entries: list[dict[str, Any]] = []
        for version in secret.versions:
            entry: dict[str, Any] = {
                "generation": version.generation,
                "created_at": version.created_at,
                "activated_at": version.activated_at,
            }
            if version is current:
                entry["current"] = True
            else:
                entry["value"] = version.value.get_secret_value()
            entries.append(entry)
        document = {"fingerprint": _fingerprint(value), "versions": entries}
        atomic_write(self._sidecar(path), json.dumps(document, indent=2).encode())
        for version in secret.versions:
            self._remember(version.value.get_secret_value())

    def delete(self, path: str) -> None:
        for file in (self._sidecar(path), self._file(path)):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()

    def paths(self, prefix: str = "") -> list[str]:
        """Every secret path under ``prefix`` (``""``: all), sorted; hidden entries
        (sidecars, a Kubernetes mount's ``..data``) are skipped."""
        base = self.root / check_path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        found: list[str] = []
        if not base.is_dir():
            return found
        for directory, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    found.append(Path(directory, name).relative_to(self.root).as_posix())
        return sorted(found)

    def _file(self, path: str) -> Path:
        return self.root / check_path(path)

    def _sidecar(self, path: str) -> Path:
        plain = self._file(path)
        return plain.with_name(f".{plain.name}{_SIDECAR_SUFFIX}")

    def _sidecar_versions(self, path: str, current: str) -> tuple[SecretVersion, ...] | None:
        """The versions the sidecar records, or ``None`` when there is no sidecar or the
        plain file no longer holds the value it says is current."""
        sidecar = self._sidecar(path)
        try:
            document = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SecretError(
                f"The version file '{sidecar}' of the secret '{path}' cannot be read ({exc}); "
                "fix or delete it (the plain file then counts as the only version)."
            ) from exc
        try:
            entries = document["versions"]
            fingerprint = document["fingerprint"]
            if fingerprint != _fingerprint(current):
                # Replaced by hand or by a mount: the plain file is the truth.
                newest = max(int(e["generation"]) for e in entries) + 1
                mtime = self._file(path).stat().st_mtime
                return (
                    SecretVersion(
                        value=SecretStr(current),
                        generation=newest,
                        created_at=mtime,
                        activated_at=mtime,
                    ),
                )
            versions = []
            for entry in entries:
                value = current if entry.get("current") else str(entry["value"])
                self._remember(value)
                activated = entry.get("activated_at")
                versions.append(
                    SecretVersion(
                        value=SecretStr(value),
                        generation=int(entry["generation"]),
                        created_at=float(entry["created_at"]),
                        activated_at=None if activated is None else float(activated),
                    )
                )
        except (KeyError, TypeError, ValueError) as exc:
            raise SecretError(
                f"The version file '{sidecar}' of the secret '{path}' is malformed "
                f"(missing or bad {exc}); fix or delete it."
            ) from exc
        versions.sort(key=lambda v: v.generation, reverse=True)
        return tuple(versions) if versions else None

    def _remember(self, value: str) -> None:
        if self._known is not None:
            self._known.add(value)

    def __repr__(self) -> str:
        return f"FileSecretSource(root={str(self.root)!r})"


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _read_value(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except PermissionError as exc:
        raise SecretError(
            f"The secret file '{path}' cannot be read by this process (permissions)."
        ) from exc
    if len(raw) > _MAX_SECRET_BYTES:
        raise SecretError(f"The secret file '{path}' is {len(raw)} bytes; at most 64 KiB.")
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise SecretError(f"The secret file '{path}' is not UTF-8 text.") from exc
    if not value:
        raise SecretError(f"The secret file '{path}' is empty; put the value in it.")
    return value


def _ensure_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
