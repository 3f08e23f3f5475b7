"""The statistics of the canary judge: sequential tests that stay valid when looked at often.

A rollout looks at its verdict every analysis interval. A fixed-sample test
repeated each minute fails a healthy canary sooner or later; these tests do
not. Both reduce to one estimate ``theta`` of the harm (canary worse than
stable, minus the tolerance) with its variance ``V``, asymptotically normal,
and a one-sided normal-mixture sequential probability ratio test (mSPRT) on it:

    Lambda = integral over theta' > 0 of  N(estimate; theta', V) / N(estimate; 0, V)
             under a half-normal mixing density of scale tau

Under "no harm beyond the tolerance", ``Lambda`` is (asymptotically) a
nonnegative supermartingale, so by Ville's inequality the chance that it ever
reaches ``1/alpha``, however often it is computed, is at most ``alpha``
(Johari, Pekelis and Walsh, "Always valid inference", 2017/2022; Robbins'
normal mixture). ``1/Lambda`` is the interval's always-valid p-value.

- Rates (``proportion_harm``): the difference of two proportions, the
  variance taken at the null boundary (pooled rate, shifted by the tolerance).
- Continuous metrics (``rank_harm``): the Mann-Whitney probability that a
  canary observation is worse than a stable one, from histogram buckets (each
  bucket a group of ties, with the tie-corrected variance).

Pure functions over counts; no third-party numerics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agentkeel.deploy.types import Distribution, Proportion

__all__ = [
    "Estimate",
    "bucket_counts",
    "bucket_mean",
    "bucket_quantile",
    "common_buckets",
    "log_mixture_ratio",
    "normal_cdf",
    "proportion_harm",
    "rank_harm",
]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True, slots=True)
class Estimate:
    """An estimate of harm beyond the tolerance (> 0: harmful) and its variance."""

    theta: float
    variance: float


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _log_normal_cdf(z: float) -> float:
    if z > -30.0:
        return math.log(max(normal_cdf(z), 1e-300))
    # Mills ratio: the tail far below underflows a direct computation.
    return -0.5 * z * z - math.log(-z) - _LOG_SQRT_2PI


def log_mixture_ratio(estimate: Estimate, tau: float) -> float:
    """log Lambda of the one-sided (harmful side only) normal-mixture SPRT.

    ``tau`` is the scale of the half-normal mixing density: the size of harm the
    test finds fastest. A zero variance carries no evidence (log Lambda = 0).
    """
    v = estimate.variance
    if not v > 0.0 or not math.isfinite(v):
        return 0.0
    t2 = tau * tau
    theta = estimate.theta
    z = theta * tau / math.sqrt(v * (v + t2))
    # ln 2 + 1/2 ln(V / (V + tau^2)) + z^2 / 2 + ln Phi(z); written so that the
    # z^2 / 2 and the Gaussian tail of Phi cancel for a very negative theta.
    tail = 0.5 * z * z + _log_normal_cdf(z) if z > -30.0 else -math.log(-z) - _LOG_SQRT_2PI
    return math.log(2.0) + 0.5 * math.log(v / (v + t2)) + tail


def proportion_harm(stable: Proportion, canary: Proportion, tolerance: float) -> Estimate:
    """How far the canary's event rate exceeds the stable one's plus ``tolerance``.

    The variance is taken at the closest point of the null (canary = stable +
    tolerance) that keeps the pooled number of events, which keeps the test honest
    when one side has seen few events.
    """
    n_c, n_s = canary.trials, stable.trials
    if n_c <= 0 or n_s <= 0:
        return Estimate(0.0, 0.0)
    x_c, x_s = min(canary.events, n_c), min(stable.events, n_s)
    total = n_c + n_s
    pooled = (x_c + x_s) / total
    p_s = _clamp(pooled - tolerance * n_c / total)
    p_c = _clamp(p_s + tolerance)
    variance = p_c * (1.0 - p_c) / n_c + p_s * (1.0 - p_s) / n_s
    return Estimate(x_c / n_c - x_s / n_s - tolerance, variance)


def _clamp(p: float) -> float:
    return min(max(p, 1e-9), 1.0 - 1e-9)


def common_buckets(
    a: Distribution, b: Distribution
) -> tuple[tuple[float, ...], list[int], list[int]]:
    """Both histograms over the bounds they share (``inf`` always), as per-bucket counts.

    Versions usually share their buckets; when one changed them, comparing over
    the shared bounds is the finest comparison both support.
    """
    shared = sorted((set(a.bounds) & set(b.bounds)) | {math.inf})
    return tuple(shared), bucket_counts(a, shared), bucket_counts(b, shared)


def bucket_counts(dist: Distribution, bounds: Sequence[float]) -> list[int]:
    """Per-bucket counts of ``dist`` over ``bounds`` (a subset of its own bounds plus inf)."""
    cumulative_at = dict(zip(dist.bounds, dist.cumulative, strict=False))
    total = dist.cumulative[-1] if dist.cumulative else 0
    counts: list[int] = []
    previous = 0
    for bound in bounds:
        at = total if math.isinf(bound) else cumulative_at.get(bound, previous)
        counts.append(max(at - previous, 0))
        previous = max(at, previous)
    return counts


def rank_harm(
    stable: Distribution, canary: Distribution, *, harmful: str, tolerance: float
) -> tuple[Estimate, float, int, int]:
    """The Mann-Whitney effect from buckets: (estimate, P(canary worse), n_stable, n_canary).

    P(canary worse) counts ties (the same bucket) half, so 0.5 is "no difference";
    the estimate is that probability minus 0.5 minus ``tolerance`` in the harmful
    direction, with the tie-corrected variance of the rank statistic.
    """
    _, s_counts, c_counts = common_buckets(stable, canary)
    n_s, n_c = sum(s_counts), sum(c_counts)
    if n_s == 0 or n_c == 0:
        return Estimate(0.0, 0.0), 0.5, n_s, n_c
    u = 0.0  # pairs where the canary is higher, ties half
    below = 0
    ties = 0.0
    for s, c in zip(s_counts, c_counts, strict=True):
        u += c * (below + 0.5 * s)
        below += s
        t = s + c
        ties += t * t * t - t
    pairs = n_s * n_c
    higher = u / pairs
    n = n_s + n_c
    var_u = pairs / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    variance = max(var_u, 0.0) / (pairs * pairs)
    worse = higher if harmful == "higher" else 1.0 - higher
    return Estimate(worse - 0.5 - tolerance, variance), worse, n_s, n_c


def bucket_quantile(dist: Distribution, q: float) -> float | None:
    """The ``q`` quantile, interpolated linearly inside its bucket (Prometheus'
    ``histogram_quantile``); None when empty."""
    if not dist.cumulative or dist.cumulative[-1] <= 0:
        return None
    rank = q * dist.cumulative[-1]
    lower, below = 0.0, 0
    for bound, cumulative in zip(dist.bounds, dist.cumulative, strict=False):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            fraction = (rank - below) / inside if inside else 1.0
            return lower + (bound - lower) * fraction
        lower, below = bound, cumulative
    return lower


def bucket_mean(dist: Distribution) -> float | None:
    """The mean from bucket midpoints (the last finite bound for the ``inf`` bucket)."""
    total = dist.cumulative[-1] if dist.cumulative else 0
    if total <= 0:
        return None
    finite = [b for b in dist.bounds if not math.isinf(b)]
    lower, below, acc = 0.0, 0, 0.0
    for bound, cumulative in zip(dist.bounds, dist.cumulative, strict=False):
        inside = cumulative - below
        mid = (finite[-1] if finite else 0.0) if math.isinf(bound) else (lower + bound) / 2
        acc += inside * mid
        if not math.isinf(bound):
            lower = bound
        below = cumulative
    return acc / total
