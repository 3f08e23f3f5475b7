"""Where the judge's figures come from: the replicas' ``/metrics`` or Prometheus.

Both sources implement ``MetricsSource`` (``deploy/types.py``): ``read(version)``
returns that version's ``VersionWindow``, cumulative since ``start()`` took the
baseline. Which metric families form which rate or distribution comes from
``JudgeSettings`` (``rates``, ``distributions``), declared once for both.

- ``ReplicaScrapeSource`` scrapes every replica of a version over HTTP, sums
  across replicas, and follows each series on each replica so a replica that
  restarts (its counters drop to zero) loses nothing it had counted.
- ``PrometheusSource`` asks Prometheus' HTTP API (``/api/v1/query``) with the
  PromQL of each metric, ``{version}`` standing for the version, so the same
  analysis runs on a Prometheus a team already has.

>>> source = ReplicaScrapeSource(
...     replica_urls_by_version=router_replicas, settings=settings.rollout.judge)
>>> await source.start()
>>> window = await source.read("v2")
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agentkeel.config.judge import JudgeSettings
from agentkeel.deploy.selectors import Selector, parse_selectors, promql_string
from agentkeel.deploy.types import Distribution, Proportion, VersionWindow
from agentkeel.errors import ConfigError, Unavailable
from agentkeel.telemetry.http import make_async_client

__all__ = [
    "JudgeQueries",
    "PrometheusSource",
    "ReplicaScrapeSource",
    "ReplicasByVersion",
    "queries_for",
]

logger = logging.getLogger(__name__)

ReplicasByVersion = Callable[
    [], Mapping[str, Sequence[str]] | Awaitable[Mapping[str, Sequence[str]]]
]
"""Every version's replica base URLs now (the router's table, or the driver's list)."""

_Labels = tuple[tuple[str, str], ...]


def _metrics_unavailable(message: str) -> Unavailable:
    return Unavailable(message, retry_after=5.0, code="metrics_unavailable")


