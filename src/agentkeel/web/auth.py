"""Bearer tokens, the same way in every service: the header, admin tokens, tokens files.

- ``bearer_token(header)``: the token of ``Authorization: Bearer <token>``, or ``None``.
- ``WatchedSecret``: a secret file read through the ``SecretResolver`` and read
  again only when it changes, so rotating a token needs no restart and a
  request costs a ``stat``, not a read.
- ``AdminToken``: one service's admin token. ``check(header)`` answers 401
  without a bearer token (naming the header), 403 ``admin_disabled`` when none
  is configured (naming where to put it), 403 for a wrong token. It accepts
  every version of the token (both during a rotation's overlap), read through a
  secret source: the one passed in, else the token file's own directory.
- ``TokensFile``: a YAML/JSON file mapping tokens to grants, looked up by the
  token's SHA-256 so a lookup takes the same time whatever the token.

Tokens are compared in constant time and never appear in a message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from agentkeel.errors import ConfigError, Forbidden, SecretError, Unauthorized
from agentkeel.secrets.files import FileSecretSource
from agentkeel.secrets.paths import check_path
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.secrets.source import Secret, SecretSource, SecretVersion

logger = logging.getLogger("agentkeel.web.auth")

G = TypeVar("G", bound=BaseModel)
T = TypeVar("T")

MIN_TOKEN_CHARS = 16


def request_source(request: Any) -> str | None:
    """The caller's remote address for the audit trail ("from where"), when known."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None) if client is not None else None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; ``None`` for any other."""
    scheme, _, value = (authorization or "").partition(" ")
    token = value.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(given.encode(), expected.encode())


def token_digest(token: str) -> str:
    """The SHA-256 (hex) under which tokens files index a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def env_name(setting: str) -> str:
    """The environment variable of a dotted setting: ``server.admin_token_file`` ->
    ``KEEL_SERVER__ADMIN_TOKEN_FILE``."""
    return "KEEL_" + setting.upper().replace(".", "__")


_Stamp = tuple[int, int, int]


class WatchedSecret:
    """A secret in ``file`` (or ``secrets_dir/<name>``), reread when its file changes.

    >>> token = WatchedSecret(resolver=SecretResolver(secrets_dir=Path("/run/secrets")),
    ...     name="admin_token", file=None)
    >>> token.read()  # None while the file does not exist
    """

    def __init__(self, *, resolver: SecretResolver, name: str | None, file: Path | None) -> None:
        self._resolver = resolver
        self.path = resolver.locate(name, file=file)
        self._value: SecretStr | None = None
        self._stamp: _Stamp | None = None

    def read(self) -> SecretStr | None:
        """The secret, or ``None`` when its file does not exist. Raises ``SecretError``
        when it exists but cannot be read or is empty."""
        path = self.path
        stamp = _stamp(path)
        if stamp is None or path is None:
            self._value, self._stamp = None, None
            return None
        if stamp != self._stamp:
            self._value = self._resolver.resolve(None, file=path)
            self._stamp = stamp
        return self._value


class BearerTokenFile:
    """The token a client sends, kept in a file; read on first use and again after the
    file changes (a rotated token applies without a restart).

    >>> token = BearerTokenFile(Path(".keel/admin_token"))
    >>> headers = {"Authorization": f"Bearer {token.value()}"}
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._secret = WatchedSecret(resolver=SecretResolver(), name=None, file=self.path)

    def value(self) -> str:
        """The token; ``SecretError`` when the file is missing, empty or unreadable."""
        secret = self._secret.read()
        if secret is None:
            raise SecretError(
                f"the token file {self.path} does not exist; pass a file that holds the token."
            )
        return secret.get_secret_value()


class AdminToken:
    """The admin bearer token of one service, checked the same way everywhere.

    ``setting`` is the dotted name of the setting that points at the file (e.g.
    ``server.admin_token_file``); messages name it and its environment variable.
    Every version of the token is accepted (a rotation's overlap): read from
    ``source`` at ``name`` when a source is given, else from the token file
    (``file``, or ``secrets_dir/<name>``) with the versions kept beside it.

    >>> admin = AdminToken(resolver=secrets, name="admin_token", file=None,
    ...     setting="server.admin_token_file", service="agent server")
    >>> admin.check(request.headers.get("authorization"))
    """

    def __init__(
        self,
        *,
        resolver: SecretResolver,
        name: str | None,
        file: Path | None,
        setting: str,
        service: str,
        source: SecretSource | None = None,
    ) -> None:
        self._secret = WatchedSecret(resolver=resolver, name=name, file=file)
        self.setting = setting
        self.service = service
        # A file named in the settings wins over the source, as it does for the plain read.
        self._source, self._source_path = _versions_source(
            source if file is None else None,
            name=name,
            path=self._secret.path,
            resolver=resolver,
        )
        self._cached: tuple[tuple[_Stamp | None, _Stamp | None], Secret | None] | None = None

    @property
    def source(self) -> tuple[str, SecretSource] | None:
        """The path and source the token's versions are read from (``/admin/secrets``)."""
        if self._source is None or self._source_path is None:
            return None
        return self._source_path, self._source

    def configured(self) -> SecretStr | None:
        """The token, or ``None`` when none is configured or its file is unusable."""
        try:
            secret = self._versions()
        except SecretError:
            return None
        return None if secret is None else secret.current.value

    def matches(self, token: str) -> bool:
        """Whether ``token`` is a version of the admin token (false while none is configured)."""
        try:
            secret = self._versions()
        except SecretError:
            return False
        return secret is not None and secret.accepts(token) is not None

    def check(self, authorization: str | None) -> None:
        """Raise unless ``authorization`` carries the admin token (see the module doc)."""
        try:
            secret = self._versions()
            problem = ""
        except SecretError as exc:
            secret, problem = None, f" ({exc.message})"
        if secret is None:
            path = self._secret.path
            where = f"'{path}'" if path is not None else "a file"
            raise Forbidden(
                f"Admin endpoints of the {self.service} are disabled because no admin token is "
                f"configured{problem}. Put a token in {where} or set {self.setting} "
                f"({env_name(self.setting)}).",
                code="admin_disabled",
            )
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized(
                "This admin endpoint needs the header 'Authorization: Bearer <admin token>'. "
                f"The token is the content of the {self.service}'s admin token file "
                f"({self.setting})."
            )
        if secret.accepts(token) is None:
            raise Forbidden(
                f"The admin token is not valid for this {self.service}. Check the token file "
                f"({self.setting})."
            )

    def _versions(self) -> Secret | None:
        source, path = self._source, self._source_path
        if isinstance(source, FileSecretSource) and path is not None:
            # Checked on every request of some services: reread only when a file changed.
            plain = self._secret.path
            stamps = (_stamp(plain), _stamp(_sidecar_of(plain)))
            if self._cached is None or self._cached[0] != stamps:
                self._cached = (stamps, source.read(path))
            return self._cached[1]
        if source is not None and path is not None:
            return source.read(path)
        value = self._secret.read()
        if value is None:
            return None
        return Secret(
            path=str(self._secret.path),
            versions=(SecretVersion(value=value, generation=1, created_at=0.0, activated_at=0.0),),
        )


