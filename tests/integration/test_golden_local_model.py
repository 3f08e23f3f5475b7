"""The bundled golden suite passes with the bundled tiny model and the shipped agent
defaults, as it does with the scripted model in the unit tests."""

from __future__ import annotations

import pytest

from agentkeel.config.settings import KeelSettings, LocalModelSettings
from agentkeel.ops.evals import serve_in_process
from agentkeel.ops.golden import load_golden_suite, run_golden_suite
from agentkeel.ops.local_model import local_model_base_url
from tests.integration.test_local_agent_eval import local_model

pytestmark = [pytest.mark.slow, pytest.mark.localmodel]

__all__ = ["local_model"]


async def test_local_smoke_golden_passes_with_the_local_model(
    local_model: LocalModelSettings,
) -> None:
    """Every case of local-smoke passes against the default agent on SmolLM2."""
    defaults = KeelSettings(secrets_dir=None)
    models = [defaults.models[0].model_copy(update={"base_url": local_model_base_url(local_model)})]
    settings = defaults.model_copy(update={"models": models})
    async with serve_in_process(settings) as target:
        report = await run_golden_suite(
            load_golden_suite("local-smoke"), target, target_name="local model"
        )
    assert report.passed, report.failures()
