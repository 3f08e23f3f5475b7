"""The canary judge: is the new version behaving worse than the stable one?

The controller calls ``Judge.evaluate(stable, canary)`` once per analysis
interval with cumulative windows (everything since the rollout started). The
judge keeps what it needs between calls: the run of failing intervals and, for
the two-sigma rule, the stable version's per-interval values.

>>> judge = Judge(settings.rollout.judge)
>>> verdict = judge.evaluate(await source.read("v1"), await source.read("v2"))
>>> verdict.outcome, verdict.rollback
('inconclusive', False)

Outcomes, per metric and overall:

- ``fail``: the canary is worse than the tolerance allows, with the evidence
  the metric's share of ``alpha`` asks for (sequential), or its interval
  deviates more than ``sigmas`` baseline standard deviations (two-sigma).
- ``inconclusive``: too little data to say; the controller holds. Never a pass.
- ``pass``: enough data and no evidence of harm.

Overall: ``fail`` when any metric fails; ``inconclusive`` when a metric the
stable version has data for lacks enough canary data; ``pass`` when at least
one metric passed and none is inconclusive that way (a metric neither version
has any data for, such as feedback nobody gave, does not hold a rollout).
``rollback`` is true once ``consecutive_failures`` intervals in a row failed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from agentkeel.config.judge import DistributionMetric, JudgeSettings, RateMetric
from agentkeel.deploy.stats import (
    bucket_counts,
    bucket_mean,
    bucket_quantile,
    log_mixture_ratio,
    proportion_harm,
    rank_harm,
)
from agentkeel.deploy.types import Distribution, Proportion, VersionWindow

__all__ = ["Judge", "MetricResult", "Outcome", "Verdict", "windows_of"]

Outcome = Literal["pass", "fail", "inconclusive"]

_EMPTY = Proportion(0, 0)


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric's verdict for the view: the two versions' values and the evidence.

    Rates show event rates (0.05 = 5 %), distributions their medians.
    ``statistic`` is log Lambda of the sequential test (the z-like deviation in
    baseline standard deviations for two-sigma); ``p_value`` is the interval's
    always-valid p-value (1 / Lambda), None for two-sigma; the metric fails
    when it is at most the metric's share of ``alpha``.
    """

    name: str
    kind: Literal["rate", "distribution"]
    outcome: Outcome
    stable: float | None
    canary: float | None
    statistic: float | None
    p_value: float | None
    detail: str
    has_data: bool = True


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's answer for one analysis interval."""

    outcome: Outcome
    rollback: bool
    metrics: tuple[MetricResult, ...]
    interval: int
    consecutive_failures: int
    method: str = "sequential"

    @property
    def failing(self) -> list[str]:
        return [m.name for m in self.metrics if m.outcome == "fail"]

    def to_dict(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "rollback": self.rollback,
            "interval": self.interval,
            "consecutive_failures": self.consecutive_failures,
            "method": self.method,
            "metrics": [
                {
                    "name": m.name,
                    "kind": m.kind,
                    "outcome": m.outcome,
                    "stable": m.stable,
                    "canary": m.canary,
                    "statistic": m.statistic,
                    "p_value": m.p_value,
                    "detail": m.detail,
                }
                for m in self.metrics
            ],
        }


@dataclass(slots=True)
class _History:
    """What the two-sigma rule keeps per metric: the previous windows and the
    stable version's per-interval values."""

    stable: Proportion | Distribution | None = None
    canary: Proportion | Distribution | None = None
    baseline: list[float] = field(default_factory=list)


