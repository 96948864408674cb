"""/openai/v1 when jobs do not finish: a client that disconnects cancels its job (blocking or streaming), and a
request that waits past REDRAFT_OPENAI_WAIT_TIMEOUT_S is a 504 naming the job, which goes on and keeps its result.

The service starts with no worker, so a job stays queued for as long as a test needs (no race with a worker)."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.utils.service import running_service, wait_for

CHAT = [{"role": "user", "content": "Name a colour."}]
WAIT_S = 4


@pytest.fixture(scope="module")
def service(tiny_model_dir, tiny_chat_model_dir, tmp_path_factory):
    models = json.dumps({"tiny-random": str(tiny_model_dir), "tiny-chat": str(tiny_chat_model_dir)})
    with running_service("sqlite", tiny_model_dir, tmp_path_factory.mktemp("openai-faults"), workers=0,
                         REDRAFT_MODELS=models, REDRAFT_OPENAI_WAIT_TIMEOUT_S=str(WAIT_S)) as svc:
        yield svc


def only_job(client) -> dict:
    """The tenant's one job, once it exists."""
    deadline = time.monotonic() + 30
    while not (jobs := client.get("/v1/jobs").json()["data"]):
        assert time.monotonic() < deadline, "no job was submitted"
        time.sleep(0.1)
    (job,) = jobs
    return job


def test_a_client_that_gives_up_on_a_blocking_request_cancels_its_job(service):
    key = service.new_key("openai-gone")
    with openai.OpenAI(base_url=f"{service.url}/openai/v1", api_key=key, max_retries=0, timeout=0.5) as oa:
        with pytest.raises(openai.APITimeoutError):  # the client hangs up long before the server's limit
            oa.chat.completions.create(model="tiny-chat", messages=CHAT, max_tokens=4)
    with service.client(key) as rd:
        assert wait_for(rd, only_job(rd)["id"], timeout=WAIT_S * 3)["status"] == "cancelled"


def test_a_client_that_closes_a_stream_cancels_its_job(service):
    key = service.new_key("openai-stream-gone")
    with openai.OpenAI(base_url=f"{service.url}/openai/v1", api_key=key, max_retries=0) as oa:
        stream = oa.chat.completions.create(model="tiny-chat", messages=CHAT, max_tokens=4, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        job_id = stream.response.headers["x-redraft-job-id"]
        stream.close()
    with service.client(key) as rd:
        assert wait_for(rd, job_id, timeout=WAIT_S * 3)["status"] == "cancelled"


def test_a_spent_quota_is_a_429_with_retry_after_and_leaves_no_job_queued(service):
    key = service.new_key("openai-quota")
    with openai.OpenAI(base_url=f"{service.url}/openai/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as exc:  # n is past REDRAFT_TENANT_MAX_CONCURRENT_JOBS (8)
            client.chat.completions.create(model="tiny-chat", messages=CHAT, n=9, max_tokens=4)
    error = exc.value.response.json()["error"]
    assert error["code"] == "too_many_concurrent_jobs" and error["type"] == "rate_limit_error"
    assert int(exc.value.response.headers["Retry-After"]) >= 1
    with service.client(key) as c:  # the 8 jobs admitted before the refusal are cancelled, none left queued
        assert [j["status"] for j in c.get("/v1/jobs").json()["data"]] == ["cancelled"] * 8


def test_a_request_past_the_wait_limit_is_a_504_and_its_job_goes_on(service):
    key = service.new_key("openai-slow")
    with openai.OpenAI(base_url=f"{service.url}/openai/v1", api_key=key, max_retries=0, timeout=60) as oa:
        with pytest.raises(openai.APIStatusError) as exc:
            oa.completions.create(model="tiny-random", prompt="Once upon a time", max_tokens=4, extra_body={"steps": 2})
    assert exc.value.status_code == 504
    error = exc.value.response.json()["error"]
    job_id = exc.value.response.headers["x-redraft-job-id"]
    assert error["code"] == "timeout" and job_id in error["message"]
    assert "REDRAFT_OPENAI_WAIT_TIMEOUT_S" in error["message"]
    service.start_worker()  # the job was never cancelled: a worker now runs it, and its result stays readable
    with service.client(key) as rd:
        done = wait_for(rd, job_id)
        assert done["status"] == "succeeded" and done["result"]["text"].startswith("Once upon a time")
