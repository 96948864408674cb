"""/readyz (issue 12): ready only while a worker is alive (heartbeats in Redis), with the queue depth; a quick
503 when no worker is alive or Redis does not answer. The client time-outs are bounds on hanging, far above
the configured ``readyz_timeout_s``."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
import uvicorn

from redraft.embedded import free_port
from tests.utils.service import reset_caches, silent_listener
from tests.utils.waiting import until


def _ready(client: httpx.Client, status: int, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (r := client.get("/readyz")).status_code != status:
        assert time.monotonic() < deadline, f"/readyz still {r.status_code}: {r.text}"
        time.sleep(0.1)
    return r.json()


def test_readyz_follows_the_workers_heartbeats_and_counts_the_queue(service_on):
    svc = service_on(workers=1)
    with svc.client(svc.new_key("acme")) as client:
        body = _ready(client, 200)
        assert body["status"] == "ready" and body["workers"] == 1 and body["queue_depth"] == 0
        assert body["checks"] == {"database": "ok", "redis": "ok", "workers": "ok"}
        svc.kill_worker(svc.workers[0])
        body = _ready(client, 503)  # once its heartbeat expires
        assert body["status"] == "not ready" and body["workers"] == 0
        assert body["checks"]["workers"].startswith("error: no live worker")
        assert client.post("/v1/jobs", json={"kind": "infill", "text": "a [[gap:2]]"}).status_code == 202
        assert client.get("/readyz").json()["queue_depth"] == 1


@pytest.fixture
def silent_redis():
    """A Redis URL on a listener that accepts every connection and never sends a byte, as a hung Redis does."""
    with silent_listener() as port:
        yield f"redis://127.0.0.1:{port}/0"


def test_readyz_answers_503_quickly_when_redis_hangs(silent_redis, tiny_model_dir, tmp_path, monkeypatch):
    from redraft.storage.migrate import upgrade

    database = f"sqlite:///{tmp_path / 'redraft.db'}"
    for key, value in {"DATABASE_URL": database, "REDIS_URL": silent_redis, "REDRAFT_READYZ_TIMEOUT_S": "0.5",
                       "REDRAFT_MODELS": f'{{"tiny-random": "{tiny_model_dir}"}}',
                       "REDRAFT_DEFAULT_MODEL": "tiny-random"}.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    upgrade(database)
    from redraft.api.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        until(lambda: server.started, "the API never started", timeout_s=20)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            r = client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"] == {"database": "ok", "redis": "error: no answer within 0.5 s",
                                          "workers": "error: no answer within 0.5 s"}
            assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        monkeypatch.undo()
        reset_caches()
