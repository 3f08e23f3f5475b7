"""The example flag and overrides files are valid for the production example, and mean
what their comments say."""

from __future__ import annotations

from pathlib import Path

from agentkeel.config.flag_file import load_flag_file
from agentkeel.config.flag_layer import open_flag_layer
from agentkeel.config.layers import load_settings
from agentkeel.config.live import LiveSettings, TurnContext, TurnSettings
from agentkeel.config.overrides import read_overrides
from agentkeel.config.settings import KeelSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def production(tmp_path: Path) -> KeelSettings:
    return load_settings(
        config_path=EXAMPLES / "keel.yaml",
        environment="production",
        environ={},
        overrides={"flags": {"file": str(EXAMPLES / "flags.json")}, "data_dir": str(tmp_path)},
    ).settings


def test_the_example_flags_and_overrides_are_valid(tmp_path: Path) -> None:
    settings = production(tmp_path)
    document = load_flag_file(EXAMPLES / "flags.json", settings=settings)
    assert set(document.flags) <= set(settings.LIVE)
    overrides = read_overrides(EXAMPLES / "overrides.yaml", settings=settings)
    assert overrides is not None


def test_the_example_flags_serve_what_they_say(tmp_path: Path) -> None:
    settings = production(tmp_path)
    with open_flag_layer(settings) as flags:
        assert flags is not None
        live = LiveSettings(settings, layers=[flags])

        def turn(user: str, org: str | None, task: str | None = None) -> TurnSettings:
            return live.for_turn(
                TurnContext(
                    user_id=user, organization=org, agent_id="support", version="v1", task=task
                )
            )

        acme = turn("ana", "acme")
        assert acme.model_chain == ("anthropic", "openai")
        assert acme.quotas.user_daily_tokens == 2_000_000
        review = turn("zed", "globex", task="contract-review")
        assert review.model_chain == ("anthropic", "openai")
        chains = [turn(f"user-{n}", "globex").model_chain for n in range(400)]
        premium = sum(chain == ("anthropic", "openai") for chain in chains)
        assert 20 <= premium <= 60  # the 10% rollout, bucketed per user
