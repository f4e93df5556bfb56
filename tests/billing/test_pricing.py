"""The price model: components, conditions, fallbacks, exact arithmetic and holds.

The table below is real price lists and real requests, each bill worked out by hand
to the micro-USD (or closer where the exact amount has more digits)."""

from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.pricing import UNITS, Component, Price, PriceError, rate_pico, token_components
from core.money import PICO_PER_USD, Units, images_of, pico_to_usd, tool_calls_of
from relay.providers.anthropic.usage import tokens_from_anthropic
from relay.providers.openai.usage import tokens_from_openai


def price(components, multiplier="1"):
    return Price.of(model="m", components=components, multiplier=Decimal(multiplier))


def usd(pico: int) -> Decimal:
    return Decimal(pico) / PICO_PER_USD


SONNET = [
    {"unit": "input", "rate": "3.00"},
    {"unit": "output", "rate": "15.00"},
    {"unit": "cache_read", "rate": "0.30"},
    {"unit": "cache_write", "rate": "3.75"},
    {"unit": "cache_write_1h", "rate": "6.00"},
    {"unit": "tool_call", "rate": "10.00", "tool": "web_search"},
]
SONNET_1M = [
    *SONNET,
    {"unit": "input", "rate": "6.00", "above": 200_000},
    {"unit": "output", "rate": "22.50", "above": 200_000},
    {"unit": "cache_read", "rate": "0.60", "above": 200_000},
    {"unit": "cache_write", "rate": "7.50", "above": 200_000},
]
GEMINI_25_PRO = [
    {"unit": "input", "rate": "1.25"},
    {"unit": "output", "rate": "10.00"},
    {"unit": "input", "rate": "2.50", "above": 200_000},
    {"unit": "output", "rate": "15.00", "above": 200_000},
]
DALL_E_3 = [
    {"unit": "image", "rate": "0.04", "size": "1024x1024", "quality": "standard"},
    {"unit": "image", "rate": "0.08", "size": "1024x1792", "quality": "standard"},
    {"unit": "image", "rate": "0.08", "size": "1024x1024", "quality": "hd"},
    {"unit": "image", "rate": "0.12", "size": "1024x1792", "quality": "hd"},
]
O3_WITH_FLEX = [
    {"unit": "input", "rate": "2.00"},
    {"unit": "output", "rate": "8.00"},
    {"unit": "cache_read", "rate": "0.50"},
    {"unit": "input", "rate": "1.00", "service_tier": "flex"},
    {"unit": "output", "rate": "4.00", "service_tier": "flex"},
]


@dataclass(frozen=True)
class Case:
    name: str
    components: list
    units: Units
    usd: str
    multiplier: str = "1"


