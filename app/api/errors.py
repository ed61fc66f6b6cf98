"""Why a request is not answered, with the HTTP status and the field to fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse


class RequestRejected(Exception):
    """The request cannot be answered as sent (4xx); `param` names the field to fix."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class Busy(RequestRejected):
    """Every turn is taken and the queue is full (503); `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(503, message)
        self.retry_after = retry_after


class AnswerFailed(Exception):
    """The answer broke off: a model server or the store failed; the message says what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- How an error looks on the wire ----------------------------------------------------------

ERROR_TYPES = {
    401: ("authentication_error", "invalid_api_key"),
    404: ("invalid_request_error", None),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    503: ("server_error", "server_busy"),
}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: its clients show `message` and raise by `type`."""
    kind, code = ERROR_TYPES.get(
        status, ("invalid_request_error" if status < 500 else "server_error", None)
    )
    if status == 404 and param == "model":
        code = "model_not_found"
    return {"message": message, "type": kind, "param": param, "code": code}


def error_payload(path: str, status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """The API's error format: under /v1 OpenAI's `{"error": {...}}`, elsewhere FastAPI's
    `{"detail": message}` (with `param` naming the field to fix, when there is one)."""
    if path.startswith("/v1/") or path == "/v1":
        return {"error": error_body(status, message, param)}
    return {"detail": message} if param is None else {"detail": message, "param": param}


def error_response(
    path: str,
    status: int,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_payload(path, status, message, param), status_code=status, headers=headers
    )
