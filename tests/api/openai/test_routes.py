"""The OpenAI-compatible endpoint (/openai/v1), driven with the official `openai` client against the real service
(API on uvicorn, a Celery worker, Redis, PostgreSQL). Every request must be an ordinary Redraft job."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pytest

from redraft.api.openai.stream import UNDECIDED
from tests.utils.service import running_service

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
FAST = {"steps": 4}  # Redraft's own field, beside OpenAI's (extra_body)


@pytest.fixture(scope="module")
def service(tiny_model_dir, tiny_chat_model_dir, tmp_path_factory):
    """tiny-random (no chat template) and tiny-chat (a chat template), one worker, PostgreSQL."""
    models = json.dumps({"tiny-random": str(tiny_model_dir), "tiny-chat": str(tiny_chat_model_dir)})
    with running_service("postgresql", tiny_model_dir, tmp_path_factory.mktemp("openai"), REDRAFT_MODELS=models) as svc:
        yield svc


@pytest.fixture(scope="module")
def key(service):
    return service.new_key("openai-acme")


@pytest.fixture(scope="module")
def oa(service, key):
    with openai.OpenAI(base_url=f"{service.url}/openai/v1", api_key=key, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def rd(service, key):
    with service.client(key) as c:
        yield c


def job_ids(raw) -> list[str]:
    return [i.strip() for i in raw.headers["x-redraft-job-id"].split(",")]


def chat(oa, **kw):
    """A chat completion and the ids of its jobs."""
    raw = oa.chat.completions.with_raw_response.create(**{"model": "tiny-chat", "messages": CHAT, "max_tokens": 6,
                                                          "extra_body": FAST, **kw})
    return raw.parse(), job_ids(raw)


def test_a_chat_completion_is_a_generate_job_with_the_messages(oa, rd):
    done, (job_id,) = chat(oa, seed=1)
    assert done.object == "chat.completion" and done.id == f"chatcmpl-{job_id}" and done.model == "tiny-chat"
    (choice,) = done.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    job = rd.get(f"/v1/jobs/{job_id}").json()
    assert job["kind"] == "generate" and job["status"] == "succeeded" and job["params"]["seed"] == 1
    assert job["result"]["slots"]["answer"] == choice.message.content
    steps = rd.get(f"/v1/jobs/{job_id}/steps").json()
    assert done.usage.prompt_tokens == sum(steps["fixed"])
    assert 0 <= done.usage.completion_tokens <= 6
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


def test_n_choices_are_n_jobs_with_consecutive_seeds_and_repeat_exactly(oa, rd):
    done, ids = chat(oa, n=2, seed=3, temperature=1.0)
    assert [c.index for c in done.choices] == [0, 1] and len(set(ids)) == 2
    assert [rd.get(f"/v1/jobs/{i}").json()["params"]["seed"] for i in ids] == [3, 4]
    again, _ = chat(oa, n=2, seed=3, temperature=1.0)
    assert [c.message.content for c in again.choices] == [c.message.content for c in done.choices]


def test_streamed_deltas_concatenate_to_the_final_message(oa, rd):
    blocking, _ = chat(oa, seed=5, max_tokens=8, extra_body={"steps": 8, "block_size": 2})
    stream = oa.chat.completions.with_raw_response.create(
        model="tiny-chat", messages=CHAT, max_tokens=8, seed=5, stream=True, stream_options={"include_usage": True},
        extra_body={"steps": 8, "block_size": 2})
    (job_id,) = job_ids(stream)
    chunks = list(stream.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    answer = rd.get(f"/v1/jobs/{job_id}").json()["result"]["slots"]["answer"]
    assert text == blocking.choices[0].message.content == answer
    assert finals == [blocking.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == blocking.usage.completion_tokens


def test_diffusing_streams_every_step_with_undecided_positions_then_the_final_text(oa, rd):
    stream = oa.chat.completions.with_raw_response.create(model="tiny-chat", messages=CHAT, max_tokens=6, seed=2,
                                                          stream=True, extra_body={"steps": 4, "diffusing": True})
    (job_id,) = job_ids(stream)
    chunks = [c for c in stream.parse() if c.choices]
    steps = [c for c in chunks if c.model_extra.get("diffusing") and c.choices[0].finish_reason is None
             and c.choices[0].delta.role is None]
    assert len(steps) == rd.get(f"/v1/jobs/{job_id}/steps").json()["count"]
    assert UNDECIDED in steps[0].choices[0].delta.content  # the first step leaves positions undecided
    last = chunks[-1]
    assert last.model_extra.get("diffusing") and last.choices[0].finish_reason in ("stop", "length")
    assert last.choices[0].delta.content == rd.get(f"/v1/jobs/{job_id}").json()["result"]["slots"]["answer"]
    assert UNDECIDED not in last.choices[0].delta.content


BOOK = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 6}, "year": {"type": "integer"}},
        "required": ["title", "year"], "additionalProperties": False}


def test_a_json_schema_response_format_always_validates(oa):
    done, _ = chat(oa, max_tokens=32, response_format={"type": "json_schema", "json_schema": {
        "name": "book", "schema": BOOK, "strict": True}})
    jsonschema.validate(json.loads(done.choices[0].message.content), BOOK)
    assert done.choices[0].finish_reason == "stop"


def test_a_json_object_response_format_is_a_json_object(oa):
    done, _ = chat(oa, max_tokens=16, response_format={"type": "json_object"})
    assert isinstance(json.loads(done.choices[0].message.content), dict)


@pytest.mark.parametrize("structured,check", [
    ({"regex": "[0-9]{3}"}, lambda text: re.fullmatch("[0-9]{3}", text)),
    ({"choice": ["red", "green", "blue"]}, lambda text: text in ("red", "green", "blue")),
])
def test_vllm_structured_outputs_regex_and_choice(oa, structured, check):
    done, _ = chat(oa, extra_body={**FAST, "structured_outputs": structured})
    assert check(done.choices[0].message.content), done.choices[0].message.content


PROMPT, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))  # 3\n"


def test_fim_completion_keeps_prompt_and_suffix_byte_identical(oa, rd, service, key):
    raw = oa.completions.with_raw_response.create(model="tiny-random", prompt=PROMPT, suffix=SUFFIX, max_tokens=6,
                                                  extra_body=FAST)
    done, (job_id,) = raw.parse(), job_ids(raw)
    assert done.object == "text_completion" and done.id == f"cmpl-{job_id}"
    job = rd.get(f"/v1/jobs/{job_id}").json()
    assert job["kind"] == "infill" and job["result"]["text"] == PROMPT + done.choices[0].text + SUFFIX
    # Mercury's shape, the same job kind; echo puts the prompt first
    fim = rd.post("/openai/v1/fim/completions", json={"model": "tiny-random", "prompt": PROMPT, "suffix": SUFFIX,
                                                       "max_tokens": 6, "steps": 4, "echo": True})
    assert fim.status_code == 200, fim.text
    assert fim.json()["choices"][0]["text"] == PROMPT + done.choices[0].text
    assert rd.get(f"/v1/jobs/{fim.headers['x-redraft-job-id']}").json()["kind"] == "infill"


def test_several_prompts_give_n_choices_each_and_count_each_prompt_once(oa, rd):
    raw = oa.completions.with_raw_response.create(model="tiny-random", prompt=["Once upon", "In the beginning"], n=2,
                                                  max_tokens=3, extra_body=FAST)
    done, ids = raw.parse(), job_ids(raw)
    assert [c.index for c in done.choices] == [0, 1, 2, 3] and len(set(ids)) == 4
    prompts = [rd.get(f"/v1/jobs/{i}").json()["result"]["text"] for i in ids]
    assert [p.startswith("Once upon") for p in prompts] == [True, True, False, False]
    fixed = [sum(rd.get(f"/v1/jobs/{i}/steps").json()["fixed"]) for i in ids]
    assert done.usage.prompt_tokens == fixed[0] + fixed[2]


def test_a_stop_string_cuts_the_completion_and_the_stream_agrees(oa):
    kw = {"model": "tiny-random", "prompt": "Once upon a time", "max_tokens": 12, "seed": 7, "extra_body": FAST}
    full = oa.completions.create(**kw).choices[0].text
    if len(full) < 3:
        pytest.skip(f"the random model wrote too little to cut: {full!r}")
    stop = full[1:3]
    cut = oa.completions.create(**kw, stop=[stop])
    assert cut.choices[0].text == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in oa.completions.create(**kw, stop=[stop], stream=True) if c.choices)
    assert streamed == cut.choices[0].text


def test_models_are_listed_in_openais_shape(oa):
    models = oa.models.list()
    assert {m.id for m in models.data} == {"tiny-random", "tiny-chat"}
    assert all(m.object == "model" and m.owned_by == "redraft" for m in models.data)
    assert oa.models.retrieve("tiny-chat").id == "tiny-chat"


def assert_openai_error(exc: openai.APIStatusError, status: int, code: str | None = None, param: str | None = None,
                        says: str = "") -> None:
    assert exc.status_code == status, exc.response.text
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert says in body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    if param is not None:
        assert body["error"]["param"] == param, body


def test_a_bad_key_is_a_401_in_openais_shape(service):
    with openai.OpenAI(base_url=f"{service.url}/openai/v1", api_key="nope", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as exc:
            bad.chat.completions.create(model="tiny-chat", messages=CHAT)
    assert_openai_error(exc.value, 401, "invalid_api_key", says="unknown or revoked API key")


@pytest.mark.parametrize("kw,status,code,param,says", [
    ({"model": "gpt-5"}, 404, "model_not_found", "model", "unknown model 'gpt-5'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}},
     400, "unsupported_schema", "response_format", "`not` at the schema's root cannot be enforced while decoding"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(("}}}}}},
     400, "invalid_constraint", "response_format", "not valid at #.properties.a.pattern: '((' is not a 'regex'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": BOOK}}, "max_tokens": 2},
     400, "invalid_constraint", "response_format", "but the slot has 2"),
    ({"messages": [{"role": "user", "content": "word " * 400}]}, 400, "context_length_exceeded", "messages",
     "takes at most 256"),
    ({"top_p": 0.5}, 400, "unsupported_parameter", "top_p", "nucleus"),
    ({"logprobs": True}, 400, "unsupported_parameter", "logprobs", "log-probabilities"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "unsupported_parameter", "tools", "tool"),
    ({"extra_body": {"frobnicate": 1}}, 400, "unknown_parameter", "frobnicate", "Unrecognized request argument"),
    ({"stop": ["x"], "extra_body": {"structured_outputs": {"regex": "[0-9]+"}}}, 400, None, "stop", "structure"),
    ({"extra_body": {"steps": 0}}, 400, None, None, "steps must be between 1 and"),
])
def test_bad_requests_are_openai_shaped_errors_and_write_no_job(service, kw, status, code, param, says):
    key = service.new_key("openai-errors")  # a fresh tenant: it has no jobs
    with openai.OpenAI(base_url=f"{service.url}/openai/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as exc:
            client.chat.completions.create(**{"model": "tiny-chat", "messages": CHAT, "max_tokens": 6, **kw})
    assert_openai_error(exc.value, status, code, param, says)
    with service.client(key) as c:
        assert c.get("/v1/jobs").json()["count"] == 0


def test_unknown_routes_and_undecodable_bodies_are_openai_shaped(service, key):
    with httpx.Client(base_url=f"{service.url}/openai/v1", headers={"Authorization": f"Bearer {key}"}) as c:
        for r, status in ((c.get("/engines"), 404), (c.post("/chat/completions", content=b"{nope",
                                                                headers={"Content-Type": "application/json"}), 400)):
            assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
