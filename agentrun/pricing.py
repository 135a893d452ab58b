"""What a model call cost, in exact US dollars: the `genai-prices` package's price database,
with per-model prices from AGENTRUN_PRICES (self-hosted or contracted prices) taking precedence.

A call whose model has no known price costs None, never a guessed zero, and the worker logs a
warning that names the model (once per model and process). Costs are Decimals from end to end:
genai-prices computes in Decimal, the database stores NUMERIC, JSON carries a string.

Token counts follow the chat-completions usage object: `prompt_tokens` includes the cached ones
(`prompt_tokens_details.cached_tokens`), `completion_tokens` includes the reasoning ones
(`completion_tokens_details.reasoning_tokens`), so cached tokens are priced at the cache-read
price and the rest of the prompt at the input price; reasoning tokens are output tokens.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger("agentrun.pricing")

PER_MILLION = Decimal(1_000_000)
# A price per million tokens above this is a typo (the dearest models cost a few hundred).
MAX_PRICE_PER_MTOK = Decimal(1_000_000)


class ModelPrice(BaseModel):
    """One model's own price in US dollars per million tokens (AGENTRUN_PRICES)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(description="per million prompt tokens (the uncached ones)")
    output: Decimal = Field(description="per million completion tokens (reasoning included)")
    cached_input: Decimal | None = Field(
        default=None, description="per million cached prompt tokens; unset: the input price"
    )

    @field_validator("input", "output", "cached_input", mode="before")
    @classmethod
    def _exact(cls, value: object) -> object:
        # A float would carry binary noise into every cost (0.1 is not 0.1): strings and whole
        # numbers are exact.
        if isinstance(value, float):
            return Decimal(repr(value))
        return value

    @field_validator("input", "output", "cached_input")
    @classmethod
    def _sane(cls, value: Decimal | None) -> Decimal | None:
        if value is None:
            return value
        if not value.is_finite() or value < 0:
            raise ValueError("a price is a finite number of dollars, 0 or more")
        if value > MAX_PRICE_PER_MTOK:
            raise ValueError(f"{value} dollars per million tokens is not a plausible price")
        return value

    def cost(self, prompt: int, completion: int, cached: int) -> Decimal:
        cached = min(cached, prompt)
        cached_price = self.input if self.cached_input is None else self.cached_input
        total = (prompt - cached) * self.input + cached * cached_price + completion * self.output
        return total / PER_MILLION


def parse_prices(value: object) -> dict[str, ModelPrice]:
    """AGENTRUN_PRICES: a JSON object (or its text) of model name -> {input, output,
    cached_input} in dollars per million tokens. Raises ValueError naming what is wrong."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value, parse_float=Decimal)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError('expected a JSON object such as {"my-model": {"input": "0.5", ...}}')
    prices: dict[str, ModelPrice] = {}
    for name, price in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a model name is empty")
        if isinstance(price, ModelPrice):
            prices[name] = price
            continue
        try:
            prices[name] = ModelPrice.model_validate(price)
        except (ValueError, InvalidOperation) as exc:
            raise ValueError(f"the price of {name!r}: {_first_error(exc)}") from None
    return prices


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = str(first["msg"]).removeprefix("Value error, ")
        return f"{where}: {msg}" if where else msg
    return str(exc)


@dataclass(frozen=True)
class CallUsage:
    """What one model call reported; cached is part of prompt, reasoning part of completion."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0


def call_usage(usage: Any) -> CallUsage | None:
    """The usage object of a chat completion (the openai client's, or a dict) as a CallUsage;
    None when the endpoint reported no token counts."""
    if usage is None:
        return None

    def get(obj: Any, name: str) -> Any:
        return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)

    prompt, completion = get(usage, "prompt_tokens"), get(usage, "completion_tokens")
    if prompt is None and completion is None:
        return None
    cached = get(get(usage, "prompt_tokens_details") or {}, "cached_tokens")
    reasoning = get(get(usage, "completion_tokens_details") or {}, "reasoning_tokens")
    return CallUsage(
        prompt_tokens=_count(prompt),
        completion_tokens=_count(completion),
        cached_tokens=_count(cached),
        reasoning_tokens=_count(reasoning),
    )


def _count(value: Any) -> int:
    # An endpoint's usage is outside input: a negative, fractional or absurd count is noise,
    # not a reason to fail a turn that streamed fine.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return min(value, 2**31 - 1)


class Pricing:
    """Prices calls: AGENTRUN_PRICES first, then genai-prices; unknown -> None + a warning."""

    def __init__(self, overrides: dict[str, ModelPrice] | None = None) -> None:
        self.overrides = dict(overrides or {})
        self._warned: set[str] = set()

    def cost(self, model: str, usage: CallUsage, at: datetime | None = None) -> Decimal | None:
        own = self.overrides.get(model)
        if own is not None:
            return own.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        found = database_cost(model, usage, at)
        if found is None and model not in self._warned:
            self._warned.add(model)
            log.warning(
                "no price is known for model %r: its calls are recorded with cost NULL (set "
                "AGENTRUN_PRICES to price it)",
                model,
            )
        return found

    def knows(self, model: str) -> bool:
        """Whether calls of `model` get a price (a cost budget needs one)."""
        return model in self.overrides or database_cost(model, CallUsage(1, 1)) is not None


def database_cost(model: str, usage: CallUsage, at: datetime | None = None) -> Decimal | None:
    """genai-prices' price of the call, or None when its database does not know the model."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    try:
        price = calc_price(
            PriceUsage(**_price_usage(usage)), model, genai_request_timestamp=at or _now()
        )
    except LookupError:
        return None
    return price.total_price


def _price_usage(usage: CallUsage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_tokens": min(usage.cached_tokens, usage.prompt_tokens),
        # Part of output_tokens: priced on their own only where the database has a price.
        "output_reasoning_tokens": min(usage.reasoning_tokens, usage.completion_tokens),
    }


def _now() -> datetime:
    return datetime.now(UTC)


def measured(pricing: Pricing, model: str, usage: Any) -> dict[str, Any]:
    """A model call's usage as the endpoint reported it and its cost, as LlmCallValues fields
    (empty: no usage reported; cost None: no price known for the model, which Pricing warns
    about)."""
    used = call_usage(usage)
    if used is None:
        return {}
    return {
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "cached_tokens": used.cached_tokens,
        "reasoning_tokens": used.reasoning_tokens,
        "cost_usd": pricing.cost(model, used),
    }
