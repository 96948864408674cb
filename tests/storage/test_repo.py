"""The repository on SQLite and PostgreSQL, over real connections."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from redraft.errors import Conflict, NotFound
from redraft.storage import repo
from redraft.storage.db import get_sessionmaker
from redraft.storage.tables import Draft, Job, utcnow


def make_job(s: Session, tenant: str = "acme") -> Job:
    t = repo.get_or_create_tenant(s, tenant)
    job = repo.create_job(s, tenant_id=t.id, kind="infill", model="m", request={"text": "x"}, params={"steps": 2},
                          canvas={"token_ids": [1]})
    s.commit()
    return job


def age(s: Session, job_id: str, seconds: float) -> None:
    """Make the job's last sign of life ``seconds`` old (a worker that died, or a message that was lost)."""
    s.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow() - timedelta(seconds=seconds)))
    s.commit()


def test_api_keys_are_hashed_and_resolve_to_their_tenant(session):
    key, row = repo.create_api_key(session, "acme")
    session.commit()
    assert key.startswith("rdk_") and row.prefix == key[:12] and len(row.key_hash) == 64 and key not in row.key_hash
    assert repo.tenant_for_key(session, key).name == "acme"
    assert repo.tenant_for_key(session, key + "x") is None
    assert repo.tenant_for_key(session, "rdk_unknown") is None
    second, _ = repo.create_api_key(session, "acme")
    assert repo.get_or_create_tenant(session, "acme").id == row.tenant_id
    row.revoked_at = utcnow()
    session.commit()
    assert repo.tenant_for_key(session, key) is None
    assert repo.tenant_for_key(session, second).name == "acme"


def test_a_tenant_never_sees_another_tenants_jobs_or_drafts(session):
    job = make_job(session)
    other = repo.get_or_create_tenant(session, "other")
    assert repo.get_job(session, job.id, job.tenant_id).id == job.id
    with pytest.raises(NotFound, match=f"job {job.id} not found"):
        repo.get_job(session, job.id, other.id)
    with pytest.raises(NotFound, match="job nope not found"):
        repo.get_job(session, "nope")
    with pytest.raises(NotFound):
        repo.request_cancel(session, job.id, other.id)
    assert repo.list_jobs(session, other.id) == ([], 0)
    repo.claim_job(session, job.id, 3, 60)
    draft = repo.finish_job(session, job.id, text="t", token_ids=[5], result_extra={}, steps_run=1)
    session.commit()
    assert repo.get_draft(session, draft.id, job.tenant_id).text == "t"
    with pytest.raises(NotFound, match=f"draft {draft.id} not found"):
        repo.get_draft(session, draft.id, other.id)


def test_claim_finish_and_idempotency(session):
    job = make_job(session)
    claimed = repo.claim_job(session, job.id, max_attempts=3, heartbeat_timeout_s=60)
    assert claimed.status == "running" and claimed.attempts == 1 and claimed.started_at is not None
    # a second delivery while the first worker is alive is skipped
    assert repo.claim_job(session, job.id, 3, 60) is None
    repo.add_steps(session, job.id, 0, [([[0, 5, "a", 0.5]], [])])
    repo.set_steps_run(session, job.id, 1)
    session.commit()
    # the worker dies: its heartbeat goes stale; a new delivery takes over and clears the partial steps
    age(session, job.id, 120)
    again = repo.claim_job(session, job.id, 3, 60)
    assert again.attempts == 2 and again.steps_run == 0 and repo.list_steps(session, job.id) == []
    assert repo.writable(session, job.id, 1) == (False, False) and repo.writable(session, job.id, 2) == (True, False)
    draft = repo.finish_job(session, job.id, text="t", token_ids=[5], result_extra={"gaps": ["t"]}, steps_run=1)
    session.commit()
    session.refresh(job)
    assert job.status == "succeeded" and job.finished_at is not None and job.steps_run == 1
    assert job.result == {"text": "t", "draft_id": draft.id, "gaps": ["t"]}
    assert repo.finish_job(session, job.id, text="other", token_ids=[6], result_extra={}, steps_run=1).id == draft.id
    assert repo.claim_job(session, job.id, 3, 60) is None
    [only] = repo.list_drafts(session, job.id)
    assert (only.version, only.parent_id, only.token_ids) == (1, None, [5])


