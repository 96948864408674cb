"""A real Redraft for end-to-end tests: the API on uvicorn in a thread, Celery workers as real
processes, a real Redis and a real database (SQLite file or PostgreSQL). Nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psycopg
import redis
import uvicorn

from redraft.embedded import free_port, start_worker

if TYPE_CHECKING:
    from redraft.storage.tables import Job

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def create_pg_database() -> tuple[str, str]:
    name = f"redraft_e2e_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL must answer at {PG_ADMIN} for the tests (CI starts it): {exc}") from exc
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_service(backend: str, model_dir: Path, work_dir: Path, workers: int = 1, **settings: str) -> Iterator[Service]:
    """A started Service on a fresh database of ``backend`` ("sqlite" or "postgresql"), stopped after."""
    pg_name = None
    if backend == "sqlite":
        url = f"sqlite:///{work_dir / 'redraft.db'}"
    else:
        pg_name, url = create_pg_database()
    svc = Service(url, model_dir, work_dir, **settings).start(workers=workers)
    try:
        yield svc
    finally:
        svc.stop()
        if pg_name:
            drop_pg_database(pg_name)


def reset_caches() -> None:
    """Settings, engine and Celery app are created once per process; tests switch them between services."""
    from redraft.families import load_model_info
    from redraft.queue import get_celery
    from redraft.settings import get_settings
    from redraft.storage import db

    get_settings.cache_clear()
    get_celery.cache_clear()
    load_model_info.cache_clear()
    db.reset_database_engines()


class Service:
    def __init__(self, database_url: str, model_dir: Path, work_dir: Path, **settings: str) -> None:
        self.work_dir = work_dir
        self.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "REDRAFT_MODELS": json.dumps({"tiny-random": str(model_dir)}),
            "REDRAFT_DEFAULT_MODEL": "tiny-random",
            "REDRAFT_QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}",  # isolates this service's jobs on a shared Redis
            "REDRAFT_HEARTBEAT_TIMEOUT_S": "5",
            "REDRAFT_REAPER_INTERVAL_S": "0.5",
            "REDRAFT_WORKER_BATCH_SIZE": "2",  # small, so tests see jobs batched together and jobs queued behind
            "HF_HUB_OFFLINE": "1",
            **settings,
        }
        self.workers: list[subprocess.Popen] = []
        self.server: uvicorn.Server | None = None

    def start(self, workers: int = 1) -> Service:
        os.environ.update(self.env)
        reset_caches()
        from redraft.api.main import create_app
        from redraft.storage.migrate import upgrade

        upgrade(self.env["DATABASE_URL"])
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("API did not start")
            time.sleep(0.05)
        for _ in range(workers):
            self.start_worker()
        return self

    def start_worker(self, **env: str) -> subprocess.Popen:
        """One more worker process; ``env`` overrides this service's settings for it alone."""
        proc = start_worker({**self.env, **env}, self.work_dir / "worker.log", self.env["REDRAFT_QUEUE_NAME"])
        self.workers.append(proc)
        return proc

    def job_row(self, job_id: str) -> Job:
        """The job's row as the database has it now (any tenant's)."""
        from redraft.storage.db import session_scope
        from redraft.storage.tables import Job

        with session_scope() as s:
            row = s.get(Job, job_id)
            s.expunge(row)
            return row

    def broker(self) -> redis.Redis:
        """A client for this service's Redis."""
        return redis.Redis.from_url(self.env["REDIS_URL"], socket_timeout=5)

    def kill_worker(self, proc: subprocess.Popen) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        self.workers.remove(proc)

    def stop(self) -> None:
        for proc in self.workers:
            proc.terminate()
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.workers.clear()
        if self.server is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)
        for key in self.env:
            os.environ.pop(key, None)
        reset_caches()

    def new_key(self, tenant: str) -> str:
        from redraft.storage import repo
        from redraft.storage.db import session_scope

        with session_scope() as s:
            key, _ = repo.create_api_key(s, tenant)
        return key

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def wait_for(client: httpx.Client, job_id: str, timeout: float = 120, until=("succeeded", "failed", "cancelled")):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")
        time.sleep(0.1)


def read_sse(client, job_id, timeout=60) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a job's SSE stream, up to and including `done` or `failed`."""
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as r:
        assert r.status_code == 200
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event:
                events.append((event, json.loads(line.split(":", 1)[1])))
                if event in ("done", "failed"):
                    break
    return events


@contextmanager
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts every connection and never sends a byte, as a hung PostgreSQL or Redis
    does; yields the port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=10)
        for conn in held:
            conn.close()
        server.close()

