"""Domain errors (redraft/errors.py): each one's status code, stable machine-readable code, message and headers,
and the API's one handler answering each with them."""

from __future__ import annotations

import inspect

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from redraft import errors
from redraft.errors import (
    CompileBusy,
    Conflict,
    ConstraintError,
    InvalidRequest,
    JobCancelled,
    JobTimeout,
    ModelError,
    NotFound,
    RateLimited,
    RedraftError,
    TrainingError,
    Unauthorized,
)

# The contract clients and the README rely on: class -> (code, HTTP status).
TABLE: dict[type[RedraftError], tuple[str, int]] = {
    RedraftError: ("redraft_error", 500),
    InvalidRequest: ("invalid_request", 422),
    NotFound: ("not_found", 404),
    Conflict: ("conflict", 409),
    Unauthorized: ("unauthorized", 401),
    RateLimited: ("rate_limited", 429),
    CompileBusy: ("compile_busy", 503),
    ModelError: ("model_error", 422),
    ConstraintError: ("invalid_constraint", 422),
    JobCancelled: ("cancelled", 409),
    JobTimeout: ("timeout", 500),
    TrainingError: ("training_error", 500),
}
HEADERS = {Unauthorized: {"WWW-Authenticate": "Bearer"}, CompileBusy: {"Retry-After": "5"}}
MESSAGES = st.text(st.characters(exclude_categories=("Cs",)))
CODES = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=30)


def make(cls: type[RedraftError], message: str, code: str | None = None) -> RedraftError:
    if cls is RateLimited:
        return cls(message, retry_after=7, code=code)
    return cls(message, code=code)


def test_the_table_names_every_error_the_module_defines():
    defined = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, RedraftError) and obj.__module__ == errors.__name__
    }
    assert defined == set(TABLE)


@pytest.mark.parametrize("cls", TABLE, ids=lambda c: c.__name__)
def test_each_error_has_its_code_status_and_headers(cls):
    exc = make(cls, "what went wrong")
    assert (exc.code, exc.status_code) == TABLE[cls] == (cls.code, cls.status_code)
    expected = {"Retry-After": "7"} if cls is RateLimited else HEADERS.get(cls, {})
    assert exc.headers == expected
    exc.headers["X-Changed"] = "1"  # a caller changing what it got changes nothing for the next one
    assert exc.headers == expected


def test_codes_are_unique_so_a_code_names_one_error():
    codes = [code for code, _ in TABLE.values()]
    assert len(codes) == len(set(codes))


def test_a_constraint_error_is_an_invalid_request():
    """Callers that turn an InvalidRequest into a 422 catch unsatisfiable constraints too."""
    assert issubclass(ConstraintError, InvalidRequest) and ConstraintError.status_code == 422
    assert all(issubclass(cls, RedraftError) and issubclass(cls, Exception) for cls in TABLE)


@given(cls=st.sampled_from(list(TABLE)), message=MESSAGES, code=st.one_of(st.none(), CODES))
def test_the_message_is_kept_and_a_code_given_overrides_only_this_error(cls, message, code):
    exc = make(cls, message, code)
    assert exc.message == str(exc) == message and exc.args == (message,)
    assert exc.code == (code if code is not None else TABLE[cls][0])
    assert cls.code == TABLE[cls][0]  # the class's code is untouched
    assert make(cls, message).code == TABLE[cls][0]
    assert exc.status_code == TABLE[cls][1]  # a code of its own keeps its class's status


@given(retry_after=st.integers(0, 10**6))
def test_rate_limited_says_when_to_retry(retry_after):
    exc = RateLimited("quota spent", retry_after=retry_after, code="jobs_per_minute_exceeded")
    assert exc.retry_after == retry_after and exc.headers == {"Retry-After": str(retry_after)}
    assert exc.code == "jobs_per_minute_exceeded" and exc.status_code == 429


@pytest.fixture(scope="module")
def api():
    """The real app with one extra route that raises whichever error the test names."""
    from redraft.api.main import create_app

    app = create_app()
    raised: dict[str, RedraftError] = {}

    def boom(name: str) -> None:
        raise raised[name]

    app.add_api_route("/_test/raise/{name}", boom)
    return TestClient(app, raise_server_exceptions=False), raised


@pytest.mark.parametrize("cls", TABLE, ids=lambda c: c.__name__)
def test_the_api_answers_each_error_with_its_status_code_body_and_headers(api, cls):
    client, raised = api
    raised[cls.__name__] = exc = make(cls, f"{cls.__name__}: it went wrong", code=None)
    r = client.get(f"/_test/raise/{cls.__name__}")
    assert r.status_code == exc.status_code
    assert r.json() == {"detail": exc.message, "code": exc.code}
    assert {k: r.headers.get(k) for k in exc.headers} == exc.headers
    if not exc.headers:
        assert "retry-after" not in r.headers and "www-authenticate" not in r.headers


def test_the_api_sends_a_code_given_to_one_error(api):
    client, raised = api
    raised["custom"] = InvalidRequest("unknown model 'x'", code="unknown_model")
    assert client.get("/_test/raise/custom").json() == {"detail": "unknown model 'x'", "code": "unknown_model"}
