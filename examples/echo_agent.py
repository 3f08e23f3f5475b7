"""A minimal custom agent: answers with the model, and keeps a word count.

Serve it with:

    keel serve agent --agent examples.echo_agent:agent
"""

from __future__ import annotations

from agentkeel import ChatMessage, Reply, Turn


class ShortAnswerAgent:
    """Asks the model for a one-sentence answer; everything it does is metered."""

    async def respond(self, turn: Turn) -> Reply:
        messages = [
            ChatMessage(role="system", content="Answer in one short sentence."),
            *turn.history,
            ChatMessage(role="user", content=turn.content),
        ]
        response = await turn.model.complete(messages, max_tokens=64)
        turn.log.info("answered", extra={"category": "example"})
        return Reply(content=response.content)


agent = ShortAnswerAgent()
