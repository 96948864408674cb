"""The reaper's compare-and-sets for sending a queued job again, on SQLite and PostgreSQL: a job is taken
by exactly one of any number of reapers racing for it, and only while it is queued and was not sent since."""

from __future__ import annotations

import threading
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redraft.storage import repo
from redraft.storage.db import get_sessionmaker
from redraft.storage.tables import Job, utcnow
from tests.storage.test_repo import make_job


def test_unsent_and_sent_before_find_what_the_reaper_must_send(session):
    unsent, sent = make_job(session), make_job(session)
    repo.mark_enqueued(session, sent.id)
    session.commit()
    sent_at = session.get(Job, sent.id, populate_existing=True).enqueued_at
    later = utcnow() + timedelta(seconds=1)
    assert repo.unsent_jobs(session, later) == [(unsent.id, None)]
    assert repo.unsent_jobs(session, unsent.created_at) == []  # within the grace period: the API may still send it
    assert repo.jobs_sent_before(session, later) == [(sent.id, sent_at)]  # the broker lost its data since
    assert repo.jobs_sent_before(session, utcnow() - timedelta(seconds=60)) == []
    assert repo.queued_sent_at(session, [sent.id, unsent.id, "nope"]) == [(unsent.id, None), (sent.id, sent_at)]


def test_only_a_queued_job_is_taken_and_only_once(session):
    job = make_job(session)
    assert repo.take_for_resend(session, job.id, None)
    assert not repo.take_for_resend(session, job.id, None)  # it was sent since we read it
    sent_at = session.get(Job, job.id, populate_existing=True).enqueued_at
    assert repo.take_for_resend(session, job.id, sent_at)
    repo.mark_unsent(session, job.id)  # the send failed: the next pass may take it again
    session.commit()
    assert repo.take_for_resend(session, job.id, None)
    session.get(Job, job.id).status = "running"
    session.commit()
    assert not repo.take_for_resend(session, job.id, session.get(Job, job.id).enqueued_at)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reapers=st.integers(2, 8))
def test_racing_reapers_take_a_job_exactly_once(engine, database_url, reapers):
    maker = get_sessionmaker(database_url)
    with maker() as s:
        job_id = make_job(s).id
    wins, barrier = [], threading.Barrier(reapers, timeout=30)

    def reap() -> None:  # each reads the job unsent, as concurrent passes do, then races to take it
        with maker() as s:
            [(_, sent_at)] = repo.unsent_jobs(s, utcnow() + timedelta(seconds=1))
            barrier.wait()
            wins.append(repo.take_for_resend(s, job_id, sent_at))

    threads = [threading.Thread(target=reap) for _ in range(reapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(wins) == [False] * (reapers - 1) + [True]
