"""Fault tests: real processes (API, Celery workers, a private redis-server that the test stops and starts
again), real databases; loopback only. Nothing is mocked."""

from __future__ import annotations

import pytest

from redraft.embedded import RedisServer
from tests.utils.service import running_service

# Liveness settles fast in these tests: a worker is dead 2 s after its last heartbeat.
FAST_LIVENESS = {"REDRAFT_WORKER_HEARTBEAT_INTERVAL_S": "0.5", "REDRAFT_WORKER_HEARTBEAT_TTL_S": "2",
                 "REDRAFT_ENQUEUE_GRACE_S": "1"}


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of our own (no persistence, as the embedded default), on a port that stays the same
    across restarts."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def service_on(private_redis, tiny_model_dir, tmp_path):
    """``service_on(workers=..., **settings)``: a running Redraft on SQLite whose broker is ``private_redis``."""
    stack = []

    def start(workers: int = 1, **settings: str):
        ctx = running_service("sqlite", tiny_model_dir, tmp_path, workers=workers, REDIS_URL=private_redis.url,
                              **{**FAST_LIVENESS, **settings})
        stack.append(ctx)
        return ctx.__enter__()

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)
