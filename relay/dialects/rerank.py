"""``POST /v1/rerank``: reranking in the Cohere/Jina shape.

A request is ``model``, ``query``, ``documents`` (strings, or objects with a
``text``), and optionally ``top_n``, ``return_documents`` and
``max_tokens_per_doc``; the answer is ``results`` of ``index`` and
``relevance_score`` (with the ``document`` when ``return_documents`` is true, and
without it when false, whatever the upstream did), plus the billed ``usage``.

Billed per search unit (one query over up to 100 documents: 250 documents are 3;
counted from the request, or as the upstream reports them in
``meta.billed_units.search_units``) or per token (``usage.total_tokens``, as Jina
and vLLM report them, billed as input tokens), as the price says.
"""

from typing import Any

from core.money import Units

from ..errors import invalid_request
from ..fields import as_count, as_dict, as_list
from ..tokens import count_text
from .base import Dialect, RequestParams, UpstreamReply
from .checks import model_param, positive_int
from .media import media_usage

# Documents one search unit covers.
DOCUMENTS_PER_SEARCH_UNIT = 100
# Cohere's limit of documents per request.
MAX_DOCUMENTS = 10_000


def search_units(documents: int) -> int:
    return -(-documents // DOCUMENTS_PER_SEARCH_UNIT)


def document_text(document: Any) -> str:
    """A document's text: the string itself, or an object's ``text``."""
    if isinstance(document, str):
        return document
    text = as_dict(document).get("text")
    return text if isinstance(text, str) else ""


def reported(data: dict[str, Any]) -> Units | None:
    """The units a rerank answer reports: Jina's and vLLM's ``usage.total_tokens`` as
    input tokens, Cohere's ``meta.billed_units.search_units``."""
    usage = data.get("usage")
    billed = as_dict(as_dict(data.get("meta")).get("billed_units"))
    tokens = as_count(usage.get("total_tokens")) if isinstance(usage, dict) else None
    units = as_count(billed.get("search_units")) if "search_units" in billed else None
    if tokens is None and units is None:
        return None
    return Units(input=tokens or 0, search_units=units or 0)


def _documents(body: dict[str, Any]) -> list[Any]:
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents:
        raise invalid_request(
            "`documents` must be a non-empty array of strings or objects with a `text`.",
            param="documents",
        )
    if len(documents) > MAX_DOCUMENTS:
        raise invalid_request(
            f"`documents` may hold at most {MAX_DOCUMENTS} documents.", param="documents"
        )
    for i, document in enumerate(documents):
        if not (
            isinstance(document, str)
            or (isinstance(document, dict) and isinstance(document.get("text"), str))
        ):
            raise invalid_request(
                f"`documents[{i}]` must be a string or an object with a `text` string.",
                param=f"documents[{i}]",
            )
    return documents


class Rerank(Dialect):
    name = "rerank"
    path = "/v1/rerank"
    mode = "rerank"

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body)
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise invalid_request("`query` must be a non-empty string.", param="query")
        documents = _documents(body)
        positive_int(body, "top_n")
        positive_int(body, "max_tokens_per_doc")
        returning = body.get("return_documents")
        if returning is not None and not isinstance(returning, bool):
            raise invalid_request("`return_documents` must be a boolean.", param="return_documents")
        return RequestParams(
            model=model,
            stream=False,
            include_usage=False,
            max_tokens=None,
            n=1,
            user="",
            prompt_only=True,
            units=Units(search_units=search_units(len(documents))),
        )

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        # The model reads the query beside each document.
        documents = as_list(body.get("documents"))
        query = body.get("query")
        per_query = count_text(query) if isinstance(query, str) else 0
        return per_query * len(documents) + sum(count_text(document_text(d)) for d in documents)

    def prompt_units(self, params: RequestParams, body: dict[str, Any]) -> Units:
        # The upstream ran the search: its search units count as a chat's prompt does.
        assert params.units is not None
        return Units(input=self.prompt_tokens(body), search_units=params.units.search_units)

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        return Units(input=self.prompt_tokens(body))

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        reply.body["usage"] = media_usage(tokens, cost, reply.upstream_usage)
        return reply.body


def answer_as_asked(answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A rerank answer with each result's ``document`` as the request asked: added
    from the request's documents when ``return_documents`` is true, left out when it
    is false (an upstream may do either by default)."""
    returning = body.get("return_documents")
    if returning is None:
        return answer
    documents = as_list(body.get("documents"))
    results = []
    for result in as_list(answer.get("results")):
        if not isinstance(result, dict):
            continue
        result = {k: v for k, v in result.items() if k != "document"}
        index = result.get("index")
        if returning and isinstance(index, int) and 0 <= index < len(documents):
            result["document"] = {"text": document_text(documents[index])}
        results.append(result)
    return {**answer, "results": results}


RERANK = Rerank()
