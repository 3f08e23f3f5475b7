"""The canary judge: sequential verdicts, holds on too little data, rollback, two-sigma."""

from __future__ import annotations

import math
import random

import pytest

from agentkeel.config.judge import DistributionMetric, JudgeSettings, RateMetric
from agentkeel.deploy.judge import Judge, Verdict, windows_of
from agentkeel.deploy.stats import (
    Estimate,
    bucket_quantile,
    log_mixture_ratio,
    proportion_harm,
    rank_harm,
)
from agentkeel.deploy.types import Distribution, Proportion, VersionWindow

BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, math.inf)


def only(*names: str, **overrides: object) -> JudgeSettings:
    """Settings whose only enabled metrics are ``names``."""
    settings = JudgeSettings.model_validate(overrides)
    for name, rate in settings.rates.items():
        rate.enabled = name in names
    for name, dist in settings.distributions.items():
        dist.enabled = name in names
    return settings


def tools(version: str, failed: int, calls: int) -> VersionWindow:
    return windows_of(version, {"tool_success": (failed, calls)})


def histogram(samples: list[float]) -> Distribution:
    cumulative = tuple(sum(1 for s in samples if s <= b) for b in BOUNDS)
    return Distribution(BOUNDS, cumulative)


def latency(version: str, samples: list[float]) -> VersionWindow:
    return VersionWindow(version, {}, {"turn_latency": histogram(samples)})


def metric(verdict: Verdict, name: str):  # type: ignore[no-untyped-def]
    return next(m for m in verdict.metrics if m.name == name)


# --- rates ----------------------------------------------------------------------------


def test_equal_tool_success_passes_and_never_rolls_back() -> None:
    """A/A: the same 5 % failure rate on both sides passes once there is enough data."""
    judge = Judge(only("tool_success"))
    for minute in range(1, 61):
        verdict = judge.evaluate(
            tools("v1", 50 * minute, 1000 * minute), tools("v2", 5 * minute, 100 * minute)
        )
        assert verdict.outcome == "pass"
        assert not verdict.rollback
    result = metric(verdict, "tool_success")
    assert result.stable == pytest.approx(0.05)
    assert result.canary == pytest.approx(0.05)
    assert result.p_value == 1.0


def test_clear_regression_fails_and_rolls_back_after_consecutive_intervals() -> None:
    """10 % failed tool calls against 5 % fails; the rollback comes on the second
    failing interval with ``consecutive_failures: 2``."""
    judge = Judge(only("tool_success", consecutive_failures=2))
    first = judge.evaluate(tools("v1", 250, 5000), tools("v2", 60, 500))
    assert first.outcome == "fail"
    assert first.failing == ["tool_success"]
    assert not first.rollback
    assert first.consecutive_failures == 1
    result = metric(first, "tool_success")
    assert result.p_value is not None and result.p_value <= judge.settings.alpha
    assert result.statistic is not None and result.statistic >= math.log(200)
    second = judge.evaluate(tools("v1", 500, 10000), tools("v2", 120, 1000))
    assert second.rollback
    assert second.consecutive_failures == 2


def test_a_passing_interval_resets_the_run_of_failures() -> None:
    """fail, pass, fail is never two consecutive failures."""
    judge = Judge(only("tool_success", consecutive_failures=2))
    bad = (tools("v1", 250, 5000), tools("v2", 60, 500))
    good = (tools("v1", 250, 5000), tools("v2", 25, 500))
    assert judge.evaluate(*bad).outcome == "fail"
    assert judge.evaluate(*good).outcome == "pass"
    third = judge.evaluate(*bad)
    assert third.outcome == "fail" and not third.rollback
    assert judge.evaluate(*bad).rollback


def test_too_little_data_is_inconclusive_never_pass() -> None:
    """Below ``min_trials`` on either side the verdict holds, even for a perfect canary."""
    judge = Judge(only("tool_success"))
    verdict = judge.evaluate(tools("v1", 50, 1000), tools("v2", 0, 40))
    assert verdict.outcome == "inconclusive"
    assert "too little data" in metric(verdict, "tool_success").detail
    assert judge.evaluate(tools("v1", 0, 0), tools("v2", 0, 0)).outcome == "inconclusive"


def test_harmful_direction_only() -> None:
    """A canary that fails far fewer tool calls than stable passes: the test is one-sided."""
    judge = Judge(only("tool_success"))
    verdict = judge.evaluate(tools("v1", 1000, 10000), tools("v2", 1, 1000))
    assert verdict.outcome == "pass"
    assert metric(verdict, "tool_success").p_value == 1.0


