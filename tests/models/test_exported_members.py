from __future__ import annotations

import agentkeel.models
import agentkeel.testing
from agentkeel.models.scripted import ScriptedProvider


def test_models_exports_resolve_including_the_lazy_ones() -> None:
    """Every name in agentkeel.models.__all__ is importable, the SDK-backed ones on first use."""
    for name in agentkeel.models.__all__:
        assert getattr(agentkeel.models, name) is not None, name
    assert agentkeel.models.ModelGateway.__module__ == "agentkeel.models.gateway"


def test_testing_reexports_the_scripted_provider() -> None:
    """Users' tests import the scripted model and its steps from agentkeel.testing."""
    assert agentkeel.testing.ScriptedProvider is ScriptedProvider
    for name in ("Say", "CallTools", "Fail", "Wait", "ManualClock"):
        assert name in agentkeel.testing.__all__
        assert hasattr(agentkeel.testing, name)
