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
