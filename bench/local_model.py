"""The local model's speed: SmolLM2-135M (Q4_1) under llama.cpp's server, on this CPU.

A few prompts, each asked for up to ``MAX_TOKENS`` tokens at temperature 0;
tokens/s is completion tokens over the request's wall time (prompt evaluation
included, as a caller sees it), median over prompts and runs. Measured with
the default thread count of ``keel up`` and with every core.

    python -m bench.local_model
"""

from __future__ import annotations

import importlib.util
import os
import time

import httpx

from agentkeel.config import LocalModelSettings
from agentkeel.ops.local_model import (
    default_threads,
    local_model_base_url,
    local_model_command,
    local_model_ready_url,
)
from bench._common import Figure, free_port, median, parse_bench_args, print_figures, server_process

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain what a circuit breaker does in software.",
    "List five things to pack for a hiking trip, with a reason for each.",
    "Describe the water cycle to a ten-year-old.",
    "What makes a good code review? Answer in a paragraph.",
]
MAX_TOKENS = 128
RUNS = 2


def measure(settings: LocalModelSettings) -> tuple[float, float, int]:
    """(median completion tokens/s, median seconds per request, completion tokens seen)."""
    rates: list[float] = []
    seconds: list[float] = []
    tokens = 0
    with (
        server_process(
            local_model_command(settings),
            ready_url=local_model_ready_url(settings),
            base_url=local_model_base_url(settings),
        ) as server,
        httpx.Client(base_url=server.url, timeout=300.0, trust_env=False) as client,
    ):

        def ask(prompt: str) -> tuple[int, float]:
            start = time.perf_counter()
            response = client.post(
                "/chat/completions",
                json={
                    "model": settings.model_alias,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0,
                },
            )
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"], time.perf_counter() - start

        ask("Hello!")  # warm-up: first-call allocations are not the steady state
        for _ in range(RUNS):
            for prompt in PROMPTS:
                count, elapsed = ask(prompt)
                tokens += count
                rates.append(count / elapsed)
                seconds.append(elapsed)
    return median(rates), median(seconds), tokens


def run() -> list[Figure]:
    if importlib.util.find_spec("llama_cpp") is None:
        return [Figure("local model tokens/s", float("nan"), "tok/s", "skipped: no llama_cpp")]
    default = LocalModelSettings(port=free_port())
    threads = default_threads()
    rate, per_request, tokens = measure(default)
    cores = min(len(os.sched_getaffinity(0)), 8)
    all_rate, _, _ = measure(LocalModelSettings(port=free_port(), threads=cores))
    return [
        Figure(
            "local model tokens/s",
            rate,
            "tok/s",
            f"{threads} thread(s), keel up's default; {tokens} completion tokens; "
            f"{len(PROMPTS)} prompts x {RUNS}",
        ),
        Figure("local model seconds per reply", per_request, "s", f"up to {MAX_TOKENS} tokens"),
        Figure(
            f"local model tokens/s, {cores} threads",
            all_rate,
            "tok/s",
            "every core; collapses when another process needs one",
        ),
    ]


def main() -> None:
    print_figures("local model (SmolLM2-135M-Instruct Q4_1, llama.cpp)", run())


if __name__ == "__main__":
    parse_bench_args(__spec__.name, __doc__)
    main()
