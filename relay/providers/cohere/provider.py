"""An upstream speaking Cohere's API v2: ``POST {base_url}/v2/rerank`` with a Bearer
key (the base URL is Cohere's root, ``https://api.cohere.com``).

Cohere's v2 takes documents as strings only and answers without them: objects are
sent as their ``text``, and the documents go back into the results when the
client asked for them (``return_documents``, which v2 does not take). Its answer
(``{id, results: [{index, relevance_score}], meta: {billed_units: {search_units}}}``)
is billed by the search units it reports.
"""

from typing import Any

from ...dialects import RERANK
from ...dialects.base import UpstreamReply
from ...dialects.rerank import answer_as_asked, document_text, reported
from ..base import Call, UpstreamFailure, UpstreamStream
from ..http import probe_get, read_json, send


def cohere_request(body: dict[str, Any]) -> dict[str, Any]:
    """A ``/v1/rerank`` request as Cohere's v2 takes it; other fields go as they came."""
    out = {k: v for k, v in body.items() if k != "return_documents"}
    documents = body.get("documents")
    if isinstance(documents, list):
        out["documents"] = [document_text(d) for d in documents]
    return out


class CohereProvider:
    name = "cohere"
    label = "Cohere"
    dialects = frozenset({RERANK.name})
    needs_base_url = True
    charges = True
    forwarded_headers: tuple[str, ...] = ()

    async def answer(self, call: Call) -> UpstreamReply:
        channel = call.channel
        headers = {
            "authorization": f"Bearer {channel.api_key}",
            "content-type": "application/json",
            "accept": "application/json",
        }
        response = await send(
            channel, f"{channel.base_url}/v2/rerank", cohere_request(call.body), headers
        )
        data = answer_as_asked(await read_json(response), call.body)
        return UpstreamReply(body=data, upstream_usage=None, tokens=reported(data))

    async def stream(self, call: Call) -> UpstreamStream:
        # Rerank answers at once: the lifecycle never asks a rerank to stream.
        raise UpstreamFailure(
            400, "Cohere channels do not stream.", code="stream_not_offered", retryable=False
        )

    def probe(self, base_url: str, api_key: str) -> int | None:
        return probe_get(f"{base_url}/v1/models", {"authorization": f"Bearer {api_key}"})
