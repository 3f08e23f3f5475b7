"""The live settings of one user, as ``keel config show --user`` and ``GET /admin/config``
show them: each live key's value, the layer it came from and that layer's detail.

Layers read as: ``default``, ``file``, ``overlay (keel.production.yaml)``, ``env``,
``cli``, ``flag (variant premium)``, ``org override (acme)``, ``user override
(acme/bob)``.

>>> turn = settings_for_user(live, user="bob", organization="acme")
>>> live_values_json(turn)["quotas.user_daily_tokens"]
{'value': 5000000, 'source': 'user', 'detail': 'acme/bob'}
>>> shown_source("user", "acme/bob")
'user override (acme/bob)'
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python

from agentkeel.config.live import LiveSettings, TurnContext, TurnSettings

__all__ = ["live_values_json", "settings_for_user", "shown_source"]

_SHOWN = {"flag": "flag", "org": "org override", "user": "user override"}


def shown_source(source: str, detail: str | None) -> str:
    """A value's layer as people read it: ``flag (variant premium)``, ``org override
    (acme)``, ``overlay (keel.production.yaml)``; the bare name without a detail."""
    name = _SHOWN.get(source, source)
    if detail and source == "flag" and not detail.startswith("variant"):
        detail = f"variant {detail}"
    return f"{name} ({detail})" if detail else name


def settings_for_user(
    live: LiveSettings,
    *,
    user: str,
    organization: str | None = None,
    task: str | None = None,
    counted: bool = True,
) -> TurnSettings:
    """The live settings a turn of ``user`` (in ``organization``, for ``task``) would get
    now, from the agent of ``live.settings``. ``counted=False``: a look, not a turn (the
    flag evaluations are not counted: ``LiveSettings.preview``)."""
    context = TurnContext(
        user_id=user,
        organization=organization,
        agent_id=live.settings.agent.id,
        version=live.settings.agent.version,
        task=task,
    )
    return live.for_turn(context) if counted else live.preview(context)


def live_values_json(turn: TurnSettings) -> dict[str, dict[str, Any]]:
    """Live key -> ``{value, source, detail}`` (``detail`` ``None`` where there is none)."""
    return {
        key: {
            "value": to_jsonable_python(value),
            "source": turn.sources[key],
            "detail": turn.detail.get(key),
        }
        for key, value in turn.values.items()
    }
