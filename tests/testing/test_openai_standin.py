from __future__ import annotations

import openai
import pytest

from agentkeel.testing.openai_standin import DEFAULT_REPLY, OpenAIStandin


async def test_accepts_its_keys_and_refuses_others_over_a_socket() -> None:
    """The SDK gets the canned reply with an accepted key, 401 with another, and the
    accepted set changes while the server runs."""
    with OpenAIStandin(keys={"sk-good-0123456789"}).serving() as standin:
        good = openai.AsyncOpenAI(api_key="sk-good-0123456789", base_url=standin.base_url)
        reply = await good.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == DEFAULT_REPLY
        stream = await good.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == DEFAULT_REPLY
        bad = good.with_options(api_key="sk-other-0123456789")
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="m", messages=[])
        standin.revoke("sk-good-0123456789")
        with pytest.raises(openai.AuthenticationError):
            await good.chat.completions.create(model="m", messages=[])
        standin.accept("sk-other-0123456789")
        await bad.chat.completions.create(model="m", messages=[])
        assert standin.calls_by_key == {"sk-good-0123456789": 2, "sk-other-0123456789": 1}
        assert standin.rejected_by_key["sk-good-0123456789"] == 1
        await good.close()
