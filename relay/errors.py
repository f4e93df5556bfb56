"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``."""

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

    def response(self, request_id: str | None = None) -> HttpResponse:
        resp = HttpResponse(
            orjson.dumps(self.payload()), status=self.status, content_type="application/json"
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