CASES = [
    Case(
        "Claude Sonnet 4.5, 10k tokens written to the 5-minute cache",
        SONNET,
        Units(input=1_000, cache_write=10_000, output=500),
        # 1,000 x 3 + 10,000 x 3.75 + 500 x 15 = 3,000 + 37,500 + 7,500 micro-USD
        "0.048",
    ),
    Case(
        "Claude Sonnet 4.5, the same 10k tokens written to the 1-hour cache",
        SONNET,
        Units(input=1_000, cache_write_1h=10_000, output=500),
        # 3,000 + 10,000 x 6 = 60,000 + 7,500 (not 37,500: that is 37.5% less)
        "0.0705",
    ),
    Case(
        "Claude Sonnet 4.5, cache read with two web searches",
        SONNET,
        Units(input=1_000, cache_read=20_000, output=500, tool_calls=(("web_search", 2),)),
        # 3,000 + 20,000 x 0.30 = 6,000 + 7,500 + 2 x $0.01 = 20,000
        "0.0365",
    ),
    Case(
        "Gemini 2.5 Pro, a 250k prompt bills the whole request at the long-context tier",
        GEMINI_25_PRO,
        Units(input=250_000, output=1_000),
        # 250,000 x 2.50 = $0.625 + 1,000 x 15 = $0.015
        "0.64",
    ),
    Case(
        "Gemini 2.5 Pro, a 150k prompt stays at the base tier",
        GEMINI_25_PRO,
        Units(input=150_000, output=1_000),
        # 150,000 x 1.25 = $0.1875 + 1,000 x 10 = $0.01
        "0.1975",
    ),
    Case(
        "Claude Sonnet 4 with 1M context: 250k input + 50k cache read, above 200k",
        SONNET_1M,
        Units(input=250_000, cache_read=50_000, output=2_000),
        # 250,000 x 6 = $1.50 + 50,000 x 0.60 = $0.03 + 2,000 x 22.50 = $0.045
        "1.575",
    ),
    Case(
        "Perplexity Sonar: tokens plus $5 per 1,000 requests",
        [
            {"unit": "input", "rate": "1.00"},
            {"unit": "output", "rate": "1.00"},
            {"unit": "request", "rate": "0.005"},
        ],
        Units(input=100, output=200),
        # 300 x 1 = 300 micro-USD + 5,000
        "0.0053",
    ),
    Case(
        "DALL-E 3: 2 standard 1024x1024 and 3 HD 1024x1792 images",
        DALL_E_3,
        Units(images=images_of({("1024x1024", "standard"): 2, ("1024x1792", "hd"): 3})),
        # 2 x 0.04 + 3 x 0.12
        "0.44",
    ),
    Case(
        "Whisper: 90 s of audio at $0.006 a minute",
        [{"unit": "audio_second", "rate": "0.0001"}],
        Units(audio_ms=90_000),
        "0.009",
    ),
    Case(
        "Whisper: 12.345 s of audio, billed to the millisecond",
        [{"unit": "audio_second", "rate": "0.0001"}],
        Units(audio_ms=12_345),
        "0.0012345",
    ),
    Case(
        "TTS-1: 1,234 characters at $15 per 1M",
        [{"unit": "character", "rate": "15.00"}],
        Units(characters=1_234),
        "0.01851",
    ),
    Case(
        "Cohere Rerank 3.5: 250 documents are 3 search units at $2 per 1,000",
        [{"unit": "search_unit", "rate": "0.002"}],
        Units(search_units=3),
        "0.006",
    ),
    Case(
        "gpt-4o audio: text and audio tokens each at their own rate",
        [
            {"unit": "input", "rate": "2.50"},
            {"unit": "output", "rate": "10.00"},
            {"unit": "audio_input", "rate": "40.00"},
            {"unit": "audio_output", "rate": "80.00"},
        ],
        Units(input=400, audio_input=600, output=200, audio_output=300),
        # 400 x 2.5 = 1,000 + 600 x 40 = 24,000 + 200 x 10 = 2,000 + 300 x 80 = 24,000
        "0.051",
    ),
    Case(
        "gpt-image-1: text and image input tokens, image output tokens",
        [
            {"unit": "input", "rate": "5.00"},
            {"unit": "image_input", "rate": "10.00"},
            {"unit": "image_output", "rate": "40.00"},
        ],
        Units(input=50, image_input=200, image_output=4_160),
        # 250 + 2,000 + 166,400 micro-USD
        "0.16865",
    ),
    Case(
        "o4-mini: cached prompt and reasoning (at the output rate, no rate of its own)",
        [
            {"unit": "input", "rate": "1.10"},
            {"unit": "output", "rate": "4.40"},
            {"unit": "cache_read", "rate": "0.275"},
        ],
        Units(input=500, cache_read=1_500, output=500, reasoning=2_500),
        # 550 + 412.5 + 3,000 x 4.40 = 13,200 micro-USD
        "0.0141625",
    ),
    Case(
        "text-embedding-3-small: 5 tokens cost a tenth of a micro-USD, not nothing",
        [{"unit": "input", "rate": "0.02"}],
        Units(input=5),
        "0.0000001",
    ),
    Case(
        "o3 in the flex tier: half the standard rates",
        O3_WITH_FLEX,
        Units(input=10_000, output=2_000, service_tier="flex"),
        # 10,000 x 1 + 2,000 x 4
        "0.018",
    ),
    Case(
        "o3 flex with a cache hit: the cache rate has no flex variant of its own",
        O3_WITH_FLEX,
        Units(input=1_000, cache_read=9_000, output=100, service_tier="flex"),
        # 1,000 x 1 + 9,000 x 0.50 + 100 x 4
        "0.0059",
    ),
    Case(
        "A reseller group at 1.2x: gpt-4o-mini, 1M input tokens",
        token_components(input="0.15", output="0.60"),
        Units(input=1_000_000),
        "0.18",
        multiplier="1.2",
    ),
    Case(
        "OpenAI file search: 4 calls at $2.50 per 1,000, and the model's tokens",
        [
            {"unit": "input", "rate": "2.50"},
            {"unit": "output", "rate": "10.00"},
            {"unit": "tool_call", "rate": "2.50", "tool": "file_search"},
            {"unit": "tool_call", "rate": "10.00", "tool": "web_search"},
        ],
        Units(input=2_000, output=100, tool_calls=tool_calls_of({"file_search": 4})),
        # 5,000 + 1,000 + 4 x 2,500 micro-USD
        "0.016",
    ),
    Case(
        "Gemini 2.5 Flash (preview): thinking tokens at their own rate",
        [
            {"unit": "input", "rate": "0.15"},
            {"unit": "output", "rate": "0.60"},
            {"unit": "reasoning", "rate": "3.50"},
        ],
        Units(input=1_000, output=200, reasoning=800),
        # 150 + 120 + 2,800 micro-USD
        "0.00307",
    ),
    Case(
        "DeepSeek V3: cache hits at their own rate",
        [
            {"unit": "input", "rate": "0.27"},
            {"unit": "output", "rate": "1.10"},
            {"unit": "cache_read", "rate": "0.07"},
        ],
        Units(input=2_000, cache_read=8_000, output=1_000),
        # 540 + 560 + 1,100
        "0.0022",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_real_world_bills_to_the_micro_usd(case):
    assert usd(price(case.components, case.multiplier).cost(case.units)) == Decimal(case.usd)


def test_the_table_covers_every_unit():
    assert {c["unit"] for case in CASES for c in case.components} == set(UNITS)


def test_anthropic_usage_splits_cache_writes_by_how_long_they_last():
    usage = {
        "input_tokens": 1_000,
        "cache_creation_input_tokens": 12_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2_000, "ephemeral_1h_input_tokens": 10_000},
        "cache_read_input_tokens": 0,
        "output_tokens": 500,
        "server_tool_use": {"web_search_requests": 2},
    }
    units = tokens_from_anthropic(usage)
    assert (units.cache_write, units.cache_write_1h) == (2_000, 10_000)
    assert units.tool_calls == (("web_search", 2),)
    # 3,000 + 2,000 x 3.75 = 7,500 + 10,000 x 6 = 60,000 + 7,500 + 20,000
    assert usd(price(SONNET).cost(units)) == Decimal("0.098")


def test_openai_usage_details_become_their_own_kinds():
    units = tokens_from_openai(
        {
            "prompt_tokens": 1_000,
            "completion_tokens": 500,
            "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 600},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 300},
        }
    )
    assert units == Units(input=300, cache_read=100, audio_input=600, output=200, audio_output=300)


def test_gemini_thinking_left_out_of_completion_tokens_is_billed_once():
    # Gemini's compatible endpoint: total = prompt + completion + thoughts.
    units = tokens_from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 50,
            "total_tokens": 350,
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert (units.output, units.reasoning) == (50, 200)
    # OpenAI's own: completion includes reasoning.
    units = tokens_from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 250,
            "total_tokens": 350,
            "completion_tokens_details": {"reasoning_tokens": 200},
        }
    )
    assert (units.output, units.reasoning) == (50, 200)


