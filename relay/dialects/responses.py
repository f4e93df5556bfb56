"""``POST /v1/responses``: OpenAI's Responses API.

Bills ``input_tokens`` (cached ones apart), ``output_tokens`` (reasoning apart), and
the hosted tools the model ran (web search, file search, code interpreter, image
generation), counted from the output items and billed with the price's ``tool_call``
components by type. Answers, and the stream's last event (``response.completed``,
``response.incomplete`` or ``response.failed``, held back until the end), carry the
usage with the ``cost``; every other event passes through byte for byte.

A response is kept unless the request says ``store: false``: where its channel
speaks the Responses API the upstream keeps it and Tollgate notes whose it is and
where; otherwise Tollgate keeps it, with the input items the model was given.
``previous_response_id`` is looked up before the request is routed, and the request
goes to the channel that served that response: one kept upstream is passed on as it
is, one kept here is expanded into the input.
"""

import uuid
from collections.abc import Awaitable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from core.money import Units, pico_to_usd, tool_calls_of
from core.threads import db

from .. import sse
from ..errors import ApiError, invalid_request
from ..fields import as_dict, as_list, as_str
from ..stored_responses import MAX_ID, Turn, stored_response_chain, stored_response_keep
from ..tokens import count_messages, count_text
from .base import Accounting, Dialect, RequestParams, Resolved, StreamEvent, UpstreamReply
from .checks import (
    MAX_TOKENS,
    is_int,
    model_param,
    number_in_range,
    optional_string,
    positive_int,
    stream_flag,
    stream_usage_asked,
    typed_objects,
)
from .usage import units_beyond_tokens

if TYPE_CHECKING:
    from ..selectors import ChannelInfo

ROLES = frozenset({"user", "assistant", "system", "developer"})
# The events that end a response, each carrying the whole response and its usage.
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Output items of hosted tools -> the tool type a ``tool_call`` component is for.
HOSTED_TOOL_CALLS = {
    "web_search_call": "web_search",
    "file_search_call": "file_search",
    "code_interpreter_call": "code_interpreter",
    "image_generation_call": "image_generation",
}
# Prefixes of the ids Tollgate gives the input items it keeps, by item type.
_ITEM_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}


def event_bytes(event: dict[str, Any]) -> bytes:
    """One Responses stream event on the wire: its type, then its data."""
    kind = as_str(event.get("type")).encode()
    return b"event: " + kind + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def not_found(response_id: str, param: str | None = None) -> ApiError:
    """Another account's response and one that does not exist read alike."""
    what = "Previous response" if param else "Response"
    return ApiError(
        404,
        f"{what} with id '{response_id[:MAX_ID]}' not found.",
        type="invalid_request_error",
        param=param,
        code="previous_response_not_found" if param else "response_not_found",
    )


# -- items ----------------------------------------------------------------------------


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as items: a string is a user message, a message given
    as ``{role, content}`` gets its ``type``, and text content becomes content parts
    (the shape ``input_items`` lists and the translators read)."""
    value = body.get("input")
    if isinstance(value, str):
        return [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": value}],
            }
        ]
    items = []
    for item in as_list(value):
        if not isinstance(item, dict):
            continue
        if item.get("type", "message") == "message" and "role" in item:
            content = item.get("content")
            if isinstance(content, str):
                part: dict[str, Any] = {"type": "input_text", "text": content}
                if item["role"] == "assistant":
                    part = {"type": "output_text", "text": content, "annotations": []}
                content = [part]
            item = {**item, "type": "message", "content": content}
        items.append(item)
    return items


def with_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items as they are kept and listed: each with an id."""
    out = []
    for item in items:
        if not as_str(item.get("id")):
            prefix = _ITEM_ID_PREFIX.get(as_str(item.get("type")), "item")
            item = {**item, "id": f"{prefix}_{uuid.uuid4().hex}"}
        out.append(item)
    return out


def _parts_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in as_list(content):
        part = as_dict(part)
        texts.append(as_str(part.get("text")) or as_str(part.get("refusal")))
    return "".join(texts)


def item_text(item: dict[str, Any]) -> str:
    """The text of an input or output item that counts as tokens."""
    kind = as_str(item.get("type", "message"))
    if kind == "message":
        return _parts_text(item.get("content"))
    if kind == "function_call":
        return as_str(item.get("name")) + as_str(item.get("arguments"))
    if kind in ("function_call_output", "custom_tool_call_output"):
        return _parts_text(item.get("output"))
    if kind == "custom_tool_call":
        return as_str(item.get("name")) + as_str(item.get("input"))
    if kind == "reasoning":
        return _parts_text(item.get("summary")) + _parts_text(item.get("content"))
    return ""


