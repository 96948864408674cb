"""The Celery app, sending job ids and the worker-liveness records (redraft/queue.py), against the real Redis.

Every test works under a queue name of its own (``redraft:<queue>:*`` and kombu's lists for it) and deletes
those keys afterwards; nothing else in the shared Redis is touched. A worker really consuming (what ``held``
lists, a receipt the reaper re-sends, a Redis restart) is exercised in tests/faults/."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kombu import Connection

from redraft.embedded import free_port
from redraft.queue import (
    RUN_JOB,
    Heartbeat,
    Keys,
    RedisChannel,
    RedisTransport,
    WorkerBeat,
    broker_epoch,
    delete_if,
    enqueue,
    get_celery,
    job_channel,
    live_workers,
    main,
    make_celery,
    queue_depth,
    send,
)
from redraft.settings import Settings, get_settings
from redraft.storage import repo
from redraft.storage.tables import Job
from tests.utils.service import REDIS_URL
from tests.utils.waiting import until

FAST = {"worker_heartbeat_interval_s": 0.05, "worker_heartbeat_ttl_s": 2.0}
# Ids, hosts and worker names as they appear in the records (any text JSON can carry).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


def _forget(client: redis.Redis, queue: str) -> None:
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)



def queue_settings(queue: str, redis_url: str = REDIS_URL, **values: object) -> Settings:
    return Settings(redis_url=redis_url, queue_name=queue, **{**FAST, **values})


def dead_redis_url() -> str:
    """A loopback port nothing listens on: every connection is refused at once."""
    return f"redis://127.0.0.1:{free_port()}/0"


@contextmanager
def configured(**env: str) -> Iterator[None]:
    """The process's settings (and so its Celery app) read from ``env`` for the block."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        get_settings.cache_clear()
        get_celery.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()
            get_celery.cache_clear()


def message_args(raw: bytes) -> tuple[str, list]:
    """(task name, positional args) of a Celery message as kombu's Redis transport stores it."""
    message = json.loads(raw)
    assert message["properties"]["body_encoding"] == "base64"
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return message["headers"]["task"], args


# ---- the Celery app ----------------------------------------------------------------------------------


def test_the_app_needs_the_brokers_url():
    with pytest.raises(RuntimeError, match="REDIS_URL is not set"):
        make_celery(Settings(redis_url=None))


@pytest.mark.parametrize("job_timeout_s", [1, 600, 7200])
def test_the_app_acks_late_and_redelivers_only_after_the_longest_job(queue, job_timeout_s):
    s = queue_settings(queue, job_timeout_s=job_timeout_s)
    conf = make_celery(s).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert visibility == s.visibility_timeout_s and visibility > job_timeout_s  # Redis never re-delivers a running job
    assert conf.task_default_queue == queue and conf.task_routes == {RUN_JOB: {"queue": queue}}
    assert conf.broker_connection_max_retries is None  # reconnects however long Redis is away
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]


def test_the_app_uses_the_channel_that_keeps_its_address(queue):
    with make_celery(queue_settings(queue)).connection_for_write() as conn:
        assert isinstance(conn.transport, RedisTransport) and conn.transport.Channel is RedisChannel


def test_a_closed_channel_rebuilds_its_pool_from_the_address_it_was_opened_with():
    """Celery clears the transport's ``client`` when Redis goes away; the channel's next restore must then fail
    with a connection error (which Celery ignores), not kombu's own AttributeError (tests/faults/ has the
    whole restart)."""
    url = REDIS_URL.rsplit("/", 1)[0] + "/3"
    ours, theirs = Connection(url, transport=RedisTransport), Connection(url)
    try:
        for conn in (ours, theirs):
            conn.default_channel.connection.client = None  # what Celery's collect() leaves behind
        params = ours.default_channel._connparams()
        address = urlsplit(url)
        assert (params["host"], params["port"], params["db"]) == (address.hostname, address.port, 3)
        with pytest.raises(AttributeError):  # kombu's channel, for contrast: the bug RedisChannel avoids
            theirs.default_channel._connparams()
    finally:
        for conn in (ours, theirs):
            conn.default_channel.connection.client = conn
            conn.release()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(priorities=st.lists(st.integers(0, 9), max_size=6))
def test_queue_depth_counts_every_waiting_message_whatever_its_priority(broker, queue, priorities):
    _forget(broker, queue)
    app = make_celery(queue_settings(queue))
    for i, priority in enumerate(priorities):
        app.send_task(RUN_JOB, args=[f"job-{i}"], queue=queue, priority=priority)
    assert queue_depth(broker, queue) == len(priorities)
    assert queue_depth(broker, f"{queue}-other") == 0