def test_token_kinds_without_a_rate_fall_back_to_input_or_output():
    p = price(token_components(input="2.00", output="8.00", cache_write="2.50"))
    units = Units(cache_read=1_000, cache_write_1h=1_000, audio_input=1_000, reasoning=1_000)
    # cache read and audio at input (2,000 each), 1-hour writes at the 5-minute rate
    # (2,500), reasoning at output (8,000)
    assert usd(p.cost(units)) == Decimal("0.0145")


def test_a_unit_with_no_component_is_not_billed():
    p = price([{"unit": "image", "rate": "0.04"}])
    assert p.cost(Units(input=1_000, output=1_000)) == 0
    assert usd(p.cost(Units(images=images_of({("512x512", "low"): 1})))) == Decimal("0.04")


def test_the_most_specific_image_component_wins():
    p = price(
        [
            {"unit": "image", "rate": "0.05"},
            {"unit": "image", "rate": "0.06", "quality": "hd"},
            {"unit": "image", "rate": "0.07", "size": "1024x1792"},
            {"unit": "image", "rate": "0.12", "size": "1024x1792", "quality": "hd"},
        ]
    )

    def one(size, quality):
        return usd(p.cost(Units(images=images_of({(size, quality): 1}))))

    assert one("1024x1792", "hd") == Decimal("0.12")
    assert one("1024x1792", "standard") == Decimal("0.07")
    assert one("1024x1024", "hd") == Decimal("0.06")
    assert one("256x256", "standard") == Decimal("0.05")


