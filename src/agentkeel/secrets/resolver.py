"""Where secrets come from: a named file, or a file in a secrets directory.

Plain environment values are never read (they leak into process listings,
crash dumps and child processes). Values are returned as ``SecretStr`` so
they never print by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from agentkeel.errors import SecretError
from agentkeel.secrets.known import KnownSecrets

_MAX_SECRET_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SecretResolver:
    """Resolves a secret from, in order: an explicit file, then ``secrets_dir/<name>``.

    >>> SecretResolver(secrets_dir=Path("/run/secrets")).resolve("openai_api_key")
    """

    secrets_dir: Path | None = None
    known: KnownSecrets | None = None
    """Where every value read is recorded, for output sanitization."""
    max_bytes: int = _MAX_SECRET_BYTES
    """Larger files are refused: a secret is small; a keys file may ask for more."""

    def locate(self, name: str | None, *, file: Path | None = None) -> Path | None:
        """Where ``resolve`` would read the secret: ``file``, else ``secrets_dir/<name>``
        (whether or not it exists yet), else ``None``."""
        if file is not None:
            return file
        if name and self.secrets_dir is not None:
            return self.secrets_dir / name
        return None

    def resolve(
        self, name: str | None, *, file: Path | None = None, required: bool = True
    ) -> SecretStr | None:
        if file is not None:
            return self._known(_read(file, what=f"secret file '{file}'", limit=self.max_bytes))
        if name and self.secrets_dir is not None:
            candidate = self.secrets_dir / name
            if candidate.is_file():
                return self._known(
                    _read(
                        candidate,
                        what=f"secret '{name}' in '{self.secrets_dir}'",
                        limit=self.max_bytes,
                    )
                )
        if required:
            where = f"'{self.secrets_dir / name}'" if (name and self.secrets_dir) else "a file"
            raise SecretError(
                f"Secret '{name or file}' was not found. Put it in {where} or point the "
                "setting's *_file at a file that holds it."
            )
        return None

    def _known(self, value: str) -> SecretStr:
        if self.known is not None:
            self.known.add(value)
        return SecretStr(value)


def _read(path: Path, *, what: str, limit: int) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise SecretError(f"The {what} does not exist.") from exc
    except PermissionError as exc:
        raise SecretError(f"The {what} cannot be read by this process (permissions).") from exc
    if len(raw) > limit:
        raise SecretError(f"The {what} is {len(raw)} bytes; at most {limit} are read.")
    value = raw.decode("utf-8", errors="strict").strip()
    if not value:
        raise SecretError(f"The {what} is empty.")
    return value