# ---- sending ----------------------------------------------------------------------------------------


def test_send_puts_the_job_id_on_the_queue_after_the_brokers_epoch(broker, queue):
    job_id = uuid.uuid4().hex
    before = datetime.now(UTC)
    with configured(REDIS_URL=REDIS_URL, REDRAFT_QUEUE_NAME=queue):
        send(job_id)
    after = datetime.now(UTC)
    assert queue_depth(broker, queue) == 1
    assert message_args(broker.lindex(queue, 0)) == (RUN_JOB, [job_id])  # messages carry only the job id
    epoch = datetime.fromisoformat(broker.get(Keys(queue).epoch).decode())
    assert before <= epoch <= after  # made sure of first: never later than a message in that Redis


def _queued_job(session) -> str:
    tenant = repo.get_or_create_tenant(session, "acme")
    job = repo.create_job(
        session,
        tenant_id=tenant.id,
        kind="infill",
        model="m",
        request={"text": "x"},
        params={"steps": 2},
        canvas={"token_ids": [1]},
    )
    session.commit()
    return job.id


def test_enqueue_sends_the_job_then_records_it_was_sent(session, database_url, broker, queue):
    job_id = _queued_job(session)
    with configured(REDIS_URL=REDIS_URL, REDRAFT_QUEUE_NAME=queue, DATABASE_URL=database_url):
        enqueue(job_id)
    assert session.get(Job, job_id, populate_existing=True).enqueued_at is not None
    assert message_args(broker.lindex(queue, 0)) == (RUN_JOB, [job_id])


def test_a_send_that_fails_leaves_the_job_unsent_for_the_reaper(session, database_url, queue):
    job_id = _queued_job(session)
    env = {"REDIS_URL": dead_redis_url(), "REDRAFT_QUEUE_NAME": queue, "DATABASE_URL": database_url}
    with configured(**env), pytest.raises(redis.ConnectionError):
        enqueue(job_id)
    assert session.get(Job, job_id, populate_existing=True).enqueued_at is None


def test_the_epoch_stays_until_redis_loses_its_data(broker, queue):
    keys = Keys(queue)
    first = broker_epoch(broker, keys)
    assert first.tzinfo is not None and broker_epoch(broker, keys) == first  # created once, then read
    broker.delete(keys.epoch)  # what a restart without persistence does
    second = broker_epoch(broker, keys)
    assert second >= first and broker_epoch(broker, keys) == second


@given(a=TEXT, b=TEXT)
def test_job_channels_are_one_per_job(a, b):
    assert job_channel(a).startswith("redraft:job:")
    assert (job_channel(a) == job_channel(b)) == (a == b)


@given(
    queue=st.text(st.characters(exclude_categories=("Cs",), exclude_characters=":"), min_size=1),
    other=st.text(st.characters(exclude_categories=("Cs",), exclude_characters=":"), min_size=1),
    workers=st.lists(TEXT, min_size=1, max_size=4, unique=True),
)
def test_each_queue_has_its_own_liveness_keys(queue, other, workers):
    def all_keys(q: str) -> list[str]:
        k = Keys(q)
        return [k.workers, k.receipts, k.epoch, *(k.worker(w) for w in workers)]

    mine = all_keys(queue)
    assert len(set(mine)) == len(mine) and all(key.startswith(f"redraft:{queue}:") for key in mine)
    assert (set(mine) & set(all_keys(other)) != set()) == (queue == other)


# ---- liveness records ------------------------------------------------------------------------------


@given(
    worker=TEXT,
    host=TEXT,
    pid=st.integers(0, 2**22),
    at=st.floats(allow_nan=False, allow_infinity=False),
    held=st.frozensets(TEXT, max_size=5),
)
def test_a_heartbeat_record_reads_back_as_written(worker, host, pid, at, held):
    beat = WorkerBeat(worker, host, pid, at, held)
    assert WorkerBeat.loads(beat.dumps()) == beat
    assert WorkerBeat.loads(beat.dumps().encode()) == beat  # as Redis returns it
    assert WorkerBeat(worker, host, pid, at, frozenset(sorted(held, reverse=True))).dumps() == beat.dumps()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=TEXT, value=TEXT, other=TEXT)
