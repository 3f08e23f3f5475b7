"""Layered settings: defaults < keel.yaml < environment (< flags, per-user later)."""

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
