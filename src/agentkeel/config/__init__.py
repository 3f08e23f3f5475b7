"""Layered settings: defaults < keel.yaml < overlay < KEEL_* < command options (< flags,
organization and user overrides, per turn: ``live.py``, ``overrides.py``)."""

from agentkeel.config.layers import (
    DictLayer,
    EnvLayer,
    Layer,
    LoadedSettings,
    YamlLayer,
    default_layers,
    flatten,
    load_settings,
)
from agentkeel.config.settings import (
    AgentSettings,
    BreakerSettings,
    GuardrailSettings,
    KeelSettings,
    LocalModelSettings,
    ProviderSettings,
    RetrySettings,
    ServerSettings,
    StoreSettings,
    UpSettings,
)

__all__ = [
    "AgentSettings",
    "BreakerSettings",
    "DictLayer",
    "EnvLayer",
    "GuardrailSettings",
    "KeelSettings",
    "Layer",
    "LoadedSettings",
    "LocalModelSettings",
    "ProviderSettings",
    "RetrySettings",
    "ServerSettings",
    "StoreSettings",
    "UpSettings",
    "YamlLayer",
    "default_layers",
    "flatten",
    "load_settings",
]