def test_delete_if_removes_a_field_only_while_it_holds_the_value_read(broker, queue, field, value, other):
    key = Keys(queue).receipts
    broker.delete(key)
    broker.hset(key, field, value)
    if other != value:
        assert not delete_if(broker, key, field, other)
        assert broker.hget(key, field) == value.encode()
    assert delete_if(broker, key, field, value)
    assert broker.hget(key, field) is None
    assert not delete_if(broker, key, field, value)  # of several reapers, one wins


def test_live_workers_are_those_whose_heartbeat_has_not_expired(broker, queue):
    keys = Keys(queue)
    assert live_workers(broker, keys) == {}
    long, short = Heartbeat(queue_settings(queue)), Heartbeat(queue_settings(queue, worker_heartbeat_ttl_s=0.3))
    for beat in (long, short):
        beat.beat()
    beats = live_workers(broker, keys)
    assert set(beats) == {long.worker_id, short.worker_id}
    assert beats[long.worker_id].held == frozenset()  # outside a Celery worker nothing is held
    assert 0 < broker.pttl(keys.worker(long.worker_id)) <= 2000
    until(lambda: short.worker_id not in live_workers(broker, keys), "the short heartbeat never expired", 10)
    assert set(live_workers(broker, keys)) == {long.worker_id}
    assert live_workers(broker, Keys(f"{queue}-other")) == {}


def test_a_started_heartbeat_beats_until_stopped_and_then_is_gone(broker, queue):
    beat = Heartbeat(queue_settings(queue))
    beat.start()
    try:
        until(lambda: beat.worker_id in live_workers(broker, Keys(queue)), "the heartbeat thread never beat", 10)
    finally:
        beat.stop()
    assert not beat._thread.is_alive()
    assert beat.worker_id not in live_workers(broker, Keys(queue))  # at once, not after the TTL


def test_a_receipt_lasts_until_its_task_ends_unless_a_newer_delivery_replaced_it(broker, queue):
    receipts = Keys(queue).receipts
    first, second = Heartbeat(queue_settings(queue)), Heartbeat(queue_settings(queue))
    first.received("task-1", "job-a")
    first.received("task-2", "job-b")
    receipt = json.loads(broker.hget(receipts, "job-a"))
    assert (receipt["worker"], receipt["task"]) == (first.worker_id, "task-1")
    first.finished("task-1")
    assert broker.hget(receipts, "job-a") is None and broker.hget(receipts, "job-b") is not None
    first.finished("task-1")  # ended twice, or never received here: nothing to do
    first.finished("unknown-task")
    second.received("task-3", "job-b")  # redelivered to another worker
    first.finished("task-2")
    assert json.loads(broker.hget(receipts, "job-b"))["worker"] == second.worker_id


def test_a_heartbeat_survives_redis_not_answering(queue, caplog):
    caplog.set_level(logging.WARNING, logger="redraft.queue")
    beat = Heartbeat(queue_settings(queue, redis_url=dead_redis_url()))
    with pytest.raises(redis.ConnectionError):
        beat.beat()
    beat.received("task-1", "job-a")  # logged, never raised into Celery's consumer
    beat.finished("task-1")
    beat.start()
    try:
        until(
            lambda: sum("heartbeat: Redis does not answer" in r.getMessage() for r in caplog.records) >= 2,
            "the heartbeat thread stopped after its first failure",
            10,
        )
    finally:
        beat.stop()
    assert any("could not record the receipt of job job-a" in r.getMessage() for r in caplog.records)


# ---- python -m redraft.queue alive -----------------------------------------------------------------


def test_the_health_check_wants_exactly_alive(capsys):
    assert main([]) == 2 and main(["alive", "now"]) == 2
    assert "usage: python -m redraft.queue alive" in capsys.readouterr().err


def test_the_health_check_fails_when_redis_does_not_answer(queue, capsys):
    with configured(REDIS_URL=dead_redis_url(), REDRAFT_QUEUE_NAME=queue):
        assert main(["alive"]) == 1
    assert "Redis does not answer" in capsys.readouterr().err


def test_the_health_check_counts_only_workers_on_this_host(broker, queue, capsys):
    keys, worker = Keys(queue), "elsewhere:1:abc"
    broker.set(keys.worker(worker), WorkerBeat(worker, "another-host", 1, 0.0, frozenset()).dumps(), px=60_000)
    broker.sadd(keys.workers, worker)
    with configured(REDIS_URL=REDIS_URL, REDRAFT_QUEUE_NAME=queue):
        assert main(["alive"]) == 1
    assert capsys.readouterr().out.startswith("0 live worker(s) on ")
