"""The OpenAI sub-application's OpenAPI document says exactly which bodies pass: a field's value is refused if and
only if it breaks the document's schema (checked with a JSON Schema validator against the request models and the
job each body becomes), every error status a route answers is documented in its shape, and the bearer scheme is
declared. Rules between fields and checks made at compile time are the declared exceptions
(schemathesis-openai.toml); the fields below vary one at a time, so those do not arise."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from redraft.api.openai import create_openai_app
from redraft.api.openai.errors import OpenAIError
from redraft.api.openai.jobs import chat_plans, completion_plans
from redraft.api.openai.schemas import ChatCompletionCreate, CompletionCreate

DOC = create_openai_app().openapi()
CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "Name a colour."}]}
COMPLETION = {"model": "redraft-tiny", "prompt": "The capital of France is"}
# Fields whose refusals depend on another field (the declared exceptions): t_max needs t_min, diffusing needs
# stream, best_of is 1 or n.
PAIRED = {"t_max", "t_min", "diffusing", "best_of"}

# Values near the neutral ones and the types' edges, then any JSON.
EDGES = [None, False, True, 0, 0.0, 1, 1.0, 2.0, -1, 0.5, 1.5, 2**53, 2**53 + 1, "", "none", "text", "x", "1",
         [], ["text"], ["a", "b"], [""], ["a"] * 5, [1], {}, {"a": 1}, {"type": "text"}, {"type": "json_object"},
         [{"type": "text", "text": "hi"}], [{"type": "image_url", "image_url": {"url": "x"}}], {"regex": "[0-9]"},
         {"choice": ["a"]}, {"choice": []}, {"json_object": True}, {"json_object": False}, {"grammar": "x"},
         {"include_usage": True}, {"banned": ["x"]}, {"avoid_rounds": 2.0}]
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
VALUES = st.sampled_from(EDGES) | JSON


def schema_valid(name: str, body: dict[str, Any]) -> bool:
    schema = {**DOC, "$ref": f"#/components/schemas/{name}"}
    return Draft202012Validator(schema).is_valid(body)


def accepted(model: type[ChatCompletionCreate] | type[CompletionCreate], body: dict[str, Any]) -> bool:
    """The body passes the request's schema and becomes valid jobs (what happens before anything is submitted)."""
    so = body.get("structured_outputs")
    assume(not (isinstance(so, dict) and isinstance(so.get("json"), str)))  # JSON text: parsed, a declared exception
    try:
        request = model.model_validate(copy.deepcopy(body))
        chat_plans(request) if isinstance(request, ChatCompletionCreate) else completion_plans(request)
    except (ValidationError, OpenAIError):
        return False
    return True


def fields(model: type[ChatCompletionCreate] | type[CompletionCreate], required: dict[str, Any]) -> list[str]:
    return sorted({f.alias or n for n, f in model.model_fields.items()} - set(required) - PAIRED)


@settings(max_examples=600, deadline=None)
@given(data=st.data())
def test_a_chat_field_is_refused_exactly_when_the_document_says_so(data):
    name = data.draw(st.sampled_from(fields(ChatCompletionCreate, CHAT)), label="field")
    body = {**CHAT, name: data.draw(VALUES, label="value")}
    assert accepted(ChatCompletionCreate, body) == schema_valid("ChatCompletionCreate", body)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_a_message_field_is_refused_exactly_when_the_document_says_so(data):
    name = data.draw(st.sampled_from(["role", "content", "name", "refusal", "tool_calls", "function_call", "audio",
                                      "annotations"]), label="field")
    body = {**CHAT, "messages": [{**CHAT["messages"][0], name: data.draw(VALUES, label="value")}]}
    assert accepted(ChatCompletionCreate, body) == schema_valid("ChatCompletionCreate", body)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_completion_field_is_refused_exactly_when_the_document_says_so(data):
    name = data.draw(st.sampled_from(fields(CompletionCreate, COMPLETION) + ["prompt"]), label="field")
    body = {**COMPLETION, name: data.draw(VALUES, label="value")}
    assert accepted(CompletionCreate, body) == schema_valid("CompletionCreate", body)


@pytest.mark.parametrize("body,param,says", [
    ({**COMPLETION, "echo": 0}, "echo", "valid boolean"),
    ({**CHAT, "messages": [{"role": "", "content": "x"}]}, "messages.0.role", "'system', 'developer'"),
    ({**CHAT, "frequency_penalty": 0.5}, "frequency_penalty", "no frequency penalty; leave it out"),
    ({**CHAT, "messages": [{"role": "tool", "content": "x"}]}, "messages", "tool calling"),
    ({**CHAT, "stop": ["a"] * 5}, "stop", "up to 4 non-empty strings"),
    ({**CHAT, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format",
     '"schema": {...}'),
])
def test_the_refusals_say_which_field_and_what_it_takes(body, param, says):
    model = ChatCompletionCreate if "messages" in body else CompletionCreate
    assert not schema_valid(model.__name__, body)
    try:
        model.model_validate(body)
    except OpenAIError as exc:
        assert (exc.status, exc.param) == (400, param) and says in exc.message, exc.message
    except ValidationError as exc:  # the sub-app answers it with OpenAI's 400 (api/openai/__init__.py)
        err = exc.errors()[0]
        assert ".".join(str(p) for p in err["loc"]) == param and says in err["msg"], err
    else:
        pytest.fail(f"{body} was accepted")


def test_text_parts_and_integral_numbers_reach_the_job():
    body = {**CHAT, "n": 2.0, "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                                          {"role": "user", "content": "Name a colour."}]}
    plans = chat_plans(ChatCompletionCreate.model_validate(body))
    assert [p.request.seed for p in plans] == [0, 1]
    assert plans[0].request.messages[0].role == "system"
    assert plans[0].request.messages[0].content[0].text == "Be brief."


def test_every_operation_documents_its_errors_in_openais_shape_and_the_bearer_scheme():
    assert DOC["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "an API key from `redraft keys create --tenant NAME`"}
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in DOC["paths"].items():
        for method, op in operations.items():
            assert op["security"] == [{"HTTPBearer": []}], (method, path)
            responses = op["responses"]
            assert "422" not in responses, (method, path)  # validation errors are OpenAI's 400 here
            expected = {"401", "503"} | ({"404"} if "{" in path else set())
            if method == "post":
                expected |= {"400", "404", "429", "500", "504"}
                assert set(responses["200"]["content"]) == {"application/json", "text/event-stream"}, path
                assert responses["413"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"}  # the body limit in front of every route
            assert expected <= set(responses), (method, path, sorted(responses))
            for status in expected:
                assert responses[status]["content"]["application/json"]["schema"] == error, (method, path, status)
