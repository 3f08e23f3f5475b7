"""Agents for rehearsing a release: one tool call per turn, a known share of them failing.

``stable`` fails 5 % of its tool calls, ``worse`` 10 % (tool success 5 points lower),
chosen from a hash of the session and turn so that a rehearsal can be replayed. No
model is called, so a rehearsal measures the deploy, not the model. The variable
``REHEARSAL_TURN_S`` (seconds, default 0) makes every turn take that long, so that
a replica killed under load has turns in flight.

    keel serve agent --agent examples.rehearsal_agent:stable
    keel rollout start --version v2 --entrypoint examples.rehearsal_agent:worse
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from agentkeel import Reply, Turn
from agentkeel.models.types import ToolCall


class FixedFailureAgent:
    """Calls ``calculator`` once per turn; ``failure_rate`` of the calls divide by zero."""

    def __init__(self, failure_rate: float) -> None:
        self.failure_rate = failure_rate

    def _fails(self, turn: Turn) -> bool:
        digest = hashlib.sha256(f"{turn.session_id}:{turn.number}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.failure_rate

    async def respond(self, turn: Turn) -> Reply:
        delay = float(os.environ.get("REHEARSAL_TURN_S") or 0)
        if delay > 0:
            await asyncio.sleep(delay)
        expression = "1 / 0" if self._fails(turn) else f"{turn.number} + 1"
        result = await turn.tools.call(
            ToolCall(
                id=f"call-{turn.number}", name="calculator", arguments={"expression": expression}
            )
        )
        return Reply(content=f"turn {turn.number}: {result.content}")


stable = FixedFailureAgent(0.05)
worse = FixedFailureAgent(0.10)