class Judge:
    """Compares a canary with the stable version once per analysis interval.

    Stateful: build one per rollout and call ``evaluate`` with cumulative
    windows, in order. ``reset()`` starts over (a new rollout).
    """

    def __init__(self, settings: JudgeSettings) -> None:
        self.settings = settings
        self._rates = settings.enabled_rates()
        self._distributions = settings.enabled_distributions()
        # Each metric fails at 1 / (its share of alpha): the shares add up to alpha.
        self._rate_threshold = {
            name: math.log(1.0 / settings.metric_alpha(m)) for name, m in self._rates.items()
        }
        self._distribution_threshold = {
            name: math.log(1.0 / settings.metric_alpha(m))
            for name, m in self._distributions.items()
        }
        self.reset()

    def reset(self) -> None:
        self._interval = 0
        self._consecutive = 0
        self._history: dict[str, _History] = {}

    def evaluate(self, stable: VersionWindow, canary: VersionWindow) -> Verdict:
        """The verdict of this interval, from cumulative windows of both versions."""
        self._interval += 1
        sequential = self.settings.method == "sequential"
        results: list[MetricResult] = []
        for name, rate in self._rates.items():
            s, c = stable.rates.get(name, _EMPTY), canary.rates.get(name, _EMPTY)
            if sequential:
                results.append(self._rate(name, rate, s, c))
            else:
                results.append(self._rate_two_sigma(name, rate, s, c))
        for name, dist in self._distributions.items():
            sd = stable.distributions.get(name)
            cd = canary.distributions.get(name)
            if sequential:
                results.append(self._distribution(name, dist, sd, cd))
            else:
                results.append(self._distribution_two_sigma(name, dist, sd, cd))
        outcome = _overall(results)
        self._consecutive = self._consecutive + 1 if outcome == "fail" else 0
        return Verdict(
            outcome=outcome,
            rollback=self._consecutive >= self.settings.consecutive_failures,
            metrics=tuple(results),
            interval=self._interval,
            consecutive_failures=self._consecutive,
            method=self.settings.method,
        )

    # --- sequential -------------------------------------------------------------

    def _rate(self, name: str, metric: RateMetric, s: Proportion, c: Proportion) -> MetricResult:
        stable_rate, canary_rate = _rate_of(s), _rate_of(c)
        if s.trials == 0 and c.trials == 0:
            return _no_data(name, "rate")
        short = _short_of_trials(s, c, metric.min_trials)
        if short:
            return MetricResult(
                name, "rate", "inconclusive", stable_rate, canary_rate, None, None, short
            )
        pooled = (min(s.events, s.trials) + min(c.events, c.trials)) / (s.trials + c.trials)
        expected = c.trials * min(pooled, 1.0 - pooled)
        estimate = proportion_harm(s, c, metric.tolerance)
        if expected < metric.min_expected_events:
            if estimate.theta <= 0.0:
                detail = f"no harm: {_counts(s, c)}"
                return MetricResult(
                    name, "rate", "pass", stable_rate, canary_rate, None, None, detail
                )
            detail = (
                f"too few events to judge ({expected:.1f} expected on the canary, "
                f"{metric.min_expected_events:g} needed): {_counts(s, c)}"
            )
            return MetricResult(
                name, "rate", "inconclusive", stable_rate, canary_rate, None, None, detail
            )
        log_lr = log_mixture_ratio(estimate, metric.mixture_sd)
        failed = log_lr >= self._rate_threshold[name]
        verdict = "worse than" if failed else "no evidence of worse than"
        detail = f"{verdict} stable + {metric.tolerance:g}: {_counts(s, c)}"
        return MetricResult(
            name,
            "rate",
            "fail" if failed else "pass",
            stable_rate,
            canary_rate,
            log_lr,
            _p_value(log_lr),
            detail,
        )

    def _distribution(
        self,
        name: str,
        metric: DistributionMetric,
        s: Distribution | None,
        c: Distribution | None,
    ) -> MetricResult:
        n_s, n_c = _count_of(s), _count_of(c)
        stable_median = bucket_quantile(s, 0.5) if s else None
        canary_median = bucket_quantile(c, 0.5) if c else None
        if n_s == 0 and n_c == 0:
            return _no_data(name, "distribution")
        if s is None or c is None or min(n_s, n_c) < metric.min_samples:
            detail = (
                f"too little data: {n_c} canary and {n_s} stable observations, "
                f"{metric.min_samples} needed on each side"
            )
            return MetricResult(
                name,
                "distribution",
                "inconclusive",
                stable_median,
                canary_median,
                None,
                None,
                detail,
            )
        estimate, worse, _, _ = rank_harm(s, c, harmful=metric.harmful, tolerance=metric.tolerance)
        log_lr = log_mixture_ratio(estimate, metric.mixture_sd)
        failed = log_lr >= self._distribution_threshold[name]
        detail = (
            f"P(canary {'higher' if metric.harmful == 'higher' else 'lower'}) = {worse:.3f}, "
            f"{'above' if failed else 'within'} 0.5 + {metric.tolerance:g}; "
            f"n = {n_c} canary / {n_s} stable"
        )
        return MetricResult(
            name,
            "distribution",
            "fail" if failed else "pass",
            stable_median,
            canary_median,
            log_lr,
            _p_value(log_lr),
            detail,
        )

    # --- the two-sigma rule -------------------------------------------------------

    def _rate_two_sigma(
        self, name: str, metric: RateMetric, s: Proportion, c: Proportion
    ) -> MetricResult:
        history = self._history.setdefault(name, _History())
        ds = _delta_rate(s, history.stable)
        dc = _delta_rate(c, history.canary)
        history.stable, history.canary = s, c
        if ds is not None and ds.trials > 0:
            history.baseline.append(ds.events / ds.trials)
        if s.trials == 0 and c.trials == 0:
            return _no_data(name, "rate")
        short = _short_of_trials(s, c, metric.min_trials)
        canary_value = dc.events / dc.trials if dc is not None and dc.trials > 0 else None
        return self._two_sigma(
            name, "rate", history.baseline, canary_value, short, harmful_higher=True
        )

    def _distribution_two_sigma(
        self,
        name: str,
        metric: DistributionMetric,
        s: Distribution | None,
        c: Distribution | None,
    ) -> MetricResult:
        history = self._history.setdefault(name, _History())
        ds = _delta_distribution(s, history.stable)
        dc = _delta_distribution(c, history.canary)
        history.stable, history.canary = s, c
        stable_mean = bucket_mean(ds) if ds is not None else None
        if stable_mean is not None:
            history.baseline.append(stable_mean)
        n_s, n_c = _count_of(s), _count_of(c)
        if n_s == 0 and n_c == 0:
            return _no_data(name, "distribution")
        short = ""
        if min(n_s, n_c) < metric.min_samples:
            short = (
                f"too little data: {n_c} canary and {n_s} stable observations, "
                f"{metric.min_samples} needed on each side"
            )
        canary_value = bucket_mean(dc) if dc is not None else None
        return self._two_sigma(
            name,
            "distribution",
            history.baseline,
            canary_value,
            short,
            harmful_higher=metric.harmful == "higher",
        )

    def _two_sigma(
        self,
        name: str,
        kind: Literal["rate", "distribution"],
        baseline: list[float],
        canary_value: float | None,
        short: str,
        *,
        harmful_higher: bool,
    ) -> MetricResult:
        mean = statistics.fmean(baseline) if baseline else None
        if short:
            return MetricResult(name, kind, "inconclusive", mean, canary_value, None, None, short)
        needed = self.settings.min_baseline_intervals
        if len(baseline) < needed or canary_value is None or mean is None:
            detail = (
                f"{len(baseline)} baseline intervals of {needed} needed"
                if len(baseline) < needed
                else "no canary data this interval"
            )
            return MetricResult(name, kind, "inconclusive", mean, canary_value, None, None, detail)
        sd = statistics.stdev(baseline)
        deviation = (canary_value - mean) if harmful_higher else (mean - canary_value)
        sigmas = deviation / sd if sd > 0 else (math.inf if deviation > 0 else 0.0)
        failed = sigmas > self.settings.sigmas
        detail = (
            f"canary interval {canary_value:.4g} vs baseline {mean:.4g} ± {sd:.3g} "
            f"({sigmas:+.2f} sd, limit {self.settings.sigmas:g})"
        )
        return MetricResult(
            name, kind, "fail" if failed else "pass", mean, canary_value, sigmas, None, detail
        )


