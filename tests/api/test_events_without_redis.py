"""Event streams when Redis is down (issue 12): the database is the source of truth, so a stream opened while
the service's Redis is stopped still sends every stored step and the end, instead of answering 200 and dropping.
The test starts its own Redis on another port and stops that one, never the shared one."""

from __future__ import annotations

import shutil
import subprocess
import time

import redis

from redraft.embedded import free_port
from tests.utils.service import read_sse, running_service, wait_for


def start_redis(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            if redis.Redis(port=port).ping():
                return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start on port {port}")


def test_a_stream_opened_while_redis_is_down_replays_from_the_database(tiny_model_dir, tmp_path):
    port = free_port()
    own = start_redis(port)
    try:
        with running_service("sqlite", tiny_model_dir, tmp_path, REDIS_URL=f"redis://127.0.0.1:{port}/0") as svc:
            with svc.client(svc.new_key("acme")) as client:
                job = client.post("/v1/jobs", json={"kind": "infill", "text": "One [[gap:6]] two.", "steps": 6}).json()
                done = wait_for(client, job["id"])
                stored = client.get(f"/v1/jobs/{job['id']}/steps").json()["data"]
                own.terminate()
                own.wait(timeout=10)
                assert client.get("/readyz").status_code == 503  # Redis is down, and /readyz says so
                events = read_sse(client, job["id"], timeout=30)
                own = start_redis(port)  # back up before the service stops its worker
        assert [d for e, d in events if e == "step"] == stored and len(stored) > 0
        assert events[-1][0] == "done" and events[-1][1]["status"] == done["status"] == "succeeded"
    finally:
        own.terminate()
        own.wait(timeout=10)
