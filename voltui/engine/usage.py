"""LLM token usage and cost: pricing from the config's price table, and running totals.

Prices are per model and per million tokens, input and output apart, as providers publish them
(`[llm.prices."gpt-4o-mini"] input_per_1m = 0.15, output_per_1m = 0.60`). Totals are kept
incrementally: recording one call costs O(1), whatever the number of runs and steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from voltui.engine.models import Usage

Prices = Mapping[str, Mapping[str, float]]
"""model -> {"input_per_1m": USD, "output_per_1m": USD}."""


def price_for(model: str | None, prices: Prices, *also: str | None) -> Mapping[str, float] | None:
    """The price entry of the first of `model`, `*also` that the table knows."""
    for name in (model, *also):
        if name and name in prices:
            return prices[name]
    return None


def format_usage(usage: Usage | None, *, short: bool = False) -> str:
    """The one rendering of LLM usage for every view: `12,345 tok $0.0123` (`short`: the cost
    alone, or the tokens when nothing is priced); a `+` marks a cost that leaves out calls to
    models without a price. Empty when no call was made."""
    if usage is None or not usage.calls:
        return ""
    more = "" if usage.priced else "+"
    cost = f"${usage.cost_usd:.4f}{more}" if usage.cost_usd or usage.priced else ""
    if short:
        return cost or f"{usage.total_tokens:,} tok"
    return f"{usage.total_tokens:,} tok {cost}".rstrip()


def cost_usd(prompt_tokens: int, completion_tokens: int, price: Mapping[str, float]) -> float:
    """Dollars for that many input and output tokens at `price`."""
    return (
        prompt_tokens * float(price.get("input_per_1m", 0.0))
        + completion_tokens * float(price.get("output_per_1m", 0.0))
    ) / 1_000_000


def make_usage(
    raw: Mapping[str, Any] | None, model: str, prices: Prices, *served: str | None
) -> Usage:
    """One call's `Usage` from an OpenAI-style `usage` object (missing counts are 0)."""
    raw = raw or {}
    prompt = _count(raw.get("prompt_tokens"))
    completion = _count(raw.get("completion_tokens"))
    price = price_for(model, prices, *served)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        calls=1,
        model=model,
        cost_usd=cost_usd(prompt, completion, price) if price is not None else 0.0,
        priced=price is not None,
    )


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A rough upper estimate of a prompt's tokens (about 3 characters per token, plus a few
    per message), for rate limits and budgets before the call; the real count replaces it."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 3 + 4 * len(messages) + 3


def _count(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


class UsageTotals(BaseModel):
    """Tokens and cost since the engine started, by agent and by model."""

    total: Usage = Field(default_factory=Usage)
    by_agent: dict[str, Usage] = Field(default_factory=dict)
    by_model: dict[str, Usage] = Field(default_factory=dict)


class UsageLedger:
    """Running totals of every LLM call this engine made (per run totals live on the run)."""

    def __init__(self) -> None:
        self._totals = UsageTotals()

    def record(self, agent_id: str | None, usage: Usage) -> None:
        totals = self._totals
        totals.total = totals.total.plus(usage)
        if agent_id:
            totals.by_agent[agent_id] = totals.by_agent.get(agent_id, Usage()).plus(usage)
        model = usage.model or "?"
        totals.by_model[model] = totals.by_model.get(model, Usage()).plus(usage)

    def totals(self) -> UsageTotals:
        return self._totals.model_copy(deep=True)