def test_tolerance_allows_a_small_difference() -> None:
    """5.5 % against 5 % fails without tolerance and passes with one point of it."""
    stable, canary = tools("v1", 5000, 100000), tools("v2", 2750, 50000)
    assert Judge(only("tool_success")).evaluate(stable, canary).outcome == "fail"
    lenient = only("tool_success", rates={"tool_success": {"tolerance": 0.01}})
    assert Judge(lenient).evaluate(stable, canary).outcome == "pass"


def test_few_events_hold_when_the_canary_looks_worse() -> None:
    """Rare events: 2 errors in 200 against none in 5000 is too few to judge (the normal
    approximation needs expected events), so it holds instead of failing on noise."""
    judge = Judge(only("turn_errors"))
    verdict = judge.evaluate(
        windows_of("v1", {"turn_errors": (0, 5000)}), windows_of("v2", {"turn_errors": (2, 200)})
    )
    assert verdict.outcome == "inconclusive"
    assert "too few events" in metric(verdict, "turn_errors").detail
    calm = judge.evaluate(
        windows_of("v1", {"turn_errors": (0, 5000)}), windows_of("v2", {"turn_errors": (0, 200)})
    )
    assert calm.outcome == "pass"


def test_a_broken_canary_fails_once_the_events_add_up() -> None:
    """Every canary turn failing is caught as soon as enough are expected to judge."""
    judge = Judge(only("turn_errors"))
    verdict = judge.evaluate(
        windows_of("v1", {"turn_errors": (5, 2500)}),
        windows_of("v2", {"turn_errors": (300, 300)}),
    )
    assert verdict.outcome == "fail"


def test_a_stable_metric_the_canary_lacks_holds_the_rollout() -> None:
    """Stable has tool calls, the canary none: inconclusive (a canary that stopped
    calling tools is not a pass); a metric neither side has does not hold anything."""
    judge = Judge(only("tool_success", "turn_errors"))
    window_s = windows_of("v1", {"tool_success": (50, 1000), "turn_errors": (1, 1000)})
    window_c = windows_of("v2", {"turn_errors": (0, 1000)})
    assert judge.evaluate(window_s, window_c).outcome == "inconclusive"
    neither = windows_of("v1", {"turn_errors": (1, 1000)})
    assert judge.evaluate(neither, window_c).outcome == "pass"


def test_a_aa_run_over_many_looks_stays_below_alpha() -> None:
    """Looked at every interval for 200 intervals, 200 healthy canaries (seeded) fail at
    most a handful of times: the sequential test does not inflate with looks."""
    rng = random.Random(3)
    settings = only("tool_success", alpha=0.05, consecutive_failures=1)
    false = 0
    for _ in range(200):
        judge = Judge(settings)
        s = c = Proportion(0, 0)
        for _ in range(200):
            cs = sum(rng.random() < 0.05 for _ in range(20))
            cc = sum(rng.random() < 0.05 for _ in range(10))
            s = Proportion(s.events + cs, s.trials + 20)
            c = Proportion(c.events + cc, c.trials + 10)
            verdict = judge.evaluate(VersionWindow("v1", {"tool_success": s}, {}),
                                     VersionWindow("v2", {"tool_success": c}, {}))  # fmt: skip
            if verdict.outcome == "fail":
                false += 1
                break
    # alpha = 5 %: a fixed-sample test looked at 200 times would fail most of them.
    assert false <= 20


# --- distributions ----------------------------------------------------------------------


def test_slower_canary_fails_the_rank_test() -> None:
    """Canary turns twice as slow fail; the same latencies pass."""
    rng = random.Random(1)
    stable = [rng.lognormvariate(-0.5, 0.5) for _ in range(2000)]
    same = [rng.lognormvariate(-0.5, 0.5) for _ in range(300)]
    slow = [2 * rng.lognormvariate(-0.5, 0.5) for _ in range(300)]
    judge = Judge(only("turn_latency"))
    assert judge.evaluate(latency("v1", stable), latency("v2", same)).outcome == "pass"
    verdict = judge.evaluate(latency("v1", stable), latency("v2", slow))
    assert verdict.outcome == "fail"
    result = metric(verdict, "turn_latency")
    assert result.canary is not None and result.stable is not None
    assert result.canary > result.stable


