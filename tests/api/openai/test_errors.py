"""OpenAI's error envelope (api/openai/errors.py): every answer is ``{"error": {"message", "type", "param", "code"}}``;
each of Redraft's errors keeps its message and headers and takes OpenAI's status where OpenAI's differs (a request
Redraft cannot do is a 400, never a 422; an unknown model a 404 model_not_found; a canvas over the context a 400
context_length_exceeded); and the sub-application answers in that shape before any database is read."""

from __future__ import annotations

import inspect
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft import errors
from redraft.api.openai.errors import INVALID, OpenAIError, context_too_long, from_redraft, unsupported
from redraft.errors import RateLimited, RedraftError

ENVELOPE = {"message", "type", "param", "code"}
TYPES = {INVALID, "rate_limit_error", "server_error"}
CLASSES = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, RedraftError) and obj.__module__ == errors.__name__
]
MESSAGES = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
CODES = st.one_of(
    st.none(),
    st.sampled_from(["unknown_model", "context_too_long", "unknown_draft", "bad_text"]),
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20),
)


def make(cls: type[RedraftError], message: str, code: str | None) -> RedraftError:
    return cls(message, retry_after=9, code=code) if cls is RateLimited else cls(message, code=code)


@settings(max_examples=100, deadline=None)
@given(
    status=st.sampled_from([400, 401, 404, 429, 500, 503]),
    message=MESSAGES,
    param=st.one_of(st.none(), st.text(max_size=10)),
    code=st.one_of(st.none(), st.text(max_size=10)),
    headers=st.one_of(st.none(), st.just({"Retry-After": "3"})),
)
def test_the_envelope_is_exactly_openais_and_the_response_carries_it(status, message, param, code, headers):
    exc = OpenAIError(status, message, param=param, code=code, headers=headers)
    assert exc.body() == {"error": {"message": message, "type": INVALID, "param": param, "code": code}}
    assert str(exc) == message
    response = exc.response()
    assert response.status_code == status and json.loads(response.body) == exc.body()
    assert (response.headers.get("retry-after") == "3") == (headers is not None)


def test_unsupported_is_a_400_naming_the_parameter():
    exc = unsupported("top_p", "no nucleus sampling")
    assert (exc.status, exc.param, exc.code, exc.type) == (400, "top_p", "unsupported_parameter", INVALID)
    assert exc.body()["error"]["message"] == "no nucleus sampling"


@settings(max_examples=300, deadline=None)
@given(cls=st.sampled_from(CLASSES), message=MESSAGES, code=CODES, param=st.one_of(st.none(), st.just("prompt")))
def test_each_redraft_error_keeps_its_message_and_takes_openais_status(cls, message, code, param):
    exc = make(cls, message, code)
    answer = from_redraft(exc, param)
    body = answer.body()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE
    assert answer.message == message and answer.type in TYPES
    assert answer.status != 422  # OpenAI answers a request it cannot do with a 400
    if exc.code == "unknown_model":
        assert (answer.status, answer.param, answer.code) == (404, "model", "model_not_found")
    elif exc.status_code == 401:
        assert (answer.status, answer.code, answer.headers) == (401, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
    elif exc.status_code == 429:
        assert (answer.status, answer.type, answer.code) == (429, "rate_limit_error", exc.code)
        assert answer.headers == {"Retry-After": "9"}
    elif exc.status_code == 404:
        assert (answer.status, answer.code, answer.type) == (404, exc.code, INVALID)
    elif exc.status_code == 422 and exc.code == "context_too_long":
        assert context_too_long(exc)
        assert (answer.status, answer.code, answer.param) == (400, "context_length_exceeded", param or "messages")
    elif exc.status_code in (409, 422):
        assert (answer.status, answer.code, answer.param, answer.type) == (400, exc.code, param, INVALID)
    else:  # the server's own failures keep their status, and headers such as Retry-After
        assert (answer.status, answer.type, answer.code) == (exc.status_code, "server_error", exc.code)
        assert answer.headers == exc.headers


def test_context_too_long_is_recognised_by_its_code_alone():
    assert context_too_long(errors.InvalidRequest("x", code="context_too_long"))
    assert not context_too_long(errors.InvalidRequest("the canvas takes 300 tokens; context_too_long"))


@pytest.fixture(scope="module")
def openai_app() -> TestClient:
    from redraft.api.openai import create_openai_app

    return TestClient(create_openai_app(), raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        (
            "post",
            "/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            401,
            "invalid_api_key",
        ),
        ("get", "/models", None, 401, "invalid_api_key"),
        ("get", "/engines", None, 404, "not_found"),
        ("get", "/chat/completions", None, 405, "method_not_allowed"),
    ],
)
def test_the_sub_application_answers_in_the_envelope(openai_app, method, path, body, status, code):
    r = openai_app.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and set(r.json()["error"]) == ENVELOPE and r.json()["error"]["code"] == code
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer" and "missing API key" in r.json()["error"]["message"]
