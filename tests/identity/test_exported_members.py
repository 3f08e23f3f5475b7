"""agentkeel.identity's public surface."""

from __future__ import annotations

import agentkeel.identity


def test_every_export_resolves_and_is_public() -> None:
    """Every name in __all__ exists, is public, and is listed once."""
    for name in agentkeel.identity.__all__:
        assert getattr(agentkeel.identity, name) is not None, name
        assert not name.startswith("_"), name
    assert len(set(agentkeel.identity.__all__)) == len(agentkeel.identity.__all__)