def _overall(results: list[MetricResult]) -> Outcome:
    if any(r.outcome == "fail" for r in results):
        return "fail"
    if any(r.outcome == "inconclusive" and r.has_data for r in results):
        return "inconclusive"
    if any(r.outcome == "pass" for r in results):
        return "pass"
    return "inconclusive"


def _no_data(name: str, kind: Literal["rate", "distribution"]) -> MetricResult:
    return MetricResult(
        name,
        kind,
        "inconclusive",
        None,
        None,
        None,
        None,
        "no data on either version",
        has_data=False,
    )


def _short_of_trials(s: Proportion, c: Proportion, needed: int) -> str:
    if min(s.trials, c.trials) >= needed:
        return ""
    return (
        f"too little data: {c.trials} canary and {s.trials} stable trials, "
        f"{needed} needed on each side"
    )


def _rate_of(p: Proportion) -> float | None:
    return min(p.events, p.trials) / p.trials if p.trials > 0 else None


def _counts(s: Proportion, c: Proportion) -> str:
    return f"canary {c.events}/{c.trials}, stable {s.events}/{s.trials}"


def _count_of(d: Distribution | None) -> int:
    return d.cumulative[-1] if d is not None and d.cumulative else 0


def _p_value(log_lr: float) -> float:
    return 1.0 if log_lr <= 0 else math.exp(-log_lr)


def _delta_rate(now: Proportion, before: object) -> Proportion | None:
    if not isinstance(before, Proportion):
        return now
    events, trials = now.events - before.events, now.trials - before.trials
    if trials < 0 or events < 0:
        return None
    return Proportion(events, trials)


def _delta_distribution(now: Distribution | None, before: object) -> Distribution | None:
    if now is None:
        return None
    if not isinstance(before, Distribution):
        return now
    earlier = bucket_counts(before, now.bounds)
    current = bucket_counts(now, now.bounds)
    counts = [a - b for a, b in zip(current, earlier, strict=True)]
    if any(x < 0 for x in counts) or sum(counts) == 0:
        return None
    cumulative: list[int] = []
    running = 0
    for x in counts:
        running += x
        cumulative.append(running)
    return Distribution(now.bounds, tuple(cumulative))


def windows_of(
    version: str,
    rates: Mapping[str, tuple[int, int]],
    distributions: Mapping[str, Distribution] | None = None,
) -> VersionWindow:
    """A ``VersionWindow`` from ``{name: (events, trials)}`` (tests, the simulation)."""
    return VersionWindow(
        version=version,
        rates={name: Proportion(e, t) for name, (e, t) in rates.items()},
        distributions=dict(distributions or {}),
    )
