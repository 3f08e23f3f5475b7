"""Model providers and the gateway that puts them in a resilient chain.

The provider SDKs take seconds to import, so the adapters that use them load on
first use: ``import agentkeel.models.types`` stays cheap for every process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentkeel.models.counting import ByteBound, TokenCounter, bound_tokens
from agentkeel.models.scripted import CallTools, Fail, Say, ScriptedProvider, ScriptStep, Wait
from agentkeel.models.tokens import estimate_tokens
from agentkeel.models.types import (
    ChatMessage,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    TokenCallback,
    ToolCall,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from agentkeel.models.anthropic_provider import AnthropicProvider
    from agentkeel.models.factory import build_gateway, build_provider
    from agentkeel.models.gateway import ModelGateway
    from agentkeel.models.openai_provider import OpenAIProvider
    from agentkeel.models.server_counter import ServerTokenCounter
    from agentkeel.models.tiktoken_counter import TiktokenCounter

_LAZY = {
    "AnthropicProvider": "agentkeel.models.anthropic_provider",
    "ModelGateway": "agentkeel.models.gateway",
    "OpenAIProvider": "agentkeel.models.openai_provider",
    "ServerTokenCounter": "agentkeel.models.server_counter",
    "TiktokenCounter": "agentkeel.models.tiktoken_counter",
    "build_gateway": "agentkeel.models.factory",
    "build_provider": "agentkeel.models.factory",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentkeel.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AnthropicProvider",
    "ByteBound",
    "CallTools",
    "ChatMessage",
    "Fail",
    "ModelGateway",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "OpenAIProvider",
    "Say",
    "ScriptStep",
    "ScriptedProvider",
    "ServerTokenCounter",
    "TiktokenCounter",
    "TokenCallback",
    "TokenCounter",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "Wait",
    "bound_tokens",
    "build_gateway",
    "build_provider",
    "estimate_tokens",
]
