"""agentkeel.ops.evals exports what a user of evaluation sets needs, and nothing private."""

from __future__ import annotations

import agentkeel.ops.evals as evals


def test_every_export_exists_and_is_public() -> None:
    """Each name in __all__ is an attribute of the package and none starts with '_'."""
    for name in evals.__all__:
        assert hasattr(evals, name), name
        assert not name.startswith("_"), name
    assert {"load_eval_set", "run_eval_set", "serve_in_process", "EvalReport"} <= set(evals.__all__)
