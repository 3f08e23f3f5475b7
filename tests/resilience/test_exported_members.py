from __future__ import annotations

import agentkeel.resilience


def test_resilience_exports_exist() -> None:
    """Every name in agentkeel.resilience.__all__ is importable and public."""
    for name in agentkeel.resilience.__all__:
        assert hasattr(agentkeel.resilience, name), name
        assert not name.startswith("_")
