"""`generate` jobs with chat `messages`, through the real API (real HTTP, worker, Redis and database)."""

from __future__ import annotations

import json
import re

import pytest

from redraft.families import load_tokenizer
from tests.utils.service import running_service, wait_for

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
# tiny-chat's template (tests/utils/fixtures.py MASKED_CHAT_TEMPLATE) on CHAT, less the BOS it writes first
RENDERED = "<|system|>Be brief.\n<|user|>Name a colour.\n<|assistant|>"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tiny_model_dir, tiny_chat_model_dir, tmp_path_factory):
    """Two models: tiny-random has no chat template, tiny-chat has one in its tokenizer_config.json."""
    models = json.dumps({"tiny-random": str(tiny_model_dir), "tiny-chat": str(tiny_chat_model_dir)})
    with running_service(request.param, tiny_model_dir, tmp_path_factory.mktemp(request.param),
                         REDRAFT_MODELS=models) as svc:
        yield svc


def submit(client, **body):
    return client.post("/v1/jobs", json={"kind": "generate", "model": "tiny-chat", "steps": 4, **body})


def stored_job(job_id):
    """The job row as submission wrote it (its request and canvas)."""
    from redraft.storage import repo
    from redraft.storage.db import session_scope

    with session_scope() as s:
        job = repo.get_job(s, job_id)
        return job.request, job.canvas


def test_messages_job_is_accepted_and_its_canvas_starts_with_the_conversation(client, tiny_chat_model_dir):
    r = submit(client, messages=CHAT, max_tokens=6)
    assert r.status_code == 202, r.text
    request, canvas = stored_job(r.json()["id"])
    assert request["messages"] == CHAT and "prompt" not in request
    assert canvas["pieces"] == [RENDERED, 0] and canvas["slots"][0]["name"] == "answer"
    steps = client.get(f"/v1/jobs/{r.json()['id']}/steps").json()
    tokenizer = load_tokenizer(tiny_chat_model_dir)
    head = [tokenizer.token_to_id("[BOS]"), *tokenizer.encode(RENDERED, add_special_tokens=False).ids]
    assert steps["canvas"][:len(head)] == head and all(steps["fixed"][:len(head)])
    assert steps["canvas"].count(head[0]) == 1  # one BOS: the canvas's, not the template's too
    answer = steps["canvas"][len(head):len(head) + 6]
    assert answer == [steps["mask_id"]] * 6 and not any(steps["fixed"][len(head):len(head) + 6])


def test_messages_with_text_parts_render_like_plain_content(client):
    parts = [CHAT[0], {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]
    a, b = submit(client, messages=parts, max_tokens=3), submit(client, messages=CHAT, max_tokens=3)
    assert a.status_code == b.status_code == 202, (a.text, b.text)
    assert stored_job(a.json()["id"])[1] == stored_job(b.json()["id"])[1]


def test_messages_with_a_regex_target_are_accepted(client):
    r = submit(client, messages=CHAT, target={"regex": "(red|green|blue)"}, max_tokens=4, min_tokens=1)
    assert r.status_code == 202, r.text
    _, canvas = stored_job(r.json()["id"])
    assert canvas["pieces"] == [RENDERED, 0]
    slot = canvas["slots"][0]
    assert (slot["name"], slot["max_tokens"], slot["min_tokens"]) == ("answer", 4, 1)
    assert slot["target"] == ["regex", "(red|green|blue)"]


def test_a_messages_job_runs_to_an_answer_that_meets_its_target(client):
    r = submit(client, messages=CHAT, target={"regex": "(red|green|blue)"}, max_tokens=4, seed=2)
    done = wait_for(client, r.json()["id"])
    assert done["status"] == "succeeded", done["error"]
    assert re.fullmatch("(red|green|blue)", done["result"]["slots"]["answer"])
    assert done["result"]["text"] == RENDERED + done["result"]["slots"]["answer"]


@pytest.mark.parametrize("body,code,message", [
    ({"model": "tiny-random", "messages": CHAT}, "no_chat_template",
     "model 'tiny-random' cannot take `messages`: its directory has no chat_template.jinja and its "
     "tokenizer_config.json no chat_template; use `prompt`"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                                {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "invalid_request", "only text parts"),
    ({"messages": CHAT, "prompt": "Hello"}, "invalid_request", "give exactly one of"),
    ({"messages": []}, "invalid_request", "messages"),
    ({"messages": [{"role": "tool", "content": "42"}]}, "invalid_request", "messages.0.role"),
    ({"messages": [{"role": "user", "content": "x" * 200_001}]}, "invalid_request", "at most 200,000"),
    ({"messages": [{"role": "user", "content": "hi"}] * 501}, "invalid_request", "at most 500"),
    ({"messages": CHAT, "target": {"regex": "("}}, "invalid_constraint", "invalid regex"),
])
def test_bad_messages_are_422s_and_write_no_job(service, body, code, message):
    with service.client(service.new_key("chat-422")) as client:  # a fresh tenant: it has no jobs
        r = submit(client, **body)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == code and message in r.json()["detail"], r.json()
        assert client.get("/v1/jobs").json()["count"] == 0
