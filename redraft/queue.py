"""The Celery app and the broker's Redis: configuration shared by the API (which only enqueues) and the
workers, and the worker-liveness records both read.

Messages carry only job ids. Long GPU jobs need ``acks_late`` + ``task_reject_on_worker_lost`` +
prefetch 1, and a Redis visibility timeout above the longest job, or Redis re-delivers a job that is
still running.

Liveness lives in the broker's Redis, under ``redraft:<queue>:``:

- ``worker:<id>``: each worker process's heartbeat, a key with a TTL (``REDRAFT_WORKER_HEARTBEAT_TTL_S``)
  refreshed by a thread; its value lists the job ids the process holds (received or running).
- ``workers``: the set of worker ids that have beaten, so readers need no ``SCAN``.
- ``receipts``: job id -> the worker that last received a message for it, removed when that task ends.
  A receipt whose worker's heartbeat is gone, or whose worker no longer holds the job, is a job
  nobody will run: the reaper re-sends it (``workers/reaper.py``).
- ``epoch``: created when absent, so it vanishes whenever Redis loses its data (a restart without
  persistence); it holds the time it was created, and every job sent before that is re-sent.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import redis
from celery import Celery
from kombu.transport import redis as kombu_redis

from redraft.settings import Settings, get_settings

log = logging.getLogger(__name__)

RUN_JOB = "redraft.run_job"


class _BrokerAddress:
    """What kombu's Redis channel reads from its transport to build a connection pool."""

    def __init__(self, client: object, default_port: int) -> None:
        self.client, self.default_port = client, default_port


