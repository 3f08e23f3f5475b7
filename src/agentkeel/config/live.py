"""Live settings: what feature flags and per-user / per-organization overrides change.

The configuration layers, lowest first: built-in defaults < ``keel.yaml`` <
environment (overlay file, ``KEEL_*``) < command-line options < feature flags <
per-organization overrides < per-user overrides. The first group is fixed when a
process starts (``layers.py``); the last three are read at the start of every
turn, for that turn's user, organization, agent and task, and may only set the
keys of ``KeelSettings.LIVE`` (the allowlist, declared once in the settings
model). ``check_live`` validates such values, naming every bad key;
``LiveSettings`` resolves the ``TurnSettings`` of one turn.

>>> live = LiveSettings(settings, layers=[flags, overrides])
>>> turn = live.for_turn(TurnContext(user_id="ana", organization="acme", agent_id="support",
...                                   version="v2"))
>>> turn.model_chain, turn.sources["agent.model_chain"]
(('openai', 'local'), 'flag')
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from agentkeel.config.quotas import ModelPrice, QuotaSettings
from agentkeel.config.settings import GuardrailSettings, KeelSettings
from agentkeel.errors import ConfigError

MERGED_KEYS = frozenset({"pricing"})
"""Live keys whose value is a table: a layer's entries merge over the ones below."""


@dataclass(frozen=True, slots=True)
class TurnContext:
    """Who and what a turn is for: what flag targeting and overrides key on."""

    user_id: str
    organization: str | None
    agent_id: str
    version: str
    session_id: str | None = None
    task: str | None = None
    """The session's ``metadata.task``, when it names one (per-task model choice)."""

    def attributes(self) -> dict[str, str]:
        """The attributes flag targeting rules may test (``user``, ``organization``, ``agent``,
        ``version``, ``task``, ``session``); absent ones are left out."""
        values = {
            "user": self.user_id,
            "organization": self.organization,
            "agent": self.agent_id,
            "version": self.version,
            "task": self.task,
            "session": self.session_id,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True, slots=True)
class LayerValues:
    """What one live layer sets for one turn."""

    layer: str
    """``flag``, ``org`` or ``user``: shown as the value's source."""
    values: Mapping[str, Any]
    """Dotted live key -> value, already checked (``check_live``)."""
    detail: Mapping[str, str] = field(default_factory=dict)
    """Dotted key -> more about where the value came from (a flag's variant, an
    override entry), for ``keel config show`` and logs."""


class LiveLayer(Protocol):
    """A source of live values: feature flags, or the overrides file.

    ``counted=False`` is a look that is not a turn (``GET /admin/config``, the quotas
    of a usage report): a layer that counts its evaluations leaves it out.
    """

    def values_for(
        self, context: TurnContext, *, counted: bool = True
    ) -> Sequence[LayerValues]: ...


@dataclass(frozen=True, slots=True)
class TurnSettings:
    """The live settings in force for one turn."""

    guardrails: GuardrailSettings
    quotas: QuotaSettings
    pricing: Mapping[str, ModelPrice]
    tools: tuple[str, ...]
    """The tools the turn may call (``agent.tools``)."""
    model_chain: tuple[str, ...] | None
    """The providers the turn's model calls walk, in order; ``None`` = all of them."""
    memory_writes: bool
    values: Mapping[str, Any]
    """Every live key -> its value for this turn."""
    sources: Mapping[str, str]
    """Every live key -> the layer that set it (``default``, ``file``, ..., ``flag``,
    ``org``, ``user``)."""
    detail: Mapping[str, str] = field(default_factory=dict)
    """Live key -> detail of the layer that set it (``variant premium``), where known."""


def live_keys() -> tuple[str, ...]:
    """The allowlist: dotted keys that flags and overrides may set."""
    return KeelSettings.LIVE


def check_live(
    values: Mapping[str, Any], *, origin: str, settings: KeelSettings | None = None
) -> dict[str, Any]:
    """``values`` (dotted live key -> value) validated and coerced, or a ``ConfigError``
    that names every key that is not live or whose value is wrong, and ``origin`` (the
    file and flag or entry). With ``settings``, cross-checks too: ``agent.model_chain``
    must name one of its chains or providers.

    >>> check_live({"guardrails.max_steps_per_turn": 4}, origin="flags.json")
    {'guardrails.max_steps_per_turn': 4}
    """
    problems: list[str] = []
    checked: dict[str, Any] = {}
    allowed = frozenset(live_keys())
    for key, value in values.items():
        if key not in allowed:
            problems.append(
                f"'{key}' may not be changed by a flag or an override; the live settings "
                f"are: {', '.join(live_keys())}"
            )
            continue
        try:
            checked[key] = _adapter(key).validate_python(value, strict=True)
        except ValidationError as exc:
            reasons = "; ".join(err["msg"] for err in exc.errors())
            problems.append(f"'{key}' = {value!r}: {reasons}")
            continue
        if key == "agent.model_chain" and settings is not None:
            try:
                settings.chain_providers(checked[key])
            except ValueError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError(f"{origin}:\n  " + "\n  ".join(problems))
    return checked


