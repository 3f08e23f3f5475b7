"""Layered configuration with provenance.

The fixed layers, lowest first: built-in defaults (``default``) < ``keel.yaml``
(``file``: ``--config`` or ``KEEL_CONFIG``) < the environment's overlay file
(``overlay``: ``keel.NAME.yaml`` beside the base file, or in the working
directory without one, picked by ``keel --env NAME`` or ``KEEL_ENV``) <
``KEEL_…`` variables (``env``, nested with ``__``) < the command's own options
(``cli``). Each is a ``Layer``; ``load_settings`` merges them in order and
remembers which layer set each value, which ``keel config show`` prints.

Above these, read at every turn for its user and organization, sit feature
flags and per-organization / per-user overrides (``live.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource

from agentkeel.config.settings import KeelSettings
from agentkeel.errors import ConfigError

CONFIG_ENV = "KEEL_CONFIG"
ENVIRONMENT_ENV = "KEEL_ENV"
_ENVIRONMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
# Names that hold a secret value; *_FILE variants (a path) and KEEL_SECRETS_DIR are fine.
_SECRET_SUFFIXES = ("API_KEY", "_TOKEN", "PASSWORD", "_SECRET_VALUE")
_FIXED_ORDER = ("default", "file", "overlay", "env", "cli")
"""The fixed layers' names, lowest first (for ``LoadedSettings`` made without ``layers``)."""


