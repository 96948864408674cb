"""The repository on SQLite and PostgreSQL, over real connections."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update

from redraft.errors import Conflict, NotFound
from storage import repo
from storage.models import Base, Job, utcnow


def make_job(s, tenant="acme"):
    t = repo.get_or_create_tenant(s, tenant)
    job = repo.create_job(s, tenant_id=t.id, kind="infill", model="m", request={"text": "x"}, params={"steps": 2},
                          canvas={"token_ids": [1]})
    s.commit()
    return job


def test_migrations_match_the_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), Base.metadata)
    assert diff == []


def test_api_keys_are_hashed_and_resolve_to_their_tenant(session):
    key, row = repo.create_api_key(session, "acme")
    session.commit()
    assert key.startswith("rdk_") and row.key_hash != key and key not in row.key_hash
    assert repo.tenant_for_key(session, key).name == "acme"
    assert repo.tenant_for_key(session, key + "x") is None
    row.revoked_at = utcnow()
    session.commit()
    assert repo.tenant_for_key(session, key) is None


def test_tenant_isolation(session):
    job = make_job(session)
    other = repo.get_or_create_tenant(session, "other")
    assert repo.get_job(session, job.id, job.tenant_id).id == job.id
    with pytest.raises(NotFound):
        repo.get_job(session, job.id, other.id)
    with pytest.raises(NotFound):
        repo.request_cancel(session, job.id, other.id)
    assert repo.list_jobs(session, other.id) == ([], 0)


def test_claim_finish_and_idempotency(session):
    job = make_job(session)
    claimed = repo.claim_job(session, job.id, max_attempts=3, heartbeat_timeout_s=60)
    assert claimed.status == "running" and claimed.attempts == 1
    # a second delivery while the first worker is alive is skipped
    assert repo.claim_job(session, job.id, 3, 60) is None
    repo.add_step(session, job.id, 0, [[0, 5, "a", 0.5]])
    repo.set_steps_run(session, job.id, 1)
    session.commit()
    # the worker dies: its heartbeat goes stale; a new delivery takes over and clears the partial steps
    session.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow() - timedelta(seconds=120)))
    session.commit()
    again = repo.claim_job(session, job.id, 3, 60)
    assert again.attempts == 2 and repo.list_steps(session, job.id) == []
    assert not repo.still_owner(session, job.id, 1) and repo.still_owner(session, job.id, 2)
    draft = repo.finish_job(session, job.id, text="t", token_ids=[5], result_extra={"gaps": ["t"]}, steps_run=1)
    session.commit()
    assert repo.finish_job(session, job.id, text="other", token_ids=[6], result_extra={}, steps_run=1).id == draft.id
    assert repo.claim_job(session, job.id, 3, 60) is None
    assert [d.version for d in repo.list_drafts(session, job.id)] == [1]


def test_too_many_attempts_fails_the_job(session):
    job = make_job(session)
    for _ in range(2):
        assert repo.claim_job(session, job.id, 2, heartbeat_timeout_s=0) is not None
    assert repo.claim_job(session, job.id, 2, heartbeat_timeout_s=0) is None
    session.refresh(job)
    assert job.status == "failed" and job.error_code == "too_many_attempts"


def test_cancel_transitions(session):
    queued = make_job(session)
    assert repo.request_cancel(session, queued.id, queued.tenant_id).status == "cancelled"
    session.commit()
    assert repo.claim_job(session, queued.id, 3, 60) is None
    with pytest.raises(Conflict, match="already cancelled"):
        repo.request_cancel(session, queued.id, queued.tenant_id)
    running = make_job(session)
    repo.claim_job(session, running.id, 3, 60)
    assert repo.request_cancel(session, running.id, running.tenant_id).status == "running"
    session.commit()
    assert repo.cancel_requested(session, running.id)


def test_list_jobs_pages_newest_first(session):
    ids = [make_job(session).id for _ in range(5)]
    page, count = repo.list_jobs(session, repo.get_or_create_tenant(session, "acme").id, limit=2, offset=1)
    assert count == 5 and [j.id for j in page] == ids[::-1][1:3]


def test_reaper_takes_a_stale_job_once(session):
    job = make_job(session)
    repo.claim_job(session, job.id, 3, 60)
    session.execute(update(Job).where(Job.id == job.id).values(updated_at=utcnow() - timedelta(seconds=120)))
    session.commit()
    assert [j.id for j in repo.stuck_jobs(session, utcnow(), 60, 600)] == [job.id]
    assert repo.mark_reaped(session, job.id, 60, 600) is True
    session.commit()
    assert repo.mark_reaped(session, job.id, 60, 600) is False
    session.refresh(job)
    assert job.status == "queued" and not repo.still_owner(session, job.id, 1)
    assert repo.claim_job(session, job.id, 3, 60).attempts == 2