def hosted_tool_calls(response: dict[str, Any]) -> dict[str, int]:
    """The hosted tools a response ran, by tool type: its output items, except web
    search actions that are not searches (opening a page, finding in it), which are
    not billed; the response's own ``tool_usage`` count of billable searches wins."""
    counts: dict[str, int] = {}
    for item in as_list(response.get("output")):
        item = as_dict(item)
        tool = HOSTED_TOOL_CALLS.get(as_str(item.get("type")))
        if tool is None:
            continue
        action = as_str(as_dict(item.get("action")).get("type"))
        if tool == "web_search" and action not in ("", "search"):
            continue
        counts[tool] = counts.get(tool, 0) + 1
    searches = as_dict(as_dict(response.get("tool_usage")).get("web_search")).get("num_requests")
    if isinstance(searches, int) and not isinstance(searches, bool) and searches >= 0:
        counts["web_search"] = searches
    return counts


def with_tool_calls(tokens: Units, counts: dict[str, int]) -> Units:
    """The tokens with the hosted tool calls counted from the output, where the usage
    reported none of its own."""
    if tokens.tool_calls or not any(counts.values()):
        return tokens
    return replace(tokens, tool_calls=tool_calls_of(counts))


def responses_usage(
    tokens: Units, cost: int, upstream: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``usage`` of a response: the upstream's as it was (or, where it reported
    none, the tokens billed in its shape: ``input_tokens`` with cached ones included,
    ``output_tokens`` with reasoning included), the breakdowns by kind as Tollgate's
    other endpoints give them, the units beyond tokens (hosted tool calls by type)
    and the ``cost`` (exact USD; ``cost`` is in pico-USD here)."""
    out: dict[str, Any] = dict(upstream) if upstream else {}
    out.setdefault("input_tokens", tokens.prompt)
    details = dict(as_dict(out.get("input_tokens_details")))
    details.setdefault("cached_tokens", tokens.cache_read)
    if tokens.cache_write or tokens.cache_write_1h:
        details.setdefault("cache_write_tokens", tokens.cache_write + tokens.cache_write_1h)
    out["input_tokens_details"] = details
    out.setdefault("output_tokens", tokens.completion)
    out["output_tokens_details"] = {
        "reasoning_tokens": tokens.reasoning,
        **as_dict(out.get("output_tokens_details")),
    }
    out.setdefault("total_tokens", tokens.total)
    out["cache_read_tokens"] = tokens.cache_read
    out["cache_write_tokens"] = tokens.cache_write
    out["reasoning_tokens"] = tokens.reasoning
    out.update(units_beyond_tokens(tokens))
    out["cost"] = pico_to_usd(cost)
    return out


# -- the request ----------------------------------------------------------------------


def _input(body: dict[str, Any]) -> None:
    value = body.get("input")
    if value is None:
        if body.get("previous_response_id") is None:
            raise invalid_request("You must provide an `input`.", param="input")
        return
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise invalid_request("`input` must be a string or an array of input items.", "input")
    if not value and body.get("previous_response_id") is None:
        raise invalid_request("`input` must contain at least one item.", param="input")
    for i, item in enumerate(value):
        here = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid_request(f"`{here}` must be an object.", param=here)
        kind = item.get("type")
        if kind is not None and not isinstance(kind, str):
            raise invalid_request(f"`{here}.type` must be a string.", param=f"{here}.type")
        if kind in (None, "message"):
            role = item.get("role")
            if not isinstance(role, str) or role not in ROLES:
                raise invalid_request(
                    f"`{here}.role` must be one of {', '.join(sorted(ROLES))}.",
                    param=f"{here}.role",
                )
            content = item.get("content")
            if not isinstance(content, str | list):
                raise invalid_request(
                    f"`{here}.content` must be a string or an array of content parts.",
                    param=f"{here}.content",
                )
            typed_objects(content, f"{here}.content", "content part")


def _tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid_request("`tools` must be an array of tool objects.", param="tools")
        typed_objects(tools, "tools", "tool")
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, str | dict):
        raise invalid_request("`tool_choice` must be a string or an object.", param="tool_choice")
    for name in ("parallel_tool_calls", "store", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise invalid_request(f"`{name}` must be a boolean.", param=name)


def _objects(body: dict[str, Any]) -> None:
    for name in ("text", "reasoning", "metadata"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise invalid_request(f"`{name}` must be an object.", param=name)
    text_format = as_dict(body.get("text")).get("format")
    if text_format is not None:
        if not isinstance(text_format, dict) or not isinstance(text_format.get("type"), str):
            raise invalid_request(
                "`text.format` must be an object with a `type`.", param="text.format"
            )
        if text_format["type"] == "json_schema" and not isinstance(text_format.get("schema"), dict):
            raise invalid_request(
                "`text.format.schema` must be a JSON schema object.", param="text.format.schema"
            )
    include = body.get("include")
    if include is not None and not (
        isinstance(include, list) and all(isinstance(i, str) for i in include)
    ):
        raise invalid_request("`include` must be an array of strings.", param="include")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise invalid_request("`instructions` must be a string.", param="instructions")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous.strip()):
        raise invalid_request(
            "`previous_response_id` must be a non-empty string.", param="previous_response_id"
        )


def _refused(body: dict[str, Any]) -> None:
    """What the gateway does not relay, whatever the channel."""
    if body.get("background") is True:
        raise invalid_request(
            "Background responses are not supported through this gateway: their usage "
            "arrives after the request has ended and could not be billed.",
            param="background",
        )
    if body.get("conversation") is not None:
        raise invalid_request(
            "Conversations are not supported through this gateway; continue a "
            "conversation with `previous_response_id`.",
            param="conversation",
        )
    if body.get("prompt") is not None:
        raise invalid_request(
            "Stored prompt templates are not supported through this gateway; send "
            "`instructions` and `input` instead.",
            param="prompt",
        )


# -- streams -----------------------------------------------------------------------------


class ResponsesAccounting(Accounting):
    """Counts the text, function-call arguments and reasoning summaries handed to the
    client, and the hosted tools the upstream ran (from the items it finished, or
    the whole response at the end); keeps the response the last event carries."""

    def __init__(self, dialect: Dialect, body: dict[str, Any]) -> None:
        super().__init__(dialect, body)
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.hosted: dict[str, dict[str, Any]] = {}
        self.hosted_counts: dict[str, int] | None = None

    def observe(self, event: StreamEvent) -> None:
        super().observe(event)
        data = event.data
        kind = as_str(data.get("type"))
        if kind == "response.output_item.done":
            item = as_dict(data.get("item"))
            if as_str(item.get("type")) in HOSTED_TOOL_CALLS:
                key = as_str(item.get("id")) or str(len(self.hosted))
                self.hosted[key] = item
        elif kind in TERMINAL:
            response = as_dict(data.get("response"))
            self.answer = response
            self.hosted_counts = hosted_tool_calls(response)

    def delivered(self, data: dict[str, Any]) -> None:
        kind = as_str(data.get("type"))
        if kind in (
            "response.output_text.delta",
            "response.refusal.delta",
            "response.function_call_arguments.delta",
            "response.custom_tool_call_input.delta",
        ):
            self.text.append(as_str(data.get("delta")))
        elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            self.reasoning.append(as_str(data.get("delta")))
        elif kind == "response.output_item.added":
            item = as_dict(data.get("item"))
            if item.get("type") in ("function_call", "custom_tool_call"):
                self.text.append(as_str(item.get("name")))

    def output(self) -> Units:
        return Units(
            output=count_text("".join(self.text)),
            reasoning=count_text("".join(self.reasoning)),
        )

    def tokens(self) -> tuple[Units, bool]:
        tokens, estimated = super().tokens()
        counts = self.hosted_counts
        if counts is None:
            counts = hosted_tool_calls({"output": list(self.hosted.values())})
        return with_tool_calls(tokens, counts), estimated


class ResponsesStreamFormat:
    """Typed events to the client, each as it came, except the last: the response
    it carries is sent at the end with the billed usage and cost."""

    content_type = sse.EVENT_STREAM

    def __init__(self) -> None:
        self.terminal: dict[str, Any] | None = None
        self.sequence = -1

    def event(self, event: StreamEvent) -> bytes | None:
        data = event.data
        if is_int(data.get("sequence_number")):
            self.sequence = data["sequence_number"]
        if as_str(data.get("type")) in TERMINAL:
            self.terminal = data
            return None
        return event.raw if event.raw is not None else event_bytes(data)

    def end(self, tokens: Units, cost: int) -> bytes:
        if self.terminal is None:
            return b""
        response = as_dict(self.terminal.get("response"))
        usage = responses_usage(tokens, cost, as_dict(response.get("usage")) or None)
        return event_bytes({**self.terminal, "response": {**response, "usage": usage}})

    def error(self, failure: ApiError) -> bytes:
        # The Responses API's own error event, numbered after the last one sent.
        return event_bytes(
            {
                "type": "error",
                "code": failure.code,
                "message": failure.message,
                "param": failure.param,
                "sequence_number": self.sequence + 1,
            }
        )


class Responses(Dialect):
    name = "responses"
    path = "/v1/responses"

    def validate(self, body: dict[str, Any]) -> RequestParams:
        model = model_param(body)
        _input(body)
        _objects(body)
        _tools(body)
        _refused(body)
        max_output_tokens = positive_int(body, "max_output_tokens", MAX_TOKENS)
        positive_int(body, "max_tool_calls")
        number_in_range(body, "temperature", 0, 2)
        number_in_range(body, "top_p", 0, 1)
        number_in_range(body, "top_logprobs", 0, 20)
        stream = stream_flag(body)
        stream_usage_asked(body, stream)
        return RequestParams(
            model=model,
            stream=stream,
            # The usage is in the last event of every stream.
            include_usage=True,
            max_tokens=max_output_tokens,
            n=1,
            user=optional_string(body, "user"),
        )

    def resolve(self, body: dict[str, Any], *, account_id: int) -> Awaitable[Resolved] | None:
        previous = body.get("previous_response_id")
        if previous is None:
            return None
        return self._continued(body, previous, account_id)

    async def _continued(self, body: dict[str, Any], previous: str, account_id: int) -> Resolved:
        chain = await db(stored_response_chain)(response_id=previous, account_id=account_id)
        stored = chain[-1] if chain else None
        if stored is None or (stored.upstream and stored.channel_id is None):
            raise not_found(previous, "previous_response_id")
        if stored.upstream:
            return Resolved(body=body, channel_id=stored.channel_id)
        # Kept here: each turn's items, then what the model answered. Its instructions
        # are not carried over, as the Responses API does.
        history = conversation(chain)
        return Resolved(
            body={**body, "input": [*history, *input_items(body)]},
            channel_id=stored.channel_id,
            prompt_tokens=len(orjson.dumps(history)) // 3,
        )

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        messages = [{"content": item_text(item)} for item in input_items(body)]
        instructions = body.get("instructions")
        if isinstance(instructions, str) and instructions:
            messages.append({"content": instructions})
        return count_messages(messages)

    def estimate(self, body: dict[str, Any], answer: dict[str, Any]) -> Units:
        output = reasoning = ""
        for item in as_list(answer.get("output")):
            item = as_dict(item)
            if item.get("type") == "reasoning":
                reasoning += item_text(item)
            else:
                output += item_text(item)
        return Units(
            input=self.prompt_tokens(body),
            output=count_text(output),
            reasoning=count_text(reasoning),
        )

    def units(self, params: RequestParams, reported: Units, reply: UpstreamReply | None) -> Units:
        if reply is not None:
            reported = with_tool_calls(reported, hosted_tool_calls(reply.body))
        return super().units(params, reported, reply)

    def render(self, reply: UpstreamReply, tokens: Units, cost: int) -> dict[str, Any]:
        reply.body["usage"] = responses_usage(tokens, cost, reply.upstream_usage)
        return reply.body

    def accounting(self, body: dict[str, Any]) -> ResponsesAccounting:
        return ResponsesAccounting(self, body)

    def stream_format(self, params: RequestParams) -> ResponsesStreamFormat:
        return ResponsesStreamFormat()

    def keeps(self, body: dict[str, Any]) -> bool:
        return body.get("store") is not False

    async def keep(
        self,
        *,
        body: dict[str, Any],
        answer: dict[str, Any],
        tokens: Units,
        cost: int,
        account_id: int,
        channel: "ChannelInfo",
    ) -> None:
        response_id = answer.get("id")
        if not isinstance(response_id, str):
            return
        usage = responses_usage(tokens, cost, as_dict(answer.get("usage")) or None)
        if channel.responses_api:
            # The upstream keeps the response; the usage as billed (its cost) is kept
            # here, for a retrieval of it to say what was charged.
            await db(stored_response_keep)(
                response_id=response_id,
                account_id=account_id,
                channel_id=channel.id,
                upstream=True,
                response={"usage": usage},
            )
            return
        previous = body.get("previous_response_id")
        await db(stored_response_keep)(
            response_id=response_id,
            account_id=account_id,
            channel_id=channel.id,
            upstream=False,
            previous=previous if isinstance(previous, str) else "",
            items=with_ids(input_items(body)),
            response={**answer, "usage": usage},
        )


def conversation(chain: list[Turn]) -> list[dict[str, Any]]:
    """The items of a kept conversation, oldest first: each turn's input items, then
    what the model answered."""
    items: list[dict[str, Any]] = []
    for turn in chain:
        items += turn.items
        items += [i for i in as_list(turn.response.get("output")) if isinstance(i, dict)]
    return items


RESPONSES = Responses()
