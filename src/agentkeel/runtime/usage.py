"""Usage and spend: what each settled model call cost, kept in the store per UTC day.

After every model call ``GuardedModel`` hands the call to the turn's
``UsageMeter``, which prices it and writes one ``UsageRecord`` through a
``UsageRecorder`` (the session store: a ``token_usage`` row per UTC day,
organization, user, agent, model and key link, added to). Prices come from the
turn's price table (``pricing``, live): the model the provider reported, then
the provider's configured ``models[].model``, then the provider's name. A model
without a price counts its tokens and 0 spend, with one warning per model and
``agent_unpriced_calls_total``.

Only calls served with the platform's key cost the platform anything: a call
made with the user's own key (``byok``) or the organization's (``org``) counts
toward the user's usage and quotas, never toward spend.

``UsageReader`` is the other side: the top users of a window, one user's usage
by day and model and an organization's totals, for ``GET /admin/usage`` and
``keel usage`` (``usage_report.py``).

>>> meter = UsageMeter(recorder=store, metrics=quota_metrics, clock=clock,
...                    agent_id="support", provider_models={"openai": "gpt-4o-mini"})
>>> await meter.record(response, charged=response.usage, user_id="ana", organization="acme",
...                    pricing=turn.pricing)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agentkeel.config.quotas import ModelPrice
from agentkeel.errors import KeelError
from agentkeel.models.types import ModelResponse, Usage
from agentkeel.resilience.clock import Clock
from agentkeel.resilience.windows import utc_day
from agentkeel.telemetry.metrics import QuotaMetrics

logger = logging.getLogger("agentkeel.runtime.usage")

PLATFORM_LINK = "platform"
"""The key link whose calls the platform pays for; every other link (``byok``, ``org``)
is the caller's own key."""


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One settled model call, as it is added to its usage row."""

    day: str
    """The UTC day, ``YYYY-MM-DD``."""
    user_id: str
    organization: str | None
    agent_id: str
    model: str
    key_link: str
    """Which key served the call: ``platform``, ``byok`` or ``org``."""
    input_tokens: int
    output_tokens: int
    spend: float
    """Dollars; 0 for a call made with the caller's own key or a model without a price."""


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Tokens, calls and spend summed over usage rows."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    spend: float = 0.0
    byok_tokens: int = 0
    """Tokens of calls served with the user's or organization's own key (in the totals
    too, never in spend)."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_json(self) -> dict[str, int | float]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "calls": self.calls,
            "spend": round(self.spend, 6),
            "byok_tokens": self.byok_tokens,
        }

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            calls=self.calls + other.calls,
            spend=self.spend + other.spend,
            byok_tokens=self.byok_tokens + other.byok_tokens,
        )


@dataclass(frozen=True, slots=True)
class UserUsage:
    """One user's totals over a window (``UsageReader.top_users``)."""

    user_id: str
    organization: str | None
    totals: UsageTotals


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One user's totals for one UTC day and model (``UsageReader.user_usage``)."""

    day: str
    model: str
    totals: UsageTotals


@runtime_checkable
class UsageRecorder(Protocol):
    """Where settled calls are added up (every built-in session store is one)."""

    async def record_usage(self, record: UsageRecord) -> None: ...


@runtime_checkable
class UsageReader(Protocol):
    """Usage as the admin API and ``keel usage`` read it; days are ``YYYY-MM-DD``, both
    ends included. ``organization=None`` in ``top_users`` means every organization; in
    ``user_usage`` it means the user without one."""

    async def top_users(
        self, *, first_day: str, last_day: str, limit: int, organization: str | None = None
    ) -> list[UserUsage]: ...

    async def user_usage(
        self, user_id: str, *, organization: str | None, first_day: str, last_day: str
    ) -> list[DailyUsage]: ...

    async def organization_usage(
        self, organization: str, *, first_day: str, last_day: str
    ) -> UsageTotals: ...


class UsageMeter:
    """Prices each settled model call, counts its spend and BYOK tokens, and records it.

    ``provider_models`` maps each provider's name to its configured ``models[].model``
    (the second place a price is looked up); ``pricing`` is the price table used when a
    call brings none (no live settings). A recorder that fails is logged, never raised:
    the call already happened and its tokens are settled on the quotas.
    """

    def __init__(
        self,
        *,
        recorder: UsageRecorder | None,
        metrics: QuotaMetrics,
        clock: Clock,
        agent_id: str,
        provider_models: Mapping[str, str] | None = None,
        pricing: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self._recorder = recorder
        self._metrics = metrics
        self._clock = clock
        self._agent_id = agent_id
        self._provider_models = dict(provider_models or {})
        self._pricing = dict(pricing or {})
        self._unpriced_warned: set[str] = set()

    def price_for(
        self, response: ModelResponse, pricing: Mapping[str, ModelPrice] | None = None
    ) -> ModelPrice | None:
        """The price of the call's model: by the reported model, the provider's configured
        model, then the provider's name; ``None`` when the table has none of them."""
        table = self._pricing if pricing is None else pricing
        for name in _price_names(response, self._provider_models):
            price = table.get(name)
            if price is not None:
                return price
        return None

    async def record(
        self,
        response: ModelResponse,
        *,
        charged: Usage,
        user_id: str,
        organization: str | None,
        pricing: Mapping[str, ModelPrice] | None = None,
    ) -> UsageRecord:
        """Price the call (``charged``: the tokens settled for it), count it and add it to
        its usage row. Returns what was recorded."""
        model = response.model or response.provider or "unknown"
        link = response.key_link or PLATFORM_LINK
        spend = 0.0
        if link == PLATFORM_LINK:
            price = self.price_for(response, pricing)
            if price is None:
                self._unpriced(model)
            else:
                spend = price.cost(charged.input_tokens, charged.output_tokens)
                if spend:
                    self._metrics.spend_for(model, self._agent_id).inc(spend)
        else:
            for kind, tokens in (
                ("input", charged.input_tokens),
                ("output", charged.output_tokens),
            ):
                if tokens:
                    self._metrics.byok_tokens_for(model, kind, link, self._agent_id).inc(tokens)
        record = UsageRecord(
            day=utc_day(self._clock.time()),
            user_id=user_id,
            organization=organization,
            agent_id=self._agent_id,
            model=model,
            key_link=link,
            input_tokens=charged.input_tokens,
            output_tokens=charged.output_tokens,
            spend=spend,
        )
        if self._recorder is not None:
            try:
                await self._recorder.record_usage(record)
            except KeelError as exc:
                logger.warning(
                    "usage of a %s call was not recorded (%s); the quotas counted it, the "
                    "usage table and keel usage will show less",
                    model,
                    exc.message,
                    extra={"event": "usage", "agent_id": self._agent_id},
                )
        return record

    def _unpriced(self, model: str) -> None:
        self._metrics.unpriced_for(model).inc()
        if model in self._unpriced_warned:
            return
        self._unpriced_warned.add(model)
        logger.warning(
            "no price for model %s: its calls count tokens and 0 spend. Add it to pricing: "
            "(model name -> input_per_million, output_per_million)",
            model,
            extra={"event": "usage", "agent_id": self._agent_id},
        )


def _price_names(response: ModelResponse, provider_models: Mapping[str, str]) -> Sequence[str]:
    names = [response.model]
    configured = provider_models.get(response.provider)
    if configured:
        names.append(configured)
    names.append(response.provider)
    return [name for name in dict.fromkeys(names) if name]
