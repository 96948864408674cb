"""A database that does not answer (issue 12): a real TCP listener that accepts connections and never replies,
as a hung PostgreSQL does. The API must stay up and honest: /healthz answers without touching the database or
the thread pool, /readyz says the database is down, and every route that needs it answers 503 with Retry-After,
not a 500 and not a hang. The client time-outs below are bounds on hanging, far above the configured 2 s."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from redraft.embedded import free_port
from tests.utils.service import REDIS_URL, reset_caches, silent_listener
from tests.utils.waiting import until


@pytest.fixture
def silent_database():
    """A PostgreSQL URL on a listener that accepts every connection and never sends a byte."""
    with silent_listener() as port:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"


@pytest.fixture
def api(silent_database, tiny_model_dir, monkeypatch):
    for key, value in {"DATABASE_URL": silent_database, "REDIS_URL": REDIS_URL,
                       "REDRAFT_MODELS": f'{{"tiny-random": "{tiny_model_dir}"}}', "REDRAFT_DEFAULT_MODEL": "tiny-random",
                       "REDRAFT_DB_CONNECT_TIMEOUT_S": "2", "REDRAFT_DB_POOL_TIMEOUT_S": "2"}.items():
        monkeypatch.setenv(key, value)
    reset_caches()
    from redraft.api.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    until(lambda: server.started, "the API never started", timeout_s=20)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
    monkeypatch.undo()
    reset_caches()


def test_a_silent_database_gives_503s_and_healthz_stays_up(api):
    auth = {"Authorization": "Bearer rd_not_checked_without_a_database"}
    with httpx.Client(base_url=api, timeout=60) as client, ThreadPoolExecutor(16) as pool:
        # Enough requests at once to hold every worker thread of the API's pool on the silent database.
        busy = [pool.submit(client.get, "/v1/jobs", headers=auth) for _ in range(16)]
        assert client.get("/healthz").json() == {"status": "ok"}  # while all of them wait
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("error")
        for future in busy:
            r = future.result()
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "5" and r.json()["code"] == "database_unavailable"
        r = client.post("/v1/jobs", headers=auth, json={"kind": "infill", "text": "a [[gap]] b"})
        assert r.status_code == 503 and "retry" in r.json()["detail"]