def test_a_takeover_deletes_the_dead_attempts_drafts_too(session):
    job = make_job(session)
    repo.claim_job(session, job.id, 3, 60)
    session.add(Draft(tenant_id=job.tenant_id, job_id=job.id, version=1, text="half", token_ids=[1]))
    session.commit()
    age(session, job.id, 120)
    assert repo.claim_job(session, job.id, 3, 60) is not None
    assert repo.list_drafts(session, job.id) == []


def test_claim_rereads_a_row_this_session_already_holds(database_url, session):
    job = make_job(session)
    repo.claim_job(session, job.id, 3, 60)  # this session now holds the job as running, attempt 1
    with get_sessionmaker(database_url)() as other:  # meanwhile that attempt finished it
        repo.finish_job(other, job.id, text="t", token_ids=[5], result_extra={}, steps_run=1)
        other.commit()
    age(session, job.id, 120)
    assert repo.claim_job(session, job.id, 3, 60) is None
    assert len(repo.list_drafts(session, job.id)) == 1


def test_too_many_attempts_fails_the_job(session):
    job = make_job(session)
    for _ in range(2):
        assert repo.claim_job(session, job.id, 2, heartbeat_timeout_s=0) is not None
    assert repo.claim_job(session, job.id, 2, heartbeat_timeout_s=0) is None
    session.refresh(job)
    assert job.status == "failed" and job.error_code == "too_many_attempts" and job.finished_at is not None
    assert "delivered 2 times" in job.error_message and "died" in job.error_message


def test_racing_deliveries_cannot_both_win(engine, database_url):
    maker = get_sessionmaker(database_url)
    with maker() as s:
        job_id = make_job(s).id
    barrier, won = threading.Barrier(4, timeout=30), []

    def deliver() -> None:
        with maker() as s:
            barrier.wait()
            if (job := repo.claim_job(s, job_id, 3, 60)) is not None:
                won.append(job.attempts)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert won == [1]