def _versions_source(
    source: SecretSource | None,
    *,
    name: str | None,
    path: Path | None,
    resolver: SecretResolver,
) -> tuple[SecretSource | None, str | None]:
    """Where the token's versions are read: a secrets manager ``source`` at ``name``,
    else the token file's directory at its name (read when a file changes, not on a
    cache's schedule); ``(None, None)`` for a file name no source can hold (then the
    plain file alone is read, one version)."""
    if source is not None and name and source.kind != "files":
        return source, name
    if path is None:
        return None, None
    try:
        check_path(path.name)
    except SecretError:
        return None, None
    return FileSecretSource(root=path.parent, known=resolver.known), path.name


def parse_token_grants(
    text: str, *, source: str, what: str, grant: type[G], shape: str
) -> dict[str, G]:
    """Grants by SHA-256 of their token, from a tokens file's text.

    ``{tokens: {<token>: <grant>}}`` or the bare mapping; each token is at least
    16 characters. ``what`` names the file in errors (``memory tokens file``) and
    ``shape`` shows a grant (``{read: [...], write: [...]}``).
    """
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{what} {source} is not valid YAML/JSON ({yaml_error_position(exc)}). Fix its syntax."
        ) from None
    if isinstance(data, Mapping) and set(data) == {"tokens"}:
        data = data["tokens"]
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{what} {source} must map each token to {shape}.")
    out: dict[str, G] = {}
    for index, (token, grant_data) in enumerate(data.items()):
        if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"{what} {source}: entry {index} has a token shorter than {MIN_TOKEN_CHARS} "
                "characters; use long random tokens (e.g. `openssl rand -hex 24`)."
            )
        try:
            out[token_digest(token)] = grant.model_validate(grant_data or {})
        except ValidationError as exc:
            label = grant_data.get("name") if isinstance(grant_data, Mapping) else None
            raise ConfigError(
                f"{what} {source}: the grant of token '{label or index}' is invalid: "
                f"{exc.errors(include_url=False)[0]['msg']}. A grant looks like {shape}."
            ) from exc
    return out


def yaml_error_position(exc: yaml.YAMLError) -> str:
    """Where and what a YAML error is, without the quoted lines PyYAML adds: in a
    tokens file those lines are tokens."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "a syntax error"
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


class TokensFile(Generic[T]):
    """A tokens file, parsed again whenever it changes; entries looked up by token digest.

    ``parse`` turns the file's text into entries keyed by ``token_digest``.
    """

    def __init__(
        self,
        *,
        resolver: SecretResolver,
        name: str | None,
        file: Path | None,
        parse: Callable[[str, str], Mapping[str, T]],
    ) -> None:
        self._secret = WatchedSecret(resolver=resolver, name=name, file=file)
        self._parse = parse
        self._entries: Mapping[str, T] = {}
        self._parsed_from: SecretStr | None = None

    @property
    def path(self) -> Path | None:
        return self._secret.path

    def entries(self) -> Mapping[str, T]:
        """Every entry; empty while the file does not exist. Raises ``ConfigError`` for a
        file that does not parse and ``SecretError`` for one that cannot be read."""
        value = self._secret.read()
        if value is None:
            self._entries, self._parsed_from = {}, None
        elif value is not self._parsed_from:
            try:
                self._entries = self._parse(value.get_secret_value(), str(self.path))
            except ConfigError as exc:
                if self._parsed_from is None:
                    raise
                # A bad edit while serving: keep the last good entries, say so once.
                logger.error("%s; still using the tokens it held before this change", exc.message)
            self._parsed_from = value
        return self._entries

    def lookup(self, token: str) -> T | None:
        return self.entries().get(token_digest(token))


def _sidecar_of(plain: Path | None) -> Path | None:
    """Where ``FileSecretSource`` keeps the other versions of ``plain``."""
    return None if plain is None else plain.with_name(f".{plain.name}.versions.json")


def _stamp(path: Path | None) -> _Stamp | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretError(f"cannot read the secret file {path}: {exc}") from exc
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