class Layer(Protocol):
    """A source of setting values, as a nested dict of only the keys it sets."""

    @property
    def name(self) -> str: ...

    @property
    def detail(self) -> str | None:
        """More about the layer for ``config show`` (the overlay's file name), or ``None``."""
        ...

    def load(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class YamlLayer:
    path: Path
    name: str = "file"
    detail: str | None = None

    def load(self) -> Mapping[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(
                f"Config file '{self.path}' does not exist. Pass an existing file with "
                f"--config or {CONFIG_ENV}, or leave both unset for the defaults."
            ) from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file '{self.path}' is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(
                f"Config file '{self.path}' must hold a mapping at the top level, "
                f"got {type(data).__name__}."
            )
        return data


def looks_like_secret(key: str) -> bool:
    """Whether the ``KEEL_*`` variable ``key`` names a secret value (``…_API_KEY``,
    ``…_TOKEN``, ``…PASSWORD``), which keel reads from files only."""
    return key.startswith("KEEL_") and key.endswith(_SECRET_SUFFIXES)


def secret_env_message(key: str) -> str:
    """What to do instead of putting a secret in the variable ``key``."""
    return (
        f"Environment variable '{key}' looks like a secret. Secrets are read from "
        f"files only: set '{key}_FILE' to a file that holds it, or put it in the "
        "secrets directory."
    )


@dataclass(frozen=True, slots=True)
class EnvLayer:
    environ: Mapping[str, str]
    name: str = "env"
    detail: str | None = None

    def load(self) -> Mapping[str, Any]:
        for key in self.environ:
            if looks_like_secret(key):
                raise ConfigError(secret_env_message(key))
        source = EnvSettingsSource(KeelSettings)
        source.env_vars = {k.lower(): v for k, v in self.environ.items() if k.startswith("KEEL_")}
        values = dict(source())
        values.pop("config", None)
        return values


@dataclass(frozen=True, slots=True)
class DictLayer:
    """Values given in code (tests, ``keel`` options such as ``--port``)."""

    values: Mapping[str, Any]
    name: str = "cli"
    detail: str | None = None

    def load(self) -> Mapping[str, Any]:
        return self.values


@dataclass(frozen=True, slots=True)
class LoadedSettings:
    settings: KeelSettings
    provenance: Mapping[str, str]
    """Dotted key → name of the layer that set it; keys absent here are defaults."""
    details: Mapping[str, str] = field(default_factory=dict)
    """Layer name → its detail, for the layers that have one (``overlay`` → its file)."""
    environment: str | None = None
    """The environment whose overlay was read (``--env`` / ``KEEL_ENV``), if any."""
    layers: tuple[str, ...] = ()
    """The layers' names, lowest first, in the order they were merged."""

    def source_of(self, key: str) -> str:
        """The layer that set ``key``. A table (``pricing``) that layers fill entry by
        entry is the highest layer that set one of its entries; ``default`` when none did.

        >>> loaded.source_of("server.port"), loaded.source_of("pricing")
        ('env', 'file')
        """
        for prefix in _prefixes(key):
            if prefix in self.provenance:
                return self.provenance[prefix]
        inside = f"{key}."
        found = [layer for dotted, layer in self.provenance.items() if dotted.startswith(inside)]
        return max(found, key=self._rank) if found else "default"

    def _rank(self, layer: str) -> int:
        order = self.layers or _FIXED_ORDER
        return order.index(layer) if layer in order else len(order)

    def detail_of(self, key: str) -> str | None:
        """The detail of the layer that set ``key`` (the overlay's file name), or ``None``."""
        return self.details.get(self.source_of(key))


def base_config_path(
    config_path: Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The base ``keel.yaml``: ``config_path``, else ``KEEL_CONFIG``, else none."""
    env = os.environ if environ is None else environ
    return config_path or (Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else None)


def overlay_path(environment: str, *, base: Path | None) -> Path:
    """Where the overlay of ``environment`` lives: ``keel.<environment>.yaml`` beside
    ``base``, or in the working directory when there is no base file.

    >>> overlay_path("production", base=Path("deploy/keel.yaml"))
    PosixPath('deploy/keel.production.yaml')
    """
    if not _ENVIRONMENT_NAME.match(environment):
        raise ConfigError(
            f"Environment name {environment!r} is not valid: use letters, digits, '-' and "
            "'_' (e.g. production, staging-eu), set with --env or KEEL_ENV."
        )
    name = f"keel.{environment}.yaml"
    return base.parent / name if base is not None else Path(name)


def chosen_environment(
    environment: str | None = None, *, environ: Mapping[str, str] | None = None
) -> str | None:
    """The environment to overlay: ``environment`` (``--env``), else ``KEEL_ENV``."""
    env = os.environ if environ is None else environ
    return environment or env.get(ENVIRONMENT_ENV) or None


def overlay_layer(environment: str, *, base: Path | None) -> YamlLayer:
    """The overlay layer of ``environment``; its file must exist (a ``ConfigError`` that
    names the path otherwise)."""
    path = overlay_path(environment, base=base)
    if not path.is_file():
        where = f"beside {base}" if base is not None else "in the working directory"
        raise ConfigError(
            f"Environment '{environment}' has no overlay file: '{path}' does not exist "
            f"({where}). Create it, or choose another environment with --env / "
            f"{ENVIRONMENT_ENV} (unset both for none)."
        )
    return YamlLayer(path, name="overlay", detail=path.name)


def default_layers(
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    environment: str | None = None,
) -> list[Layer]:
    """The fixed layers below the command's options: the base file, the environment's
    overlay, then the ``KEEL_*`` variables of ``environ`` (``os.environ`` by default)."""
    env = os.environ if environ is None else environ
    layers: list[Layer] = []
    path = base_config_path(config_path, environ=env)
    if path is not None:
        layers.append(YamlLayer(path))
    chosen = chosen_environment(environment, environ=env)
    if chosen is not None:
        layers.append(overlay_layer(chosen, base=path))
    layers.append(EnvLayer(env))
    return layers


def load_settings(
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    layers: Sequence[Layer] | None = None,
    environment: str | None = None,
) -> LoadedSettings:
    """Merge the layers in order and validate the result. ``environment`` (else
    ``KEEL_ENV`` in ``environ``) adds that environment's overlay file above the base file.

    >>> loaded = load_settings(config_path=Path("keel.yaml"), environment="production",
    ...                        overrides={"server": {"port": 8085}})
    >>> loaded.settings.server.port, loaded.source_of("server.port")
    (8085, 'cli')
    """
    stack = (
        list(layers)
        if layers is not None
        else default_layers(config_path=config_path, environ=environ, environment=environment)
    )
    if overrides:
        stack.append(DictLayer(overrides))
    merged: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    details: dict[str, str] = {}
    for layer in stack:
        values = layer.load()
        _deep_merge(merged, values)
        for key in _leaf_keys(values):
            provenance[key] = layer.name
        if layer.detail is not None:
            details[layer.name] = layer.detail
    try:
        settings = KeelSettings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, provenance)) from exc
    chosen = None if layers is not None else chosen_environment(environment, environ=environ)
    return LoadedSettings(
        settings=settings,
        provenance=provenance,
        details=details,
        environment=chosen,
        layers=tuple(layer.name for layer in stack),
    )


def flatten(settings: KeelSettings) -> dict[str, Any]:
    """Dotted key → value for every leaf of the settings (lists stay whole)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value

    walk("", settings.model_dump(mode="json"))
    return out


def _deep_merge(into: dict[str, Any], values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        elif isinstance(value, Mapping):
            into[key] = {}
            _deep_merge(into[key], value)
        else:
            into[key] = value


def _leaf_keys(values: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            yield from _leaf_keys(value, dotted)
        else:
            yield dotted


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _explain(exc: ValidationError, provenance: Mapping[str, str]) -> str:
    lines = ["Invalid settings:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        inside = [layer for dotted, layer in provenance.items() if dotted.startswith(f"{key}.")]
        source = next(
            (provenance[p] for p in _prefixes(key) if p in provenance),
            # A section-wide error (a model validator): the last layer that wrote into it.
            inside[-1] if inside else "default",
        )
        value = err.get("input")
        shown = "" if isinstance(value, dict | list) else f" has value {value!r};"
        lines.append(f"  {key} (from {source}){shown} {err['msg']}")
    return "\n".join(lines)
