from core.money import Units
from relay.dialects.usage import usage_payload
from relay.providers.anthropic.usage import tokens_from_anthropic
from relay.providers.openai.usage import tokens_from_openai


def test_openai_prompt_includes_cached_and_completion_includes_reasoning():
    t = tokens_from_openai(
        {
            "prompt_tokens": 1000,
            "completion_tokens": 400,
            "prompt_tokens_details": {"cached_tokens": 600},
            "completion_tokens_details": {"reasoning_tokens": 250},
        }
    )
    assert t == Units(input=400, cache_read=600, cache_write=0, output=150, reasoning=250)
    assert (t.prompt, t.completion) == (1000, 400)


def test_anthropic_input_excludes_cache_reads_and_writes():
    t = tokens_from_anthropic(
        {
            "input_tokens": 50,
            "cache_read_input_tokens": 2000,
            "cache_creation_input_tokens": 300,
            "output_tokens": 80,
        }
    )
    assert t == Units(input=50, cache_read=2000, cache_write=300, output=80)
    assert t.prompt == 2350


def test_garbage_usage_never_yields_negative_or_double_counts():
    t = tokens_from_openai(
        {
            "prompt_tokens": 10,
            "completion_tokens": "many",
            "prompt_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 7},
            "completion_tokens_details": None,
        }
    )
    assert t == Units(input=0, cache_read=10, cache_write=0, output=0, reasoning=0)
    assert tokens_from_openai({"prompt_tokens": True, "completion_tokens": -3}) == Units()


def test_usage_payload_keeps_openai_fields_and_adds_ours():
    upstream = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17, "extra": "kept"}
    out = usage_payload(Units(input=12, output=5), 1_234_000_000, upstream)
    assert out["extra"] == "kept"
    assert (out["prompt_tokens"], out["completion_tokens"], out["total_tokens"]) == (12, 5, 17)
    assert out["cost"] == "0.001234"
    assert (out["input_tokens"], out["output_tokens"], out["cache_read_tokens"]) == (12, 5, 0)
    assert upstream == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "extra": "kept",
    }