def test_faster_canary_passes_and_lower_feedback_fails() -> None:
    """Latency is harmful upwards only; feedback scores downwards."""
    rng = random.Random(2)
    stable = [rng.lognormvariate(0, 0.5) for _ in range(2000)]
    fast = [0.5 * rng.lognormvariate(0, 0.5) for _ in range(300)]
    assert (
        Judge(only("turn_latency")).evaluate(latency("v1", stable), latency("v2", fast)).outcome
        == "pass"
    )

    bounds = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, math.inf)

    def scores(counts: list[int]) -> Distribution:
        running, cumulative = 0, []
        for c in counts:
            running += c
            cumulative.append(running)
        return Distribution(bounds, tuple(cumulative))

    happy = scores([0, 10, 20, 40, 130, 800, 0])
    unhappy = scores([0, 30, 30, 40, 60, 40, 0])
    judge = Judge(only("feedback_score"))
    verdict = judge.evaluate(
        VersionWindow("v1", {}, {"feedback_score": happy}),
        VersionWindow("v2", {}, {"feedback_score": unhappy}),
    )
    assert verdict.outcome == "fail"
    reverse = Judge(only("feedback_score")).evaluate(
        VersionWindow("v1", {}, {"feedback_score": unhappy}),
        VersionWindow("v2", {}, {"feedback_score": happy}),
    )
    assert reverse.outcome == "pass"


def test_few_observations_are_inconclusive() -> None:
    """Below ``min_samples`` observations the rank test holds."""
    verdict = Judge(only("turn_latency")).evaluate(
        latency("v1", [0.2] * 500), latency("v2", [3.0] * 10)
    )
    assert verdict.outcome == "inconclusive"


# --- the two-sigma rule -------------------------------------------------------------------


def test_two_sigma_needs_a_baseline_then_fails_a_deviating_interval() -> None:
    """The guide's rule: per-interval values; a canary interval above mean + 2 sd fails."""
    judge = Judge(only("tool_success", method="two-sigma", consecutive_failures=1))
    stable_rates = [0.050, 0.052, 0.048, 0.051, 0.049, 0.050]
    s = c = Proportion(0, 0)
    verdicts = []
    for i, rate in enumerate(stable_rates):
        s = Proportion(s.events + round(rate * 1000), s.trials + 1000)
        canary_failed = 6 if i < 5 else 20  # 6 % and then 20 % of 100 calls
        c = Proportion(c.events + canary_failed, c.trials + 100)
        verdicts.append(
            judge.evaluate(
                VersionWindow("v1", {"tool_success": s}, {}),
                VersionWindow("v2", {"tool_success": c}, {}),
            )
        )
    assert [v.outcome for v in verdicts[:4]] == ["inconclusive"] * 4
    assert verdicts[4].outcome == "fail"  # 6 % is far more than 2 sd of ~0.15 points
    assert verdicts[5].outcome == "fail" and verdicts[5].rollback
    result = metric(verdicts[5], "tool_success")
    assert result.canary == pytest.approx(0.20)
    assert result.statistic is not None and result.statistic > 2


def test_two_sigma_passes_a_canary_inside_the_band() -> None:
    judge = Judge(only("tool_success", method="two-sigma"))
    s = c = Proportion(0, 0)
    for rate in (0.04, 0.06, 0.05, 0.045, 0.055, 0.05):
        s = Proportion(s.events + round(rate * 1000), s.trials + 1000)
        c = Proportion(c.events + 5, c.trials + 100)
        verdict = judge.evaluate(
            VersionWindow("v1", {"tool_success": s}, {}),
            VersionWindow("v2", {"tool_success": c}, {}),
        )
    assert verdict.outcome == "pass"


# --- the statistics ---------------------------------------------------------------------


def test_mixture_ratio_grows_with_evidence_and_ignores_the_harmless_side() -> None:
    weak = log_mixture_ratio(Estimate(0.01, 0.0001), 0.05)
    strong = log_mixture_ratio(Estimate(0.05, 0.0001), 0.05)
    assert strong > weak
    assert log_mixture_ratio(Estimate(-0.05, 0.0001), 0.05) < 0
    assert math.isfinite(log_mixture_ratio(Estimate(-1e6, 1e-12), 0.05))
    assert log_mixture_ratio(Estimate(0.1, 0.0), 0.05) == 0.0


def test_proportion_harm_subtracts_the_tolerance() -> None:
    estimate = proportion_harm(Proportion(50, 1000), Proportion(10, 100), 0.01)
    assert estimate.theta == pytest.approx(0.10 - 0.05 - 0.01)
    assert estimate.variance > 0
    assert proportion_harm(Proportion(0, 0), Proportion(1, 1), 0.0).variance == 0.0


