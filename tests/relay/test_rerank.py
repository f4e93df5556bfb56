"""Rerank in the Cohere/Jina shape, served by an OpenAI-compatible channel (Jina's and
vLLM's ``/rerank``) and by a Cohere channel (``/v2/rerank``): billed per search unit
(a query over up to 100 documents) or per token, as the price says."""

import pytest

from relay.providers import PROVIDERS
from tests.support.factories import ChannelFactory
from tests.support.media import money, settled
from tests.support.relay import error_of

PICO = 10**12


def rerank(env, body, request_id=None):
    """The client has no rerank method: its generic ``post``."""
    headers = {"x-request-id": request_id} if request_id else {}
    return env.client.post("/rerank", body=body, cast_to=object, options={"headers": headers})


@pytest.fixture
def cohere_channel(media_env):
    """``rerank-v3.5`` served by a Cohere channel first."""
    return ChannelFactory(
        name="cohere",
        type="cohere",
        base_url=media_env.cohere.root_url,
        served_models=["rerank-v3.5"],
        priority=5,
        api_key="co-upstream-key-0123456789",
    )


def test_250_documents_are_three_search_units(media_env):
    documents = [f"Document number {i}" for i in range(250)]

    answer = rerank(
        media_env,
        {"model": "rerank-v3.5", "query": "number 7", "documents": documents, "top_n": 3},
        "rerank-250",
    )

    assert [r["index"] for r in answer["results"]] == [0, 1, 2]
    # A Jina-style upstream reports tokens only: the units come from the request.
    assert answer["usage"]["search_units"] == 3
    assert answer["usage"]["cost"] == "0.006000"
    record = settled("rerank-250")
    assert (record.search_units, record.cost_pico) == (3, 6 * PICO // 1000)
    assert media_env.upstream.requests[0]["path"] == "/rerank"
    assert media_env.upstream.requests[0]["json"]["documents"] == documents


@pytest.mark.parametrize(("count", "units"), [(1, 1), (100, 1), (101, 2), (250, 3)])
def test_a_search_unit_is_a_query_over_up_to_100_documents(media_env, count, units):
    rerank(media_env, {"model": "rerank-v3.5", "query": "q", "documents": ["d"] * count}, "r")
    assert settled("r").search_units == units


def test_a_token_price_bills_the_tokens_the_upstream_reports(media_env):
    answer = rerank(
        media_env,
        {"model": "jina-reranker-v2", "query": "q", "documents": ["a", "b", "c", "d", "e"]},
        "rerank-tokens",
    )

    # The fake reports 10 tokens a document: 50 tokens at $0.02/M.
    assert answer["usage"]["total_tokens"] == 50
    record = settled("rerank-tokens")
    assert (record.input_tokens, record.cost_pico) == (50, 50 * 2 * 10**4)
    # Search units are counted all the same; this price has no rate for them.
    assert record.search_units == 1 and not record.estimated


def test_a_cohere_channel_gets_its_own_shape_and_the_answer_is_as_asked(media_env, cohere_channel):
    documents = [{"text": f"Paris fact {i}"} for i in range(150)]

    answer = rerank(
        media_env,
        {
            "model": "rerank-v3.5",
            "query": "Paris",
            "documents": documents,
            "top_n": 2,
            "return_documents": True,
        },
        "rerank-cohere",
    )

    sent = media_env.cohere.requests[0]
    assert sent["path"] == "/v2/rerank"
    assert sent["headers"]["authorization"] == "Bearer co-upstream-key-0123456789"
    # v2 takes strings and no return_documents.
    assert sent["json"] == {
        "model": "rerank-v3.5",
        "query": "Paris",
        "documents": [d["text"] for d in documents],
        "top_n": 2,
    }
    assert answer["results"] == [
        {"index": 0, "relevance_score": 1.0, "document": {"text": "Paris fact 0"}},
        {"index": 1, "relevance_score": 0.9933, "document": {"text": "Paris fact 1"}},
    ]
    assert answer["meta"]["billed_units"] == {"search_units": 2}
    record = settled("rerank-cohere")
    assert record.channel_id == cohere_channel.id
    assert (record.search_units, record.cost_pico) == (2, 4 * PICO // 1000)
    assert media_env.upstream.calls == 0


def test_return_documents_false_leaves_them_out(media_env, cohere_channel):
    answer = rerank(
        media_env,
        {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"], "return_documents": False},
    )
    assert all(set(r) == {"index", "relevance_score"} for r in answer["results"])


def test_cohere_refusing_the_request_is_the_callers_400_and_costs_nothing(
    media_env, cohere_channel
):
    before = money(media_env)
    media_env.cohere.then(status=400, message="invalid request: top_n must be at most 1000")

    response = media_env.post(
        "/v1/rerank", json={"model": "rerank-v3.5", "query": "q", "documents": ["a"]}
    )

    error = error_of(response, 400)
    assert error["message"] == "invalid request: top_n must be at most 1000"
    assert error["code"] == "upstream_rejected"
    assert media_env.refresh().balance == before.balance


def test_a_failing_cohere_channel_fails_over_to_the_next(media_env, cohere_channel):
    media_env.cohere.then(status=500)

    rerank(media_env, {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}, "rerank-fo")

    record = settled("rerank-fo")
    assert [a["status"] for a in record.attempts] == [500, 200]
    assert record.channel_id == media_env.channel.id and record.cost_pico == 2 * PICO // 1000


def test_the_cohere_probe_asks_for_the_model_list(media_env):
    cohere = media_env.cohere
    assert PROVIDERS["cohere"].probe(cohere.root_url, "co-key") == 200
    assert cohere.probes == 1


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"query": ""}, "query"),
        ({"query": None}, "query"),
        ({"documents": []}, "documents"),
        ({"documents": "a b c"}, "documents"),
        ({"documents": ["a", {"title": "no text"}]}, "documents[1]"),
        ({"documents": ["a", 3]}, "documents[1]"),
        ({"top_n": 0}, "top_n"),
        ({"return_documents": "yes"}, "return_documents"),
        ({"model": None}, "model"),
    ],
)
def test_bad_rerank_requests_are_a_400_naming_the_field(media_env, change, param):
    before = money(media_env)
    body = {"model": "rerank-v3.5", "query": "q", "documents": ["a", "b"], **change}
    body = {k: v for k, v in body.items() if v is not None}

    assert error_of(media_env.post("/v1/rerank", json=body), 400)["param"] == param
    assert media_env.upstream.calls == 0
    assert money(media_env) == before
