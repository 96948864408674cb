"""The worker's one step writer (workers/steps.py) on both databases: every waiting job's steps in one
transaction, numbered per job, and a job that may no longer write told so at its next burst, the others unharmed."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from redraft.errors import JobCancelled
from redraft.settings import get_settings
from redraft.storage import repo
from redraft.storage.tables import Job
from redraft.workers.steps import Publisher, StepSink, StepWriter
from tests.storage.test_repo import make_job


@pytest.fixture
def settings(database_url, engine, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def running_jobs(session, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        job = make_job(session)
        repo.claim_job(session, job.id, max_attempts=3, heartbeat_timeout_s=60)
        session.commit()
        ids.append(job.id)
    return ids


def rows(k: int, tag: int) -> list[tuple[list[list], list[list[int]]]]:
    return [([[i, tag, "t", 0.5]], []) for i in range(k)]


def test_every_waiting_jobs_bursts_go_in_one_transaction(settings, session):
    jobs = running_jobs(session, 3)
    writer = StepWriter(start=False)
    sinks = [StepSink(j, 1, None, Publisher(settings), settings, writer) for j in jobs]
    for k, sink in enumerate(sinks):
        sink.write_rows(rows(2, k))
        sink.write_rows(rows(3, k))  # a second burst of the same job: numbered on from the first
    writer.start()
    for sink in sinks:
        sink.flush(timeout_s=30)
    assert writer.transactions == 1
    for k, job_id in enumerate(jobs):
        steps = repo.list_steps(session, job_id)
        assert [s.step for s in steps] == list(range(5))
        assert all(s.committed[0][1] == k for s in steps)
        session.expire_all()
        assert session.get(Job, job_id).steps_run == 5


@pytest.mark.parametrize("why", ["cancelled", "superseded"])
def test_a_job_that_may_not_write_is_told_at_its_next_burst_and_the_others_go_on(settings, session, why):
    jobs = running_jobs(session, 3)
    stopped = jobs[1]
    change = {"cancel_requested": True} if why == "cancelled" else {"attempts": 2}  # another attempt took it over
    session.execute(update(Job).where(Job.id == stopped).values(**change))
    session.commit()
    writer = StepWriter(start=False)
    sinks = [StepSink(j, 1, None, Publisher(settings), settings, writer) for j in jobs]
    for k, sink in enumerate(sinks):
        sink.write_rows(rows(2, k))
    writer.start()
    with pytest.raises(JobCancelled) as info:
        sinks[1].flush(timeout_s=30)
    assert (info.value.code == "superseded") == (why == "superseded")
    with pytest.raises(JobCancelled):  # and at every later burst, without a transaction
        sinks[1].write_rows(rows(1, 1))
    for sink in (sinks[0], sinks[2]):
        sink.flush(timeout_s=30)
    assert repo.list_steps(session, stopped) == []
    assert [len(repo.list_steps(session, j)) for j in (jobs[0], jobs[2])] == [2, 2]


def test_a_redis_that_stops_answering_delays_the_writer_but_never_holds_it(database_url, engine, session, tmp_path,
                                                                          monkeypatch):
    """Every job's publisher shares one client; a paused Redis (SIGSTOP: connections open, nothing answered) costs
    each burst's events a bounded wait, the steps still reach the database, and once it answers again the shared
    client publishes again."""
    import json
    import os
    import signal

    import redis

    from redraft.embedded import RedisServer

    with RedisServer(tmp_path / "redis") as server:
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("REDIS_URL", server.url)
        monkeypatch.setenv("REDRAFT_WORKER_HEARTBEAT_INTERVAL_S", "0.1")
        monkeypatch.setenv("REDRAFT_WORKER_HEARTBEAT_TTL_S", "0.5")  # the shared client's bound on a wait
        get_settings.cache_clear()
        settings = get_settings()
        try:
            jobs = running_jobs(session, 2)
            publishers = [Publisher(settings) for _ in jobs]
            assert publishers[0].client is publishers[1].client  # one connection pool, not one per job
            writer = StepWriter()
            sinks = [StepSink(j, 1, None, p, settings, writer) for j, p in zip(jobs, publishers)]
            sinks[0].write_rows(rows(1, 0))
            sinks[0].flush(timeout_s=30)  # the client's connection is open before Redis stops answering
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                for k, sink in enumerate(sinks):
                    sink.write_rows(rows(3, k))
                for sink in sinks:
                    sink.flush(timeout_s=60)
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            assert [len(repo.list_steps(session, j)) for j in jobs] == [4, 3]
            listener = redis.Redis.from_url(server.url, socket_timeout=10).pubsub()
            listener.subscribe(f"redraft:job:{jobs[1]}")
            assert listener.get_message(timeout=10)["type"] == "subscribe"
            sinks[1].write_rows(rows(1, 1))
            sinks[1].flush(timeout_s=30)
            message = None
            for _ in range(6):  # a minute at most
                message = message or listener.get_message(ignore_subscribe_messages=True, timeout=10)
            assert message is not None, "no step event after Redis answered again"
            assert json.loads(message["data"])["data"]["step"] == 3
            listener.close()
        finally:
            get_settings.cache_clear()
