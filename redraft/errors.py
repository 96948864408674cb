"""One error type per domain failure. The API maps each to a status code in one handler."""

from __future__ import annotations


class RedraftError(Exception):
    """Base of every error Redraft raises on purpose. ``code`` is stable and machine-readable."""

    code = "redraft_error"
    status_code = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the API sends with this error (none by default)."""
        return {}


class InvalidRequest(RedraftError):
    """The request is well-formed JSON but asks for something Redraft cannot do (422)."""

    code = "invalid_request"
    status_code = 422


class NotFound(RedraftError):
    code = "not_found"
    status_code = 404


class Conflict(RedraftError):
    code = "conflict"
    status_code = 409


class Unauthorized(RedraftError):
    code = "unauthorized"
    status_code = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class RateLimited(RedraftError):
    """A per-tenant quota is spent (429); ``retry_after`` is the seconds until the request would be accepted."""

    code = "rate_limited"
    status_code = 429

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class CompileBusy(RedraftError):
    """Every compile slot of the process stayed busy for the whole compile budget (503: retry shortly)."""

    code = "compile_busy"
    status_code = 503

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class ModelError(RedraftError):
    """A model directory is missing, malformed or of an unknown family."""

    code = "model_error"
    status_code = 422


class ConstraintError(InvalidRequest):
    """A constraint is invalid or cannot be satisfied in the space given."""

    code = "invalid_constraint"


class JobCancelled(RedraftError):
    code = "cancelled"
    status_code = 409


class JobTimeout(RedraftError):
    """A job ran past ``REDRAFT_JOB_TIMEOUT_S`` and was stopped (it fails with this code)."""

    code = "timeout"


class TrainingError(RedraftError):
    code = "training_error"