def test_rank_harm_counts_ties_half() -> None:
    """All observations in one bucket: P(worse) = 0.5 exactly, no evidence either way."""
    same = Distribution((1.0, math.inf), (100, 100))
    other = Distribution((1.0, math.inf), (40, 40))
    estimate, worse, n_s, n_c = rank_harm(same, other, harmful="higher", tolerance=0.0)
    assert worse == 0.5 and (n_s, n_c) == (100, 40)
    assert estimate.variance == 0.0
    higher = Distribution((1.0, math.inf), (0, 40))
    _, worse, _, _ = rank_harm(same, higher, harmful="higher", tolerance=0.0)
    assert worse == 1.0


def test_rank_harm_over_different_buckets_uses_the_shared_bounds() -> None:
    a = Distribution((0.5, 1.0, 2.0, math.inf), (10, 20, 30, 30))
    b = Distribution((1.0, 3.0, math.inf), (20, 30, 30))
    _, worse, n_s, n_c = rank_harm(a, b, harmful="higher", tolerance=0.0)
    assert (n_s, n_c) == (30, 30)
    assert 0.4 < worse < 0.6


def test_bucket_quantile_interpolates() -> None:
    dist = Distribution((1.0, 2.0, math.inf), (0, 10, 10))
    assert bucket_quantile(dist, 0.5) == pytest.approx(1.5)
    assert bucket_quantile(Distribution((1.0, math.inf), (0, 0)), 0.5) is None


def test_settings_lay_entries_over_the_defaults() -> None:
    """``rates: {tool_success: {tolerance: ...}}`` keeps the default selectors; a new
    entry needs its own; ``enabled: false`` drops one."""
    settings = JudgeSettings.model_validate(
        {
            "rates": {
                "tool_success": {"tolerance": 0.02},
                "turn_errors": {"enabled": False},
                "escalations": {"events": "agent_escalations_total", "trials": "agent_turns_total"},
            }
        }
    )
    assert settings.rates["tool_success"].tolerance == 0.02
    assert settings.rates["tool_success"].trials == ["agent_tool_calls_total"]
    assert "turn_errors" not in settings.enabled_rates()
    assert settings.rates["escalations"].events == ["agent_escalations_total"]
    assert "turn_latency" in settings.enabled_distributions()
    with pytest.raises(ValueError):
        JudgeSettings.model_validate({"rates": {"made_up": {"tolerance": 0.1}}})
    with pytest.raises(ValueError):
        JudgeSettings.model_validate({"alpha": 0})


# --- alpha spent across metrics ---------------------------------------------------------


def test_alpha_is_spent_across_the_enabled_metrics_by_weight() -> None:
    """The shares add up to ``alpha`` (a false rollback needs one false failure); tool
    success gets its weight's share, and disabling metrics leaves the rest more."""
    settings = JudgeSettings()
    enabled: list[RateMetric | DistributionMetric] = [
        *settings.enabled_rates().values(),
        *settings.enabled_distributions().values(),
    ]
    assert sum(settings.metric_alpha(m) for m in enabled) == pytest.approx(settings.alpha)
    tool = settings.rates["tool_success"]
    weights = sum(m.weight for m in enabled)
    assert settings.metric_alpha(tool) == pytest.approx(settings.alpha * tool.weight / weights)
    assert settings.metric_alpha(tool) > settings.metric_alpha(settings.rates["turn_errors"])
    alone = only("tool_success")
    assert alone.metric_alpha(alone.rates["tool_success"]) == pytest.approx(alone.alpha)
    with pytest.raises(ValueError):
        JudgeSettings.model_validate({"rates": {"tool_success": {"weight": 0}}})


def test_a_metric_fails_only_within_its_share_of_alpha() -> None:
    """Evidence between the metric's share and the whole ``alpha`` fails tool success
    when it is the only metric, and passes it when every default metric shares alpha."""
    alone, shared = only("tool_success"), JudgeSettings()
    share = shared.metric_alpha(shared.rates["tool_success"])
    stable = tools("v1", 500, 10_000)
    for failed in range(50, 200):
        canary = tools("v2", failed, 1000)
        p = metric(Judge(alone).evaluate(stable, canary), "tool_success").p_value
        assert p is not None
        if share < p <= alone.alpha:
            break
    else:
        pytest.fail("no count gives evidence between the share and alpha")
    assert metric(Judge(alone).evaluate(stable, canary), "tool_success").outcome == "fail"
    verdict = Judge(shared).evaluate(stable, canary)
    assert metric(verdict, "tool_success").outcome == "pass"
    assert not verdict.rollback
