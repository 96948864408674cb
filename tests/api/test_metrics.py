"""``GET /metrics``: the API as its own process (``uvicorn redraft.api.main:app``, as docker-compose.yml runs it) and a
real Celery worker, sharing one metrics directory (prometheus-client's multiprocess mode), on a fresh SQLite file
and the test Redis. Queue depth and jobs by state are read at scrape time, step latency and forward time come
from the worker's files, rejections are counted by their error code; a scrape answers even when the database
and Redis do not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from redraft.embedded import free_port, start_worker
from redraft.settings import REPO_ROOT, Settings, get_settings
from tests.utils.service import REDIS_URL, silent_listener, wait_for

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    url: str
    env: dict[str, str]
    key: str
    work: Path
    workers: list[subprocess.Popen]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of an exposition text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    return samples(r.text)


@pytest.fixture(scope="module")
def stack(tiny_model_dir, tmp_path_factory) -> Iterator[Stack]:
    from redraft.storage import repo
    from redraft.storage.db import get_sessionmaker, reset_database_engines
    from redraft.storage.migrate import upgrade

    work = tmp_path_factory.mktemp("metrics")
    env = {"DATABASE_URL": f"sqlite:///{work / 'redraft.db'}", "REDIS_URL": REDIS_URL,
           "REDRAFT_MODELS": json.dumps({"tiny-random": str(tiny_model_dir)}), "REDRAFT_DEFAULT_MODEL": "tiny-random",
           "REDRAFT_QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}", "REDRAFT_METRICS_DIR": str(work / "metrics"),
           "REDRAFT_MAX_BODY_BYTES": "4096", "REDRAFT_WORKER_BATCH_SIZE": "2", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    upgrade(env["DATABASE_URL"])
    with get_sessionmaker(env["DATABASE_URL"])() as s:
        key, _ = repo.create_api_key(s, "acme")
        s.commit()
    port = free_port()
    with (work / "api.log").open("ab") as log:
        api = subprocess.Popen([sys.executable, "-m", "uvicorn", "redraft.api.main:app", "--host", "127.0.0.1", "--port",
                                str(port)], env={**os.environ, **env}, cwd=REPO_ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
    stack = Stack(f"http://127.0.0.1:{port}", env, key, work, [])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{stack.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start: {(work / 'api.log').read_text()[-3000:]}")
            time.sleep(0.1)
        yield stack
    finally:
        for proc in [*stack.workers, api]:
            proc.terminate()
        for proc in [*stack.workers, api]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        reset_database_engines(env["DATABASE_URL"])


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=30) as c:
        yield c


def test_queue_depth_jobs_by_state_and_the_workers_step_times(stack, client):
    before = scrape(client)
    assert before[("redraft_jobs", (("state", "queued"),))] == 0
    assert {v for (name, _), v in before.items() if name == "redraft_metrics_source_up"} == {1.0}

    job = client.post("/v1/jobs", json={"kind": "infill", "text": "Dear [[gap:4]], thanks.", "steps": 4}).json()
    queued = scrape(client)  # no worker yet: the message waits in the queue
    assert queued[("redraft_queue_depth", (("queue", stack.env["REDRAFT_QUEUE_NAME"]),))] == 1
    assert queued[("redraft_jobs", (("state", "queued"),))] == 1

    stack.workers.append(start_worker(stack.env, stack.work / "worker.log", stack.env["REDRAFT_QUEUE_NAME"]))
    done = wait_for(client, job["id"])
    assert done["status"] == "succeeded"
    after = scrape(client)
    model = (("model", "tiny-random"),)
    assert after[("redraft_step_seconds_count", model)] >= done["timings"]["steps_run"] > 0
    assert after[("redraft_forward_seconds_count", model)] == after[("redraft_step_seconds_count", model)]
    assert 0 < after[("redraft_forward_seconds_sum", model)] <= after[("redraft_step_seconds_sum", model)]
    assert after[("redraft_jobs", (("state", "succeeded"),))] == 1
    assert after[("redraft_jobs", (("state", "queued"),))] == 0
    assert after[("redraft_queue_depth", (("queue", stack.env["REDRAFT_QUEUE_NAME"]),))] == 0
    assert ("redraft_automaton_cache_bytes", ()) in after and ("redraft_compile_seconds_count", ()) in after


def test_rejections_are_counted_by_their_error_code(stack, client):
    def rejected() -> dict[tuple, float]:
        return {labels: v for (name, labels), v in scrape(client).items() if name == "redraft_rejections_total"}

    before = rejected()
    assert client.get("/v1/jobs", headers={"Authorization": ""}).status_code == 401
    assert client.post("/v1/jobs", json={"kind": "infill", "text": "no gap here"}).status_code == 422
    assert client.post("/v1/jobs", content=b"{", headers={"Content-Type": "application/json"}).status_code == 422
    assert client.post("/v1/jobs", content=b"x" * 5000).status_code == 413  # over REDRAFT_MAX_BODY_BYTES
    assert client.get(f"/v1/jobs/{uuid.uuid4().hex}").status_code == 404
    after = rejected()
    grew = {labels: after[labels] - before.get(labels, 0) for labels in after if after[labels] != before.get(labels)}
    assert {dict(labels)["code"]: (dict(labels)["status"], n) for labels, n in grew.items()} == {
        "unauthorized": ("401", 1), "invalid_request": ("422", 2), "body_too_large": ("413", 1), "not_found": ("404", 1)}


@pytest.fixture(name="silent_listener")
def silent_listener_port() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte (a hung PostgreSQL or Redis)."""
    with silent_listener() as port:
        yield port


def test_a_scrape_answers_when_the_database_and_redis_do_not(silent_listener, monkeypatch):
    from redraft.api.metrics import render
    from redraft.storage.db import reset_database_engines

    monkeypatch.setenv("REDRAFT_DB_CONNECT_TIMEOUT_S", "1")
    get_settings.cache_clear()
    hung = Settings(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{silent_listener}/test",
                    redis_url=f"redis://127.0.0.1:{silent_listener}/0", metrics_scrape_timeout_s=0.5)
    try:
        got = samples(render(hung).decode())
    finally:
        reset_database_engines(hung.database_url)
        monkeypatch.undo()
        get_settings.cache_clear()
    up = {dict(labels)["source"]: v for (name, labels), v in got.items() if name == "redraft_metrics_source_up"}
    assert up == {"database": 0, "redis": 0, "automaton_cache": 1}
    assert not any(name in ("redraft_jobs", "redraft_queue_depth") for name, _ in got)


def test_compile_time_is_observed_and_metrics_can_be_turned_off(monkeypatch):
    from fastapi.testclient import TestClient
    from prometheus_client import REGISTRY

    from redraft.api.main import create_app
    from redraft.api.metrics import observe_compile

    before = REGISTRY.get_sample_value("redraft_compile_seconds_count") or 0
    with pytest.raises(ValueError), observe_compile():  # a refused compile is timed too
        raise ValueError("refused")
    assert REGISTRY.get_sample_value("redraft_compile_seconds_count") == before + 1

    monkeypatch.setenv("REDRAFT_METRICS_ENABLED", "false")
    get_settings.cache_clear()
    try:
        assert TestClient(create_app()).get("/metrics").status_code == 404
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
