"""Pricing without a server: genai-prices' own figures, overrides, unknown models, the usage
object of an endpoint, and exact sums in Usage."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from agentrun.contracts import Usage
from agentrun.pricing import CallUsage, ModelPrice, Pricing, call_usage, parse_prices
from agentrun.settings import SettingsError, load_settings


def test_a_known_model_costs_what_genai_prices_says_with_cached_and_reasoning_tokens() -> None:
    used = CallUsage(prompt_tokens=1234, completion_tokens=567, cached_tokens=1000)
    ours = Pricing().cost("gpt-4o-mini", used)
    theirs = calc_price(
        PriceUsage(input_tokens=1234, output_tokens=567, cache_read_tokens=1000), "gpt-4o-mini"
    ).total_price
    assert isinstance(ours, Decimal) and ours == theirs
    # The cached tokens are cheaper than the rest of the prompt: they are not priced as input.
    uncached = Pricing().cost("gpt-4o-mini", CallUsage(1234, 567))
    assert uncached is not None and ours < uncached
    # Reasoning tokens are part of the completion: same price for a model without their own.
    assert Pricing().cost("o3-mini", CallUsage(100, 50, reasoning_tokens=40)) == Pricing().cost(
        "o3-mini", CallUsage(100, 50)
    )


def test_an_unknown_model_costs_none_and_warns_naming_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pricing = Pricing()
    with caplog.at_level(logging.WARNING, logger="agentrun.pricing"):
        assert pricing.cost("my-private-llm-7b", CallUsage(10, 5)) is None
        assert pricing.cost("my-private-llm-7b", CallUsage(10, 5)) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "'my-private-llm-7b'" in warnings[0]
    assert "AGENTRUN_PRICES" in warnings[0]
    assert not pricing.knows("my-private-llm-7b") and pricing.knows("gpt-4o")


def test_an_override_prices_exactly_and_wins_over_the_database() -> None:
    prices = parse_prices(
        '{"my-llm": {"input": "0.1", "output": 0.3, "cached_input": "0.025"},'
        ' "gpt-4o": {"input": "1", "output": "2"}}'
    )
    pricing = Pricing(prices)
    # (900 * 0.1 + 100 * 0.025 + 50 * 0.3) / 1e6, exactly (a float would not be).
    assert pricing.cost("my-llm", CallUsage(1000, 50, cached_tokens=100)) == Decimal("0.0001075")
    assert pricing.cost("gpt-4o", CallUsage(1_000_000, 1_000_000)) == Decimal(3)
    # No cached price: cached tokens cost what input costs.
    assert ModelPrice(input=Decimal(2), output=Decimal(0)).cost(10, 0, 10) == Decimal("0.00002")
    assert pricing.knows("my-llm")


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("[1]", "JSON object"),
        ("{nope", "not JSON"),
        ('{"m": {"input": "-1", "output": "1"}}', "0 or more"),
        ('{"m": {"input": "NaN", "output": "1"}}', "'m'"),
        ('{"m": {"input": "1"}}', "output"),
        ('{"m": {"input": "1", "output": "1", "cache": "1"}}', "cache"),
        ('{"m": {"input": "1e9", "output": "1"}}', "plausible"),
        ('{"": {"input": "1", "output": "1"}}', "empty"),
    ],
)
def test_bad_prices_are_refused_naming_the_setting(raw: str, says: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(prices=raw)
    assert "AGENTRUN_PRICES" in str(err.value) and says in str(err.value)


def test_the_usage_object_of_an_endpoint() -> None:
    reported = {
        "prompt_tokens": 300,
        "completion_tokens": 40,
        "prompt_tokens_details": {"cached_tokens": 256},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert call_usage(reported) == CallUsage(300, 40, 256, 30)
    assert call_usage({"prompt_tokens": 3, "completion_tokens": 4}) == CallUsage(3, 4)
    assert call_usage(None) is None and call_usage({"total_tokens": 5}) is None
    # Noise from an endpoint is not a reason to fail a turn.
    assert call_usage({"prompt_tokens": -1, "completion_tokens": True}) == CallUsage(0, 0)


def test_usage_sums_exactly_and_counts_unpriced_calls() -> None:
    tenth = Usage(cost_usd=Decimal("0.1"), prompt_tokens=1)
    total = Usage()
    for _ in range(10):
        total = total.add(tenth)
    assert total.cost_usd == Decimal("1.0") and total.prompt_tokens == 10
    assert Usage().add(Usage()).cost_usd is None
    unpriced = Usage(prompt_tokens=5, completion_tokens=1, unpriced_calls=1)
    mixed = tenth.add(unpriced)
    assert (mixed.cost_usd, mixed.unpriced_calls, mixed.total_tokens) == (Decimal("0.1"), 1, 7)
    assert unpriced.add(unpriced).cost_usd is None  # unknown stays unknown, never 0


def test_usage_cost_crosses_json_as_an_exact_string_and_old_payloads_decode() -> None:
    usage = Usage(cost_usd=Decimal("0.0000000375"), cached_tokens=3)
    text = usage.model_dump_json()
    assert '"cost_usd":"3.75E-8"' in text or '"cost_usd":"0.0000000375"' in text
    assert Usage.model_validate_json(text).cost_usd == Decimal("0.0000000375")
    old = Usage.model_validate_json('{"prompt_tokens": 3, "llm_calls": 1}')
    assert (old.cost_usd, old.unpriced_calls, old.cached_tokens) == (None, 0, 0)
