"""The relay's errors: ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape;
a dialect may write them in its own, see ``relay.dialects``)."""

from typing import Any

import orjson
from django.http import HttpResponse


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(
        self, request_id: str | None = None, *, payload: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The error as a JSON response: ``payload`` in a dialect's own shape, or
        OpenAI's."""
        resp = HttpResponse(
            orjson.dumps(payload if payload is not None else self.payload()),
            status=self.status,
            content_type="application/json",
        )
        for name, value in self.headers.items():
            resp[name] = value
        if request_id:
            resp["x-request-id"] = request_id
        return resp


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, type="invalid_request_error", param=param, code=code)


def invalid_api_key(message: str = "Incorrect API key provided.") -> ApiError:
    return ApiError(401, message, type="authentication_error", code="invalid_api_key")


def insufficient_balance() -> ApiError:
    return ApiError(
        403,
        "Your account's available balance does not cover this request. Top up to continue.",
        type="billing_error",
        code="insufficient_balance",
    )


def permission_denied(message: str, code: str) -> ApiError:
    return ApiError(403, message, type="permission_error", code=code)


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
    )


def upstream_error(status: int, message: str, request_id: str, code: str) -> ApiError:
    return ApiError(
        status, f"{message} (request id: {request_id})", type="upstream_error", code=code
    )


def rate_limited(message: str, *, code: str, headers: dict[str, str]) -> ApiError:
    return ApiError(429, message, type="rate_limit_error", code=code, headers=headers)


def request_too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than {limit} bytes.",
        type="invalid_request_error",
        code="request_too_large",
    )


def internal_error(request_id: str) -> ApiError:
    return ApiError(
        500,
        f"The gateway could not complete the request (request id: {request_id}).",
        type="api_error",
        code="internal_error",
    )


def service_unavailable(request_id: str) -> ApiError:
    # The database is restarting or failing over: worth retrying shortly, unlike a 500.
    return ApiError(
        503,
        f"The gateway is briefly unavailable; retry shortly (request id: {request_id}).",
        type="api_error",
        code="service_unavailable",
        headers={"retry-after": "1"},
    )


def cannot_send(what: str, param: str) -> ApiError:
    """Content the channel's provider cannot take: the caller's to change."""
    return invalid_request(f"{what} cannot be sent to this model's provider.", param=param)
