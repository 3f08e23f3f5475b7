"""agentkeel: the operational layer for AI agents in production.

Users write an agent against the contract below and serve it with
``keel serve agent --agent package.module:agent``::

    from agentkeel import ChatMessage, Reply, Turn

    class MyAgent:
        async def respond(self, turn: Turn) -> Reply:
            response = await turn.model.complete([ChatMessage("user", turn.content)])
            return Reply(content=response.content)
"""

from agentkeel.errors import KeelError
from agentkeel.models.types import (
    ChatMessage,
    ModelProvider,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from agentkeel.runtime.types import Agent, Reply, Turn, TurnModel, TurnTools
from agentkeel.tools.types import ToolContext, ToolResult, ToolSet

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "ChatMessage",
    "KeelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "Reply",
    "ToolCall",
    "ToolContext",
    "ToolResult",
    "ToolSet",
    "ToolSpec",
    "Turn",
    "TurnModel",
    "TurnTools",
    "Usage",
    "__version__",
]
