from decimal import Decimal

import pytest

from billing.pricing import Price
from core.money import TokenCounts, micro_to_usd, per_m_to_pico, usd_to_micro


def price(**kw):
    return Price.from_decimals(model="m", **{"input": "2.50", "output": "10.00", **kw})


def test_each_token_kind_is_billed_at_its_own_price():
    p = price(cache_read="1.25", cache_write="3.125", reasoning="12.00", request_fee="0.0005")
    tokens = TokenCounts(input=1000, cache_read=2000, cache_write=400, output=300, reasoning=700)
    # 1000*2.5 + 2000*1.25 + 400*3.125 + 300*10 + 700*12 = 2500+2500+1250+3000+8400 = 17650
    assert p.cost(tokens) == 17_650 + 500


def test_missing_cache_and_reasoning_prices_fall_back_to_input_and_output():
    p = price()
    assert (
        p.cost(TokenCounts(cache_read=1000, cache_write=1000, reasoning=1000))
        == 2500 + 2500 + 10_000
    )


def test_one_rounding_per_request_half_up():
    p = Price.from_decimals(model="m", input="0.15", output="0.60")
    assert p.cost(TokenCounts(input=3)) == 0  # 0.45 micro-USD
    assert p.cost(TokenCounts(input=4)) == 1  # 0.60 rounds up
    assert (
        p.cost(TokenCounts(input=10, output=1)) == 2
    )  # 1.5 + 0.6 = 2.1: rounded once, not per kind
    assert p.cost(TokenCounts(input=1, output=1)) == 1  # 0.15 + 0.60 = 0.75


def test_holds_round_up_and_use_the_dearest_completion_price():
    p = Price.from_decimals(model="m", input="0.15", output="0.60", reasoning="2.00")
    assert p.reserve(prompt_tokens=1, completion_tokens=0) == 1
    assert p.reserve(prompt_tokens=0, completion_tokens=1000) == 2000
    assert p.reserve(prompt_tokens=0, completion_tokens=0) == 1  # never a zero hold


def test_prices_are_exact_and_reject_sub_pico_precision():
    assert per_m_to_pico(Decimal("0.000001")) == 1
    with pytest.raises(ValueError):
        per_m_to_pico(Decimal("0.0000001"))
    assert micro_to_usd(-1_500_001) == "-1.500001"
    assert usd_to_micro("12.345678") == 12_345_678
    assert price().snapshot()["output"] == "10.000000"