@dataclass(frozen=True, slots=True)
class _RatePlan:
    events: tuple[Selector, ...]
    trials: tuple[Selector, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    """The judge's metrics as selectors (``_bucket`` added to histograms)."""

    rates: dict[str, _RatePlan]
    distributions: dict[str, Selector]

    @classmethod
    def of(cls, settings: JudgeSettings) -> _Plan:
        return cls(
            rates={
                name: _RatePlan(parse_selectors(m.events), parse_selectors(m.trials))
                for name, m in settings.enabled_rates().items()
            },
            distributions={
                name: parse_selectors([m.histogram])[0].with_suffix("_bucket")
                for name, m in settings.enabled_distributions().items()
            },
        )

    def names(self) -> set[str]:
        names = {s.name for plan in self.rates.values() for s in (*plan.events, *plan.trials)}
        return names | {s.name for s in self.distributions.values()}


# --- replicas --------------------------------------------------------------------


@dataclass(slots=True)
class _Series:
    """One series on one replica: counted = offset + last - base."""

    base: float
    last: float
    offset: float = 0.0

    def see(self, value: float) -> None:
        if value < self.last:
            # The replica restarted: keep what it had counted since the baseline.
            self.offset += self.last - self.base
            self.base = 0.0
        self.last = value

    @property
    def counted(self) -> float:
        return self.offset + self.last - self.base


@dataclass(slots=True)
class _Replica:
    series: dict[tuple[str, _Labels], _Series] = field(default_factory=dict)


class ReplicaScrapeSource:
    """Per-version figures from each replica's ``/metrics``, summed across replicas.

    ``replica_urls_by_version`` returns every version's replica URLs (sync or async), asked on
    every read, so replicas added during a rollout are followed. ``start()``
    scrapes every replica once: what they had counted by then is the baseline.
    A replica first seen later counts from zero; one that is gone keeps what it
    had counted; one that does not answer a read keeps its last figures (and is
    logged). Every replica of the version failing raises ``Unavailable``.
    """

    def __init__(
        self,
        *,
        replica_urls_by_version: ReplicasByVersion,
        settings: JudgeSettings,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 5.0,
        path: str = "/metrics",
    ) -> None:
        self._replicas = replica_urls_by_version
        self._plan = _Plan.of(settings)
        self._names = self._plan.names()
        self._client = client or make_async_client(timeout=timeout_s)
        self._owns_client = client is None
        self._path = path
        self._state: dict[str, _Replica] = {}
        self._members: dict[str, set[str]] = {}
        self._started = False

    async def start(self) -> None:
        """Take the baseline: every replica's figures now count as zero."""
        by_version = await self._current()
        urls = sorted({url for urls in by_version.values() for url in urls})
        scraped = await asyncio.gather(*(self._scrape(url) for url in urls))
        for url, samples in zip(urls, scraped, strict=True):
            if samples is None:
                continue
            self._state[url] = _Replica(
                {key: _Series(base=value, last=value) for key, value in samples.items()}
            )
        for version, version_urls in by_version.items():
            self._members.setdefault(version, set()).update(version_urls)
        self._started = True

    async def read(self, version: str) -> VersionWindow:
        if not self._started:
            await self.start()
        current = list((await self._current()).get(version, ()))
        members = self._members.setdefault(version, set())
        members.update(current)
        scraped = await asyncio.gather(*(self._scrape(url) for url in current))
        answered = 0
        for url, samples in zip(current, scraped, strict=True):
            if samples is None:
                continue
            answered += 1
            replica = self._state.setdefault(url, _Replica())
            for key, value in samples.items():
                series = replica.series.get(key)
                if series is None:
                    replica.series[key] = _Series(base=0.0, last=value)
                else:
                    series.see(value)
        if current and not answered:
            raise _metrics_unavailable(
                f"No replica of version {version!r} answered GET {self._path} "
                f"({', '.join(current)}); check that they run and that the router's table "
                "names the right URLs."
            )
        return self._window(version, [self._state[u] for u in sorted(members) if u in self._state])

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _current(self) -> Mapping[str, Sequence[str]]:
        result = self._replicas()
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _scrape(self, url: str) -> dict[tuple[str, _Labels], float] | None:
        target = url.rstrip("/") + self._path
        try:
            response = await self._client.get(target)
            response.raise_for_status()
            families = list(text_string_to_metric_families(response.text))
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning(
                "cannot read %s for the canary judge (%s); keeping its last figures",
                target,
                exc,
                extra={"event": "judge"},
            )
            return None
        samples: dict[tuple[str, _Labels], float] = {}
        for family in families:
            for sample in family.samples:
                if sample.name in self._names:
                    samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def _window(self, version: str, replicas: Sequence[_Replica]) -> VersionWindow:
        def total(selectors: Iterable[Selector]) -> int:
            acc = 0.0
            for selector in selectors:
                for replica in replicas:
                    for (name, labels), series in replica.series.items():
                        if name == selector.name and selector.matches(dict(labels)):
                            acc += series.counted
            return round(acc)

        rates = {
            name: Proportion(total(plan.events), total(plan.trials))
            for name, plan in self._plan.rates.items()
        }
        distributions: dict[str, Distribution] = {}
        for name, selector in self._plan.distributions.items():
            by_bound: dict[float, float] = {}
            for replica in replicas:
                for (sample, labels), series in replica.series.items():
                    label_map = dict(labels)
                    if sample != selector.name or "le" not in label_map:
                        continue
                    if not selector.matches(label_map):
                        continue
                    bound = float(label_map["le"])
                    by_bound[bound] = by_bound.get(bound, 0.0) + series.counted
            if by_bound:
                distributions[name] = _distribution(by_bound)
        return VersionWindow(version=version, rates=rates, distributions=distributions)


def _distribution(by_bound: Mapping[float, float]) -> Distribution:
    """Cumulative bucket counts by upper bound, made monotone (sums of rounded parts can
    dip by one) and closed with ``inf``."""
    bounds = sorted(by_bound)
    cumulative: list[int] = []
    running = 0
    for bound in bounds:
        running = max(running, round(by_bound[bound]))
        cumulative.append(running)
    if not bounds or not math.isinf(bounds[-1]):
        bounds.append(math.inf)
        cumulative.append(running)
    return Distribution(tuple(bounds), tuple(cumulative))


# --- Prometheus ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JudgeQueries:
    """The PromQL of every judge metric; ``{version}`` stands for the version's name.

    A rate's two queries return one or more series (summed after each series'
    restarts are bridged); a distribution's query returns cumulative bucket counts
    with an ``le`` label.
    """

    rates: Mapping[str, tuple[str, str]]
    distributions: Mapping[str, str]


def queries_for(settings: JudgeSettings) -> JudgeQueries:
    """The queries of ``settings``: a metric's own ``*_query`` where it has one, else
    its selectors with ``version="{version}"`` added, every series apart."""
    label = settings.prometheus.version_label
    extra = {label: "{version}"}

    # Every series on its own (no sum): the source bridges a restart per series, so a
    # replica that restarts loses at most what it counted since the previous read.
    def series(texts: Sequence[str]) -> str:
        return " or ".join(s.promql(extra) for s in parse_selectors(texts))

    rates = {
        name: (m.events_query or series(m.events), m.trials_query or series(m.trials))
        for name, m in settings.enabled_rates().items()
    }
    distributions = {
        name: m.query or parse_selectors([m.histogram])[0].with_suffix("_bucket").promql(extra)
        for name, m in settings.enabled_distributions().items()
    }
    return JudgeQueries(rates=rates, distributions=distributions)


# (metric, "events" | "trials" | le, the series' labels): one series of one query.
_SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]