def test_cancel_transitions(session):
    queued = make_job(session)
    cancelled = repo.request_cancel(session, queued.id, queued.tenant_id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    session.commit()
    assert repo.claim_job(session, queued.id, 3, 60) is None
    with pytest.raises(Conflict, match=f"job {queued.id} is already cancelled; only queued or running"):
        repo.request_cancel(session, queued.id, queued.tenant_id)

    running = make_job(session)
    repo.claim_job(session, running.id, 3, 60)
    assert repo.request_cancel(session, running.id, running.tenant_id).status == "running"
    session.commit()
    assert repo.writable(session, running.id, 1) == (True, True)
    assert repo.mark_cancelled(session, running.id) is True  # the worker stops at its next step
    session.commit()

    # a redelivery of a job whose worker died after the cancel was asked for cancels it without running it
    dead = make_job(session)
    repo.claim_job(session, dead.id, 3, 60)
    repo.request_cancel(session, dead.id, dead.tenant_id)
    session.commit()
    age(session, dead.id, 120)
    assert repo.claim_job(session, dead.id, 3, 60) is None
    assert repo.get_job(session, dead.id).status == "cancelled"

    done = make_job(session)
    repo.claim_job(session, done.id, 3, 60)
    repo.finish_job(session, done.id, text="t", token_ids=[5], result_extra={}, steps_run=1)
    session.commit()
    with pytest.raises(Conflict, match="is already succeeded"):
        repo.request_cancel(session, done.id, done.tenant_id)


def test_a_finished_job_never_changes_state(session):
    job = make_job(session)
    repo.claim_job(session, job.id, 3, 60)
    assert repo.fail_job(session, job.id, "boom", "it broke") is True
    session.commit()
    assert repo.mark_cancelled(session, job.id) is False
    assert repo.fail_job(session, job.id, "again", "twice") is False
    with pytest.raises(Conflict, match="is already failed"):
        repo.finish_job(session, job.id, text="t", token_ids=[5], result_extra={}, steps_run=1)
    session.rollback()
    job = repo.get_job(session, job.id)
    assert (job.status, job.error_code, job.error_message) == ("failed", "boom", "it broke")
    assert repo.list_drafts(session, job.id) == []


def test_steps_are_listed_in_order_and_resume_after_a_step(session):
    job = make_job(session)
    repo.claim_job(session, job.id, 3, 60)
    for step in (2, 0, 1):
        repo.add_steps(session, job.id, step, [([[step, 10 + step, "w", 0.9]], [])])
    repo.set_steps_run(session, job.id, 3)
    session.commit()
    assert [(st.step, st.committed, st.remasked) for st in repo.list_steps(session, job.id)] == [
        (0, [[0, 10, "w", 0.9]], []), (1, [[1, 11, "w", 0.9]], []), (2, [[2, 12, "w", 0.9]], [])]
    assert [st.step for st in repo.list_steps(session, job.id, after=0)] == [1, 2]
    assert repo.get_job(session, job.id).steps_run == 3


def test_list_jobs_pages_newest_first_and_filters_by_status(session):
    ids = [make_job(session).id for _ in range(5)]
    tenant_id = repo.get_or_create_tenant(session, "acme").id
    page, count = repo.list_jobs(session, tenant_id, limit=2, offset=1)
    assert count == 5 and [j.id for j in page] == ids[::-1][1:3]
    pages = [repo.list_jobs(session, tenant_id, limit=2, offset=o)[0] for o in (0, 2, 4)]
    assert [j.id for p in pages for j in p] == ids[::-1]
    repo.request_cancel(session, ids[0], tenant_id)
    session.commit()
    cancelled, n = repo.list_jobs(session, tenant_id, status="cancelled")
    assert n == 1 and [j.id for j in cancelled] == [ids[0]]
    assert repo.list_jobs(session, tenant_id, status="queued")[1] == 4


def test_stuck_jobs_and_the_reaper_takes_each_once(session):
    running, queued, fresh = make_job(session), make_job(session), make_job(session)
    repo.claim_job(session, running.id, 3, 60)
    age(session, running.id, 120)  # its worker stopped beating a minute ago
    age(session, queued.id, 700)  # its message was lost
    assert [j.id for j in repo.stuck_jobs(session, utcnow(), 60, 600)] == [running.id, queued.id]
    assert repo.stuck_jobs(session, utcnow(), 600, 6000) == []
    assert repo.mark_reaped(session, running.id, 60, 600) is True
    session.commit()
    assert repo.mark_reaped(session, running.id, 60, 600) is False
    session.refresh(running)
    assert running.status == "queued" and repo.writable(session, running.id, 1) == (False, False)
    assert repo.claim_job(session, running.id, 3, 60).attempts == 2
    assert fresh.id not in [j.id for j in repo.stuck_jobs(session, utcnow(), 60, 600)]


def test_a_cancel_accepted_before_the_finish_wins_even_after_the_last_step(database_url, session):
    """Cancel at the last step: the worker wrote every step, the client's cancel is accepted (202), then the
    worker finishes. The job must end cancelled, never succeeded, and no draft is written."""
    from redraft.errors import JobCancelled

    job = make_job(session)
    repo.claim_job(session, job.id, 3, 60)
    repo.add_steps(session, job.id, 0, [([[0, 5, "a", 0.5]], [])])
    repo.set_steps_run(session, job.id, 1)
    session.commit()
    with get_sessionmaker(database_url)() as client:  # the API's own session accepts the cancel
        assert repo.request_cancel(client, job.id, job.tenant_id).status == "running"
        client.commit()
    with pytest.raises(JobCancelled):
        repo.finish_job(session, job.id, text="t", token_ids=[5], result_extra={}, steps_run=1)
    session.rollback()
    assert repo.mark_cancelled(session, job.id)
    session.commit()
    session.refresh(job)
    assert job.status == "cancelled" and job.result is None and repo.list_drafts(session, job.id) == []