def base_values(settings: KeelSettings) -> dict[str, Any]:
    """Every live key -> its value in ``settings`` (the layers below the live ones)."""
    return {key: _get(settings, key) for key in live_keys()}


class LiveSettings:
    """Resolves the ``TurnSettings`` of each turn from ``settings`` and the live layers.

    ``provenance`` (``LoadedSettings.source_of``) names the fixed layer of each live
    key's base value; without it they show as ``settings``. A turn that no layer
    changes gets one shared ``TurnSettings`` built once.
    """

    def __init__(
        self,
        settings: KeelSettings,
        *,
        layers: Sequence[LiveLayer] = (),
        source_of: Callable[[str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.layers = tuple(layers)
        self._base_values = base_values(settings)
        self._base_sources = {
            key: (source_of(key) if source_of is not None else "settings")
            for key in self._base_values
        }
        self.base = self._build(dict(self._base_values), dict(self._base_sources), {})

    def for_turn(self, context: TurnContext) -> TurnSettings:
        """The settings in force for a turn of ``context``, every layer applied in order."""
        return self._resolve(context, counted=True)

    def preview(self, context: TurnContext) -> TurnSettings:
        """What ``for_turn`` would give a turn of ``context`` now, without counting it as
        one (flag evaluations are not counted): for admin views and reports.

        >>> live.preview(TurnContext(user_id="bob", organization="acme", agent_id="support",
        ...                          version="v1")).quotas.user_daily_tokens
        5000000
        """
        return self._resolve(context, counted=False)

    def _resolve(self, context: TurnContext, *, counted: bool) -> TurnSettings:
        found = [
            lv
            for layer in self.layers
            for lv in layer.values_for(context, counted=counted)
            if lv.values
        ]
        if not found:
            return self.base
        values = dict(self._base_values)
        sources = dict(self._base_sources)
        detail: dict[str, str] = {}
        for layer_values in found:
            for key, value in layer_values.values.items():
                if key in MERGED_KEYS:
                    value = {**values[key], **value}
                values[key] = value
                sources[key] = layer_values.layer
                if key in layer_values.detail:
                    detail[key] = layer_values.detail[key]
                else:
                    detail.pop(key, None)
        return self._build(values, sources, detail)

    def _build(
        self, values: dict[str, Any], sources: dict[str, str], detail: dict[str, str]
    ) -> TurnSettings:
        base = self.settings
        guardrails = _section(base.guardrails, "guardrails.", values)
        quotas = _section(base.quotas, "quotas.", values)
        try:
            chain = base.chain_providers(values["agent.model_chain"])
        except ValueError:
            # Checked when the layer was loaded; a chain this replica lacks keeps its own.
            chain = base.chain_providers(base.agent.model_chain)
            sources["agent.model_chain"] = self._base_sources["agent.model_chain"]
        return TurnSettings(
            guardrails=guardrails,
            quotas=quotas,
            pricing=values["pricing"],
            tools=tuple(values["agent.tools"]),
            model_chain=chain,
            memory_writes=bool(values["agent.memory_writes"]),
            values=values,
            sources=sources,
            detail=detail,
        )


def _section(model: BaseModel, prefix: str, values: Mapping[str, Any]) -> Any:
    update = {
        key[len(prefix) :]: value
        for key, value in values.items()
        if key.startswith(prefix) and getattr(model, key[len(prefix) :]) != value
    }
    return model.model_copy(update=update) if update else model


def _get(settings: KeelSettings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


@cache
def setting_field(key: str) -> FieldInfo:
    """The settings model's field for the dotted key ``key``, walked section by section.

    >>> setting_field("guardrails.max_steps_per_turn").annotation
    <class 'int'>
    """
    model: type[BaseModel] = KeelSettings
    *path, name = key.split(".")
    for part in path:
        section = model.model_fields[part].annotation
        assert isinstance(section, type) and issubclass(section, BaseModel), key
        model = section
    return model.model_fields[name]


@cache
def _adapter(key: str) -> TypeAdapter[Any]:
    info = setting_field(key)
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[(annotation, *info.metadata)]
    return TypeAdapter(annotation)
