from __future__ import annotations

import agentkeel


def test_all_exports_exist_and_are_public() -> None:
    """Every name in agentkeel.__all__ is importable and nothing private is exported."""
    for name in agentkeel.__all__:
        assert hasattr(agentkeel, name), name
        assert not name.startswith("_") or name == "__version__"


def test_agent_contract_is_exported() -> None:
    """Users write agents against Turn, Reply and Agent from the top-level package."""
    assert {"Agent", "Turn", "Reply", "ChatMessage", "ToolSet"} <= set(agentkeel.__all__)
