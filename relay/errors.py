"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``."""

from typing import Any

import orjson
from django.http import HttpResponse

ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


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

    def anthropic_payload(self) -> dict[str, Any]:
        """The same error in the Anthropic API's shape (for ``/v1/messages``)."""
        kind = ANTHROPIC_TYPES.get(self.status, "api_error")
        if self.status == 403 and self.type == "billing_error":
            kind = "billing_error"
        # Anthropic's errors have no ``param``: they name the field in the message.
        message = f"{self.param}: {self.message}" if self.param else self.message
        return {"type": "error", "error": {"type": kind, "message": message}}

    def response(self, request_id: str | None = None, *, anthropic: bool = False) -> HttpResponse:
        payload = self.anthropic_payload() if anthropic else self.payload()
        resp = HttpResponse(
            orjson.dumps(payload), status=self.status, content_type="application/json"
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
