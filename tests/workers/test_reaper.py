"""The reaper (``workers/reaper.py``) in this process, against the real Redis and both databases, without Celery
workers: a pass sends again the running jobs whose worker stopped beating, the queued jobs never sent, sent before
Redis lost its data, untouched for ``job_timeout_s``, or received by a worker that died or dropped them; never a job
twice, however many passes race; a send the broker refuses is left for the next pass; and the loop outlives Redis and
database errors until it is stopped. The compare-and-sets it relies on are tested in tests/faults/test_resend.py;
real workers dying and Redis restarting in tests/faults/."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redraft.queue import Keys, WorkerBeat, enqueue
from redraft.settings import Settings
from redraft.storage import repo
from redraft.storage.db import get_sessionmaker, reset_database_engines
from redraft.storage.migrate import upgrade
from redraft.storage.tables import Job
from redraft.workers.reaper import loop, reap_once
from tests.redraft.test_queue import configured, dead_redis_url, message_args
from tests.storage.test_repo import age, make_job
from tests.utils.service import REDIS_URL
from tests.utils.waiting import until

TTL_S = 5.0  # worker_heartbeat_ttl_s in these passes



@pytest.fixture
def reaping(session, database_url: str, queue: str) -> Iterator[None]:
    """The process's settings name the test's database, Redis and queue: ``session_scope`` and ``send`` read them."""
    with configured(DATABASE_URL=database_url, REDIS_URL=REDIS_URL, REDRAFT_QUEUE_NAME=queue):
        yield


def pass_settings(**values: object) -> Settings:
    """A pass's settings (read with ``reaping``'s environment); no grace period unless asked."""
    return Settings(**{"enqueue_grace_s": 0, "worker_heartbeat_ttl_s": TTL_S, **values})


def sent(broker: redis.Redis, queue: str) -> list[str]:
    """The job ids of the messages waiting in the queue, oldest first."""
    return [message_args(raw)[1][0] for raw in reversed(broker.lrange(queue, 0, -1))]


def read(session, job_id: str) -> Job:
    job = session.get(Job, job_id, populate_existing=True)
    session.commit()  # end the read: the passes write these rows
    return job


def test_a_running_job_whose_worker_stopped_beating_is_sent_again_once(reaping, session, broker, queue):
    stale, alive = make_job(session), make_job(session)
    for job in (stale, alive):
        repo.claim_job(session, job.id, 3, 60)
    age(session, stale.id, 120)  # its worker wrote nothing for two minutes
    settings = pass_settings(heartbeat_timeout_s=60)
    assert reap_once(settings) == [stale.id]
    row = read(session, stale.id)
    assert row.status == "queued" and row.enqueued_at is not None and row.attempts == 1  # the next delivery claims it
    assert read(session, alive.id).status == "running"
    assert sent(broker, queue) == [stale.id]
    assert reap_once(settings) == [] and sent(broker, queue) == [stale.id]


def test_a_queued_job_untouched_for_the_job_timeout_is_sent_again(reaping, session, broker, queue):
    lost, waiting = make_job(session), make_job(session)
    enqueue(lost.id)
    enqueue(waiting.id)
    age(session, lost.id, 700)
    settings = pass_settings(job_timeout_s=600)
    assert reap_once(settings) == [lost.id]
    assert sent(broker, queue) == [lost.id, waiting.id, lost.id]
    assert reap_once(settings) == []


def test_a_job_never_sent_is_sent_once_its_grace_period_is_over(reaping, session, broker, queue):
    job = make_job(session)  # its row was written; the send failed (Redis was down)
    assert reap_once(pass_settings(enqueue_grace_s=3600)) == []  # the API may still be sending it
    assert read(session, job.id).enqueued_at is None and sent(broker, queue) == []
    assert reap_once(pass_settings()) == [job.id]
    assert read(session, job.id).enqueued_at is not None
    assert reap_once(pass_settings()) == [] and sent(broker, queue) == [job.id]


def test_jobs_sent_before_redis_lost_its_data_are_sent_again(reaping, session, broker, queue):
    queued, running = make_job(session), make_job(session)
    enqueue(queued.id)
    enqueue(running.id)
    repo.claim_job(session, running.id, 3, 60)  # its message was delivered
    broker.delete(queue, Keys(queue).epoch)  # what a restart without persistence does
    settings = pass_settings()
    assert reap_once(settings) == [queued.id]
    assert sent(broker, queue) == [queued.id]
    assert reap_once(settings) == []  # sent after the new epoch


def test_a_send_the_broker_refuses_is_left_for_the_next_pass(reaping, session, broker, queue, caplog):
    caplog.set_level(logging.WARNING, logger="redraft.workers.reaper")
    job = make_job(session)
    settings = pass_settings()
    with configured(REDIS_URL=dead_redis_url()):  # the pass reads the live Redis; its sends go to one that is away
        assert reap_once(settings, redis.Redis.from_url(REDIS_URL)) == []
    assert read(session, job.id).enqueued_at is None
    assert any(f"could not send job {job.id}" in r.getMessage() for r in caplog.records)
    assert reap_once(settings) == [job.id] and sent(broker, queue) == [job.id]


# What became of a message a worker received: the worker died, it still holds the job, or it dropped it.
FATES = st.sampled_from(["dead", "held", "dropped"])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(receipts=st.lists(st.tuples(FATES, st.booleans(), st.booleans()), min_size=1, max_size=4))
def test_a_received_job_nobody_will_run_is_sent_again(reaping, session, broker, queue, receipts):
    """Each receipt: its worker's fate, whether it was received too recently to tell (within the heartbeat TTL of
    the worker's last beat), whether the job is still queued. A receipt whose worker is dead, or alive without the
    job and received long enough ago, is taken; its job is sent again if still queued."""
    keys = Keys(queue)
    broker.delete(keys.receipts, keys.workers)
    jobs = [make_job(session).id for _ in receipts]
    for job_id, (_, _, queued) in zip(jobs, receipts):
        enqueue(job_id)
        if not queued:
            repo.claim_job(session, job_id, 3, 60)
    broker.delete(queue)  # the workers received the messages
    now = time.time()
    held = frozenset(j for j, (fate, _, _) in zip(jobs, receipts) if fate == "held")
    broker.set(keys.worker("live"), WorkerBeat("live", "host", 1, now, held).dumps(), px=60_000)
    broker.sadd(keys.workers, "live", "dead")  # "dead" beat once; its key expired
    for job_id, (fate, recent, _) in zip(jobs, receipts):
        worker = "dead" if fate == "dead" else "live"
        at = now if recent else now - TTL_S - 1
        broker.hset(keys.receipts, job_id, json.dumps({"worker": worker, "task": f"task-{job_id}", "at": at}))
    orphans = {
        j for j, (fate, recent, _) in zip(jobs, receipts) if fate == "dead" or (fate == "dropped" and not recent)
    }
    expected = sorted(j for j, (_, _, queued) in zip(jobs, receipts) if j in orphans and queued)
    assert sorted(reap_once(pass_settings())) == expected
    assert sorted(sent(broker, queue)) == expected
    assert {f.decode() for f in broker.hkeys(keys.receipts)} == set(jobs) - orphans
    assert broker.smembers(keys.workers) == {b"live"}  # the dead worker is forgotten


def test_a_job_lost_with_redis_and_received_by_a_dead_worker_is_sent_once_in_a_pass(reaping, session, broker, queue):
    """Two reasons to resend one job in one pass (its message was sent before Redis lost its data, and the worker
    whose receipt it holds is dead): one send, and the orphaned receipt is gone."""
    keys = Keys(queue)
    job = make_job(session)
    enqueue(job.id)
    broker.delete(queue, keys.epoch)  # Redis restarted empty...
    broker.hset(keys.receipts, job.id, json.dumps({"worker": "dead", "task": "t", "at": time.time() - 60}))
    broker.sadd(keys.workers, "dead")  # ...but a receipt of a worker that died is still there
    assert reap_once(pass_settings()) == [job.id]
    assert sent(broker, queue) == [job.id]
    assert not broker.hexists(keys.receipts, job.id) and reap_once(pass_settings()) == []


def test_racing_passes_send_each_job_once(reaping, session, broker, queue):
    keys = Keys(queue)
    stale, unsent, lost, orphan = (make_job(session) for _ in range(4))
    repo.claim_job(session, stale.id, 3, 60)
    age(session, stale.id, 120)
    enqueue(lost.id)
    broker.delete(queue, keys.epoch)  # Redis restarted empty: the lost job's message is gone
    enqueue(orphan.id)  # sent after the restart, received by a worker that died
    broker.delete(queue)
    broker.hset(keys.receipts, orphan.id, json.dumps({"worker": "gone", "task": "t", "at": time.time()}))
    broker.sadd(keys.workers, "gone")
    settings, passes = pass_settings(heartbeat_timeout_s=60), 4
    results, barrier = [], threading.Barrier(passes, timeout=30)

    def one_pass() -> None:
        barrier.wait()
        results.extend(reap_once(settings))

    threads = [threading.Thread(target=one_pass) for _ in range(passes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    everyone = Counter(j.id for j in (stale, unsent, lost, orphan))
    assert Counter(results) == everyone
    assert Counter(sent(broker, queue)) == everyone


def test_the_loop_passes_until_it_is_stopped(reaping, session, broker, queue):
    job = make_job(session)
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(pass_settings(reaper_interval_s=0.02), stop), daemon=True)
    thread.start()
    until(lambda: sent(broker, queue) == [job.id], "the loop never sent the job", timeout_s=30)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert sent(broker, queue) == [job.id]  # its later passes did not send it again


def test_the_loop_outlives_redis_and_database_errors(tmp_path, broker, queue, caplog):
    caplog.set_level(logging.WARNING, logger="redraft.workers.reaper")
    url = f"sqlite:///{tmp_path / 'later.db'}"  # not migrated yet: every pass fails in the database

    def logged(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    with configured(DATABASE_URL=url, REDIS_URL=REDIS_URL, REDRAFT_QUEUE_NAME=queue):
        stop = threading.Event()
        away = threading.Thread(
            target=loop, args=(Settings(redis_url=dead_redis_url(), reaper_interval_s=0.02), stop), daemon=True
        )
        here = threading.Thread(
            target=loop, args=(Settings(reaper_interval_s=0.02, enqueue_grace_s=0), stop), daemon=True
        )
        away.start()
        here.start()
        try:
            until(lambda: logged("reaper pass stopped: Redis does not answer") >= 2, "no Redis error", timeout_s=30)
            until(lambda: logged("reaper pass failed") >= 2, "no database error", timeout_s=30)
            upgrade(url)
            with get_sessionmaker(url)() as s:
                job_id = make_job(s).id
            until(lambda: sent(broker, queue) == [job_id], "the loop never recovered", timeout_s=30)
            assert away.is_alive() and here.is_alive()
        finally:
            stop.set()
            away.join(timeout=30)
            here.join(timeout=30)
            reset_database_engines(url)
    assert not away.is_alive() and not here.is_alive()
