"""A run's LLM budget: no call starts that could take the run past `budget: {tokens, usd}`.

Before each call its worst case is reserved: the prompt's estimated tokens plus `max_tokens`,
priced from the config's price table. If the run's spending so far, plus the calls in flight,
plus this one could exceed the budget, the call is refused (a non-retryable step error) and the
run fails, rather than finding out afterwards. After the call the reservation is replaced by
the real usage. Keeping `spent` and `reserved` as running sums makes a check O(1).

A server that uses more tokens than the estimate (the prompt estimate is about 3 characters per
token) can take a run slightly past its budget on the last call; that is reported in the event
log (`budget:exceeded`) and every later call is refused, so it is never silent.

With `on_exceed: approve` the engine turns a refusal into a question to a person (see
`WorkflowManager._budget_approval`); an approved step is `allow`ed past the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from voltui.engine.errors import StepError
from voltui.engine.models import BudgetSpec, Usage
from voltui.engine.usage import Prices, cost_usd, price_for


class BudgetExceededError(StepError):
    """A call refused because it could take the run past its budget."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass
class Reservation:
    tokens: int
    usd: float


class RunBudget:
    """The spending of one run against its budget."""

    def __init__(self, spec: BudgetSpec, prices: Prices) -> None:
        self.spec = spec
        self._prices = prices
        self.spent_tokens = 0
        self.spent_usd = 0.0
        self._reserved_tokens = 0
        self._reserved_usd = 0.0
        self._allowed: set[str] = set()

    def allow(self, step_id: str) -> None:
        """A person approved spending past the budget for this step's calls (`on_exceed:
        approve`); they are still reserved and counted, so later steps see the spending."""
        self._allowed.add(step_id)

    def reserve(
        self, *, model: str, prompt_tokens: int, max_tokens: int, step_id: str
    ) -> Reservation:
        """Hold the worst case of one call, or raise BudgetExceededError saying why not."""
        tokens = prompt_tokens + max_tokens
        usd = 0.0
        if self.spec.usd is not None:
            price = price_for(model, self._prices)
            if price is None:
                raise BudgetExceededError(
                    f"step {step_id!r}: the run has a budget of ${self.spec.usd:g} but model "
                    f"{model!r} has no price, so its cost cannot be kept within it; add "
                    f'[llm.prices."{model}"] input_per_1m = ..., output_per_1m = ... to the config'
                )
            usd = cost_usd(prompt_tokens, max_tokens, price)
        if step_id in self._allowed:
            self._reserved_tokens += tokens
            self._reserved_usd += usd
            return Reservation(tokens, usd)
        if self.spec.tokens is not None:
            would = self.spent_tokens + self._reserved_tokens + tokens
            if would > self.spec.tokens:
                raise BudgetExceededError(
                    f"step {step_id!r} refused: this call could use up to {tokens:,} tokens "
                    f"(prompt about {prompt_tokens:,} + max_tokens {max_tokens:,}); the run has "
                    f"used {self.spent_tokens:,} and {self._reserved_tokens:,} are in flight, "
                    f"which could exceed its budget of {self.spec.tokens:,} tokens"
                )
        if self.spec.usd is not None:
            would_usd = self.spent_usd + self._reserved_usd + usd
            if would_usd > self.spec.usd:
                raise BudgetExceededError(
                    f"step {step_id!r} refused: this call could cost up to ${usd:.6f}; the run "
                    f"has spent ${self.spent_usd:.6f} and ${self._reserved_usd:.6f} is in "
                    f"flight, which could exceed its budget of ${self.spec.usd:g}"
                )
        self._reserved_tokens += tokens
        self._reserved_usd += usd
        return Reservation(tokens, usd)

    def settle(self, reservation: Reservation, actual: Usage | None) -> bool:
        """Replace a reservation by what the call really used (None: it used nothing).

        Returns True when the run is now over its budget (the estimate was too low)."""
        self._reserved_tokens -= reservation.tokens
        self._reserved_usd -= reservation.usd
        if actual is not None:
            self.spent_tokens += actual.total_tokens
            self.spent_usd += actual.cost_usd
        return self.over

    @property
    def over(self) -> bool:
        return (self.spec.tokens is not None and self.spent_tokens > self.spec.tokens) or (
            self.spec.usd is not None and self.spent_usd > self.spec.usd
        )