def test_one_rounding_per_request_half_up_to_the_pico_with_a_multiplier():
    p = price(token_components(input="0.000001", output="0"), multiplier="1.5")
    # 1 token at 1 pico-USD, times 1.5: 1.5 rounds half-up to 2
    assert p.cost(Units(input=1)) == 2
    assert p.cost(Units(input=3)) == 5  # 4.5 -> 5, not 2 + 2 + 2
    assert price(token_components(input="0.15", output="0.60"), "0").cost(Units(input=9)) == 0


def test_holds_round_up_and_reach_the_dearest_tier_the_prompt_can():
    p = price(GEMINI_25_PRO)
    # A prompt that may be up to 150k tokens stays below the tier.
    assert p.hold(prompt_tokens=150_000, completion_tokens=1_000) == 187_500 + 10_000
    # One that may pass 200k is held at the tier's rates.
    assert p.hold(prompt_tokens=250_000, completion_tokens=1_000) == 625_000 + 15_000
    tiny = price(token_components(input="0.02", output="0"))
    assert tiny.hold(prompt_tokens=5, completion_tokens=0) == 1  # never zero, rounded up


def test_holds_take_the_dearest_kind_a_token_may_be():
    p = price(SONNET)
    # A prompt token may be a 1-hour cache write ($6), a completion token output ($15).
    assert p.hold(prompt_tokens=1_000, completion_tokens=100) == 6_000 + 1_500
    flex = price(O3_WITH_FLEX)
    assert flex.hold(prompt_tokens=1_000, completion_tokens=0) == 2_000


def test_holds_cover_units_beyond_tokens():
    p = price(DALL_E_3)
    n = Units(images=images_of({("1024x1024", "standard"): 3}))
    assert p.hold(prompt_tokens=0, completion_tokens=0, units=n) == 3 * 120_000


def test_rates_are_exact_to_the_pico_per_counted_quantity():
    assert rate_pico("input", "0.000001") == 1
    with pytest.raises(PriceError):
        rate_pico("input", "0.0000001")
    assert rate_pico("request", "0.000000000001") == 1
    assert rate_pico("audio_second", "0.000000001") == 1  # per millisecond
    with pytest.raises(PriceError):
        rate_pico("tool_call", "0.0000000001")
    with pytest.raises(PriceError):
        rate_pico("input", "-1")
    with pytest.raises(PriceError):
        Component.of("input", "1", size="1024x1024")
    with pytest.raises(PriceError):
        Price.of(model="m", components=[{"unit": "input", "rate": "1"}] * 2)


