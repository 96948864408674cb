"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}``, for every answer of the sub-application.

Redraft's domain errors (``redraft.errors``) keep their messages; only the status and shape change where OpenAI's
differ: a request Redraft cannot do is a 400 (Redraft's own API says 422), an unknown model a 404
``model_not_found``, a canvas over the model's context a 400 ``context_length_exceeded``.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from redraft.errors import RedraftError

INVALID = "invalid_request_error"


class OpenAIError(Exception):
    """An answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, type: str = INVALID, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers or None)


def unsupported(param: str, message: str) -> OpenAIError:
    """A 400 for a field Redraft cannot honour (raised from request validators, so it keeps its ``param``)."""
    return OpenAIError(400, message, param=param, code="unsupported_parameter")


def context_too_long(exc: RedraftError) -> bool:
    """A canvas over the model's context (constraints/canvas.py); OpenAI clients look for context_length_exceeded."""
    return exc.code == "context_too_long"


def from_redraft(exc: RedraftError, param: str | None = None) -> OpenAIError:
    """The OpenAI answer for one of Redraft's errors; ``param`` names the field it came from, where known."""
    status = exc.status_code
    if exc.code == "unknown_model":
        return OpenAIError(404, exc.message, param="model", code="model_not_found")
    if status == 401:
        return OpenAIError(401, exc.message, code="invalid_api_key", headers=exc.headers)
    if status == 429:
        return OpenAIError(429, exc.message, type="rate_limit_error", code=exc.code, headers=exc.headers)
    if status == 404:
        return OpenAIError(404, exc.message, code=exc.code)
    if status == 422 and context_too_long(exc):
        return OpenAIError(400, exc.message, param=param or "messages", code="context_length_exceeded")
    if status in (409, 422):
        return OpenAIError(400, exc.message, param=param, code=exc.code)
    return OpenAIError(status, exc.message, type="server_error", code=exc.code, headers=exc.headers)