class RedisChannel(kombu_redis.Channel):
    """kombu's Redis channel, except that it keeps the broker address it was opened with.

    Why: when Redis goes away while tasks are running, Celery ``collect()``s the consumer's connection:
    closing its channel fails (putting the unacknowledged messages back needs Redis) and the transport's
    ``client`` is cleared. Celery then ``close()``s the connection, which closes that channel again; its
    restore builds a new pool from ``transport.client``, now None, and the AttributeError (``'NoneType'
    object has no attribute 'hostname'``; not a connection error, so nothing catches it) ends the worker
    with "Unrecoverable error". With the address kept here, that restore fails with a connection error,
    which Celery ignores, and reconnects; tasks still running ack their messages on the old channel once
    Redis is back.
    """

    def __init__(self, connection: kombu_redis.Transport, *args: object, **kwargs: object) -> None:
        self._broker = _BrokerAddress(connection.client, connection.default_port)
        super().__init__(connection, *args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> dict:
        transport = self.connection
        if transport is not None and transport.client is not None:
            return super()._connparams(asynchronous=asynchronous)
        self.connection = self._broker  # closed: build the pool from the address kept at opening
        try:
            return super()._connparams(asynchronous=asynchronous)
        finally:
            self.connection = transport


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`RedisChannel` (``broker_transport``; URLs stay ``redis://``)."""

    Channel = RedisChannel


def make_celery(settings: Settings) -> Celery:
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set: workers and the API need the broker's URL")
    app = Celery("redraft", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue_name,
        task_routes={RUN_JOB: {"queue": settings.queue_name}},
        broker_transport=f"{__name__}:RedisTransport",
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        # Keep reconnecting however long Redis is away (Celery's default gives up after 100 tries).
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
    )
    return app


@lru_cache(maxsize=1)
def get_celery() -> Celery:
    return make_celery(get_settings())


def send(job_id: str) -> None:
    """Send a job id to the GPU queue (raises when the broker does not take it). The broker's epoch is
    made sure of first, so it is never later than a message in that Redis."""
    settings = get_settings()
    broker_epoch(client_for(settings), Keys(settings.queue_name))
    get_celery().send_task(RUN_JOB, args=[job_id], queue=settings.queue_name)


def enqueue(job_id: str) -> None:
    """Send a job id to the GPU queue, then record on its row that it was sent. Call only after the job
    row is committed; a job whose send fails keeps no record and the reaper sends it."""
    from redraft.storage import repo
    from redraft.storage.db import session_scope

    send(job_id)
    with session_scope() as s:
        repo.mark_enqueued(s, job_id)


def job_channel(job_id: str) -> str:
    """Redis pub/sub channel on which a job's step and done events are published."""
    return f"redraft:job:{job_id}"


# ---- worker liveness ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The liveness keys of one queue (see the module docstring)."""

    queue: str

    @property
    def workers(self) -> str:
        return f"redraft:{self.queue}:workers"

    @property
    def receipts(self) -> str:
        return f"redraft:{self.queue}:receipts"

    @property
    def epoch(self) -> str:
        return f"redraft:{self.queue}:epoch"

    def worker(self, worker_id: str) -> str:
        return f"redraft:{self.queue}:worker:{worker_id}"


# Delete a hash field only if it still holds the value the caller read: a receipt that a newer delivery
# replaced is left alone, and of several reapers only one wins the delete.
_DELETE_IF = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


def broker_client(settings: Settings, timeout_s: float | None = None) -> redis.Redis:
    """A client for the broker's Redis with bounded waits (liveness readers and writers)."""
    timeout = timeout_s if timeout_s is not None else settings.worker_heartbeat_ttl_s
    return redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)


_clients: dict[tuple[str, float], redis.Redis] = {}
_clients_lock = threading.Lock()


def client_for(settings: Settings) -> redis.Redis:
    """The process's client (and connection pool) for the broker's Redis, one per URL and timeout: the sending
    side and the workers' event publisher share it (a job costs no new connection), and a Redis that stops
    answering costs a call at most ``worker_heartbeat_ttl_s``."""
    key = (settings.redis_url, settings.worker_heartbeat_ttl_s)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = broker_client(settings)
        return _clients[key]


def delete_if(client: redis.Redis, key: str, field: str, value: str) -> bool:
    return bool(client.eval(_DELETE_IF, 1, key, field, value))


@dataclass(frozen=True)
class WorkerBeat:
    """One worker process's heartbeat, as written to Redis."""

    worker: str
    host: str
    pid: int
    at: float  # the worker's clock when it listed ``held`` (compared only with its own receipts' times)
    held: frozenset[str]

    def dumps(self) -> str:
        return json.dumps({"worker": self.worker, "host": self.host, "pid": self.pid, "at": self.at,
                           "held": sorted(self.held)})

    @classmethod
    def loads(cls, raw: bytes | str) -> WorkerBeat:
        d = json.loads(raw)
        return cls(d["worker"], d["host"], int(d["pid"]), float(d["at"]), frozenset(d["held"]))


def live_workers(client: redis.Redis, keys: Keys) -> dict[str, WorkerBeat]:
    """The workers whose heartbeat key has not expired, by id."""
    ids = sorted(m.decode() for m in client.smembers(keys.workers))
    if not ids:
        return {}
    beats = client.mget([keys.worker(w) for w in ids])
    return {w: WorkerBeat.loads(raw) for w, raw in zip(ids, beats) if raw is not None}


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in the Celery queue: kombu's Redis transport keeps one list per priority step (the
    queue's own name for priority 0, then ``name + sep + step``)."""
    with client.pipeline(transaction=False) as pipe:
        for step in kombu_redis.PRIORITY_STEPS:
            pipe.llen(f"{queue}{kombu_redis.Channel.sep}{step}" if step else queue)
        return sum(pipe.execute())


def broker_epoch(client: redis.Redis, keys: Keys) -> datetime:
    """When this Redis's data began: the epoch key, created now if absent (a fresh or wiped Redis)."""
    client.set(keys.epoch, datetime.now(UTC).isoformat(), nx=True)
    raw = client.get(keys.epoch)
    return datetime.fromisoformat(raw.decode()) if raw else datetime.now(UTC)


class Heartbeat:
    """A worker process's liveness in Redis: a thread refreshes its key; receipts record what it received.

    ``held`` is read from Celery's own state (requests reserved or running in this process), so a message
    Celery dropped (it forgets reserved requests when its broker connection is lost) stops being held.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings, self.keys = settings, Keys(settings.queue_name)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._receipts: dict[str, tuple[str, str]] = {}  # task id -> (job id, receipt value)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: redis.Redis | None = None

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = broker_client(self.settings)
        return self._client

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redraft-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and remove the key, so readers see this worker gone at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.worker_heartbeat_ttl_s)
        try:
            self.client.delete(self.keys.worker(self.worker_id))
        except redis.RedisError:
            pass

    def received(self, task_id: str, job_id: str) -> None:
        """Record that this process received ``job_id`` (Celery's task_received, in the consumer thread)."""
        value = json.dumps({"worker": self.worker_id, "task": task_id, "at": time.time()})
        self._receipts[task_id] = (job_id, value)
        try:
            self.client.hset(self.keys.receipts, job_id, value)
        except redis.RedisError:
            log.warning("could not record the receipt of job %s", job_id)

    def finished(self, task_id: str) -> None:
        """The task ended (claimed and run, or skipped): its receipt is no longer needed."""
        job_id, value = self._receipts.pop(task_id, (None, None))
        if job_id is None:
            return
        try:
            delete_if(self.client, self.keys.receipts, job_id, value)
        except redis.RedisError:
            pass  # the reaper removes receipts of jobs that are no longer queued

    def beat(self) -> None:
        at = time.time()  # before listing: a receipt older than this is listed if it is still held
        held = frozenset(_held_job_ids())
        beat = WorkerBeat(self.worker_id, socket.gethostname(), os.getpid(), at, held)
        ttl_ms = int(self.settings.worker_heartbeat_ttl_s * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.worker(self.worker_id), beat.dumps(), px=ttl_ms)
        pipe.sadd(self.keys.workers, self.worker_id)
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except redis.RedisError:
                log.warning("heartbeat: Redis does not answer; retrying")
            self._stop.wait(self.settings.worker_heartbeat_interval_s)


def _held_job_ids() -> Iterable[str]:
    """Job ids of the requests Celery holds in this process (reserved, or running)."""
    from celery.worker import state

    for _ in range(10):  # the consumer thread may change the sets while we copy them
        try:
            requests = list(state.reserved_requests) + list(state.active_requests)
            break
        except RuntimeError:
            continue
    else:
        requests = []
    return {str(r.args[0]) for r in requests if r.args}


def main(argv: list[str] | None = None) -> int:
    """``python -m redraft.queue alive``: exit 0 when a worker on this host has a live heartbeat (the
    compose health check of the worker container), 1 otherwise."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["alive"]:
        print("usage: python -m redraft.queue alive", file=sys.stderr)
        return 2
    settings = get_settings()
    try:
        beats = live_workers(broker_client(settings, timeout_s=5), Keys(settings.queue_name))
    except redis.RedisError as exc:
        print(f"Redis does not answer: {exc}", file=sys.stderr)
        return 1
    host = socket.gethostname()
    mine = [b for b in beats.values() if b.host == host]
    print(f"{len(mine)} live worker(s) on {host}")
    return 0 if mine else 1


if __name__ == "__main__":
    raise SystemExit(main())