def test_the_snapshot_names_every_component_used():
    p = Price.of(model="claude", components=SONNET, price_id=7)
    units = Units(input=10, cache_write_1h=100, output=5, tool_calls=(("web_search", 1),))
    snap = p.snapshot(p.bill(units))
    assert snap["model"] == "claude" and snap["price_id"] == 7
    used = {(c["unit"], c.get("tool", "")): c for c in snap["components"]}
    assert set(used) == {
        ("input", ""),
        ("cache_write_1h", ""),
        ("output", ""),
        ("tool_call", "web_search"),
    }
    assert used[("cache_write_1h", "")]["rate"] == "6.00"
    assert used[("cache_write_1h", "")]["quantity"] == 100
    assert used[("cache_write_1h", "")]["cost"] == "0.000600"
    assert snap["cost"] == pico_to_usd(p.cost(units))


# -- properties ----------------------------------------------------------------------

_units = st.sampled_from([u for u in UNITS if u not in ("image", "tool_call")])
_rates = st.integers(min_value=0, max_value=50_000_000).map(lambda n: Decimal(n) / 1_000_000)
_component = st.one_of(
    st.builds(
        lambda unit, rate, above, tier: {
            "unit": unit,
            "rate": rate,
            "above": above,
            "service_tier": tier,
        },
        _units,
        _rates,
        st.sampled_from([0, 0, 1_000, 200_000]),
        st.sampled_from(["", "", "flex"]),
    ),
    st.builds(
        lambda rate, size, quality: {
            "unit": "image",
            "rate": rate,
            "size": size,
            "quality": quality,
        },
        _rates,
        st.sampled_from(["", "1024x1024", "1024x1792"]),
        st.sampled_from(["", "hd", "standard"]),
    ),
    st.builds(
        lambda rate, tool: {"unit": "tool_call", "rate": rate, "tool": tool},
        _rates,
        st.sampled_from(["", "web_search", "file_search"]),
    ),
)


def _unique(components):
    seen, out = set(), []
    for c in components:
        key = tuple(sorted((k, str(v)) for k, v in c.items() if k != "rate"))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


_counts = st.integers(min_value=0, max_value=300_000)
_request_units = st.builds(
    Units,
    input=_counts,
    cache_read=_counts,
    cache_write=_counts,
    cache_write_1h=_counts,
    output=_counts,
    reasoning=_counts,
    audio_input=_counts,
    audio_output=_counts,
    image_input=_counts,
    image_output=_counts,
    images=st.dictionaries(
        st.tuples(st.sampled_from(["1024x1024", "1024x1792"]), st.sampled_from(["hd", "standard"])),
        st.integers(min_value=1, max_value=10),
        max_size=3,
    ).map(images_of),
    audio_ms=_counts,
    characters=_counts,
    search_units=st.integers(min_value=0, max_value=100),
    tool_calls=st.dictionaries(
        st.sampled_from(["web_search", "file_search", "code_interpreter"]),
        st.integers(min_value=1, max_value=5),
        max_size=2,
    ).map(tool_calls_of),
    service_tier=st.sampled_from(["", "flex"]),
)


@settings(max_examples=300, deadline=None)
@given(
    components=st.lists(_component, min_size=1, max_size=12).map(_unique),
    units=_request_units,
    order=st.randoms(use_true_random=False),
    multiplier=st.sampled_from(["1", "0.5", "1.25", "3"]),
)
def test_a_bill_never_depends_on_the_order_of_components_and_is_never_negative(
    components, units, order, multiplier
):
    first = price(components, multiplier)
    shuffled = list(components)
    order.shuffle(shuffled)
    second = price(shuffled, multiplier)
    bill = first.bill(units)
    assert bill.pico >= 0 and all(line.pico >= 0 for line in bill.lines)
    assert second.bill(units).pico == bill.pico
    assert first.snapshot(bill)["components"] == second.snapshot(second.bill(units))["components"]
    # The hold for a request that may use as many units covers its bill.
    assert (
        first.hold(prompt_tokens=units.prompt, completion_tokens=units.completion, units=units)
        * (10**6)
        >= bill.pico
    )
