"""What a run, a turn or a session used: tokens, calls and exact cost."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

__all__ = ["Usage"]


class Usage(BaseModel):
    """What a run (or a turn) used. Sums are exact (Usage.add is the one way to sum).

    `cost_usd` is the exact cost of the priced model calls (a Decimal; a string in JSON),
    None while no call was priced. A model call that reported tokens but has no known price
    is counted in `unpriced_calls` instead: a sum is the cost of its known part plus how many
    calls are not in it, never a guessed zero. `cached_tokens` are part of `prompt_tokens`,
    `reasoning_tokens` part of `completion_tokens`. Fields after `turns` were added later and
    default, so older histories decode."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_calls: int = 0
    tool_calls: int = 0
    turns: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal | None = None
    unpriced_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> Usage:
        costs = [c for c in (self.cost_usd, other.cost_usd) if c is not None]
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            llm_calls=self.llm_calls + other.llm_calls,
            tool_calls=self.tool_calls + other.tool_calls,
            turns=self.turns + other.turns,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
            # Decimal addition is exact for these sizes (28 significant digits by default).
            cost_usd=sum(costs, Decimal(0)) if costs else None,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
        )
