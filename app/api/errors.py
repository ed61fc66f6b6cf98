"""Why a request is not answered, with the HTTP status and the field to fix."""

from __future__ import annotations


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