def _series(labels: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


@dataclass(slots=True)
class _Counted:
    """One query's value across reads: baseline subtracted, drops (restarts) bridged."""

    base: float
    last: float
    offset: float = 0.0

    def see(self, value: float) -> float:
        if value < self.last:
            self.offset += self.last - self.base
            self.base = 0.0
        self.last = value
        return self.offset + self.last - self.base


class PrometheusSource:
    """Per-version figures from Prometheus' HTTP API (``GET /api/v1/query``).

    ``start(versions)`` takes the baseline of those versions (default: every
    value of the version label Prometheus knows, ``/api/v1/label/<label>/values``);
    a version read later without one counts from zero. The queries return
    cumulative counts, every series apart; when a series drops (its replica
    restarted) the source bridges that series alone, which loses at most what
    that replica counted since the previous read. A query of your own that sums
    is bridged as one series, so keep the sum out of it where you can. Prometheus
    unreachable or answering an error raises ``Unavailable``.
    """

    def __init__(
        self,
        *,
        url: str,
        queries: JudgeQueries,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 10.0,
        version_label: str = "version",
    ) -> None:
        self.url = url.rstrip("/")
        self._queries = queries
        self._client = client or make_async_client(timeout=timeout_s)
        self._owns_client = client is None
        self._label = version_label
        self._counted: dict[tuple[str, _SeriesKey], _Counted] = {}

    @classmethod
    def from_settings(
        cls, settings: JudgeSettings, *, client: httpx.AsyncClient | None = None
    ) -> PrometheusSource:
        if not settings.prometheus.url:
            raise ConfigError(
                "rollout.judge.prometheus.url is not set; name the Prometheus to read, e.g. "
                "http://127.0.0.1:9090, or use the replica scrape source."
            )
        return cls(
            url=settings.prometheus.url,
            queries=queries_for(settings),
            client=client,
            timeout_s=settings.prometheus.timeout_s,
            version_label=settings.prometheus.version_label,
        )

    async def start(self, versions: Sequence[str] | None = None) -> None:
        """Take the baseline of ``versions`` (default: every version Prometheus knows)."""
        names = list(versions) if versions is not None else await self._known_versions()
        for version in names:
            for key, value in (await self._values(version)).items():
                self._counted[(version, key)] = _Counted(base=value, last=value)

    async def read(self, version: str) -> VersionWindow:
        values = await self._values(version)
        counted: dict[tuple[str, str], float] = {}
        for key, value in values.items():
            state = self._counted.get((version, key))
            if state is None:
                state = self._counted[(version, key)] = _Counted(base=0.0, last=0.0)
            metric, part, _ = key
            counted[(metric, part)] = counted.get((metric, part), 0.0) + state.see(value)
        rates = {
            name: Proportion(
                round(counted.get((name, "events"), 0.0)),
                round(counted.get((name, "trials"), 0.0)),
            )
            for name in self._queries.rates
        }
        distributions: dict[str, Distribution] = {}
        for name in self._queries.distributions:
            by_bound = {
                float(part): value
                for (metric, part), value in counted.items()
                if metric == name and part not in ("events", "trials")
            }
            if by_bound:
                distributions[name] = _distribution(by_bound)
        return VersionWindow(version=version, rates=rates, distributions=distributions)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _values(self, version: str) -> dict[_SeriesKey, float]:
        """Every series' value now: (metric, "events"|"trials"|le, series labels) -> value."""
        jobs: list[tuple[str, str, str]] = []
        for name, (events, trials) in self._queries.rates.items():
            jobs += [(name, "events", events), (name, "trials", trials)]
        for name, query in self._queries.distributions.items():
            jobs.append((name, "le", query))
        answers = await asyncio.gather(
            *(self._query(_with_version(query, version)) for _, _, query in jobs)
        )
        values: dict[_SeriesKey, float] = {}
        for (name, part, _), result in zip(jobs, answers, strict=True):
            for item in result:
                labels = item.get("metric", {})
                if part == "le":
                    le = labels.get("le")
                    if le is None:
                        continue
                    key = (name, str(float(le)), _series(labels))
                else:
                    key = (name, part, _series(labels))
                values[key] = values.get(key, 0.0) + _value_of(item)
        return values

    async def _query(self, query: str) -> list[dict[str, Any]]:
        data = await self._get("/api/v1/query", {"query": query})
        result_type = data.get("resultType")
        result = data.get("result")
        if result_type == "scalar" and isinstance(result, list):
            return [{"metric": {}, "value": result}]
        if result_type != "vector" or not isinstance(result, list):
            raise _metrics_unavailable(
                f"Prometheus at {self.url} answered {query!r} with a {result_type!r} result; "
                "the judge needs an instant vector (one sample, or one per 'le')."
            )
        return result

    async def _known_versions(self) -> list[str]:
        data = await self._get(f"/api/v1/label/{self._label}/values", {})
        return [str(v) for v in data] if isinstance(data, list) else []

    async def _get(self, path: str, params: Mapping[str, str]) -> Any:
        try:
            response = await self._client.get(self.url + path, params=dict(params))
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise _metrics_unavailable(
                f"Prometheus at {self.url} cannot be read ({exc}); check "
                "rollout.judge.prometheus.url and that Prometheus runs."
            ) from exc
        if response.status_code != 200 or body.get("status") != "success":
            error = body.get("error", response.reason_phrase) if isinstance(body, dict) else ""
            raise _metrics_unavailable(
                f"Prometheus at {self.url} refused {dict(params) or path} "
                f"(HTTP {response.status_code}: {error}); check the judge's queries."
            )
        return body.get("data")


def _with_version(query: str, version: str) -> str:
    """``{version}`` replaced by the version, escaped for a PromQL string literal."""
    return query.replace("{version}", promql_string(version)[1:-1])


def _value_of(item: Mapping[str, Any]) -> float:
    value = item.get("value")
    try:
        number = float(value[1]) if isinstance(value, list) and len(value) == 2 else 0.0
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0
