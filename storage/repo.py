"""Repository functions. Each takes a Session first; callers own the transaction unless a docstring
says the function commits (claims must be visible to other workers before the long work starts)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from redraft.errors import Conflict, JobCancelled, NotFound
from redraft.jobs import ACTIVE, TERMINAL, JobParams, JobStatus
from redraft.storage.tables import ApiKey, Draft, Job, Step, Template, Tenant, utcnow


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(s: Session, name: str) -> Tenant:
    """The tenant called ``name``, created (and flushed) if new."""
    tenant = s.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        s.add(tenant)
        s.flush()
    return tenant


def create_api_key(s: Session, tenant_name: str) -> tuple[str, ApiKey]:
    """A new key for the tenant (created if new). The key is returned once; only its hash is stored."""
    tenant = get_or_create_tenant(s, tenant_name)
    key = "rdk_" + secrets.token_urlsafe(32)
    row = ApiKey(tenant_id=tenant.id, prefix=key[:12], key_hash=_hash(key))
    s.add(row)
    s.flush()
    return key, row


def tenant_for_key(s: Session, key: str) -> Tenant | None:
    """The key's tenant; None for an unknown or revoked key."""
    row = s.scalar(select(ApiKey).where(ApiKey.key_hash == _hash(key), ApiKey.revoked_at.is_(None)))
    return s.get(Tenant, row.tenant_id) if row else None


def create_job(s: Session, *, tenant_id: str, kind: str, model: str, request: dict, params: dict,
               canvas: dict) -> Job:
    """A new queued job (flushed, so its id is set; the caller commits, then enqueues)."""
    job = Job(tenant_id=tenant_id, kind=kind, model=model, request=request, params=params, canvas=canvas,
              status=JobStatus.QUEUED)
    s.add(job)
    s.flush()
    return job


def get_job(s: Session, job_id: str, tenant_id: str | None = None) -> Job:
    """The job; NotFound also when it belongs to another tenant (a tenant never learns it exists)."""
    return _check(s.get(Job, job_id), job_id, tenant_id)


def _locked(s: Session, job_id: str, tenant_id: str | None = None) -> Job:
    """The job re-read under a row lock (PostgreSQL; SQLite serialises writers), for a state change."""
    return _check(s.get(Job, job_id, with_for_update=True, populate_existing=True), job_id, tenant_id)


def _check(job: Job | None, job_id: str, tenant_id: str | None) -> Job:
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        raise NotFound(f"job {job_id} not found")
    return job


def list_jobs(s: Session, tenant_id: str, limit: int = 50, offset: int = 0,
              status: str | None = None) -> tuple[list[Job], int]:
    """One page of the tenant's jobs, newest first, and the total count."""
    where = [Job.tenant_id == tenant_id] + ([Job.status == status] if status else [])
    count = s.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    jobs = s.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset))
    return list(jobs), count


def claim_job(s: Session, job_id: str, max_attempts: int, heartbeat_timeout_s: float) -> Job | None:
    """The worker's entry point; idempotent by job id and safe under re-delivery. Commits.

    Returns None when this delivery must not run: the job is finished, cancelled, or running under a
    live worker (fresh heartbeat). A job whose worker died is taken over: its partial steps are
    deleted, so the re-run never duplicates them. Ownership is a compare-and-swap on ``attempts``,
    so two deliveries racing for the same job cannot both win, on SQLite or PostgreSQL.
    """
    # populate_existing: a row this session already holds may be stale (sessions do not expire on commit).
    job = s.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None or job.status in TERMINAL:
        s.commit()
        return None
    now = utcnow()
    if job.cancel_requested:
        mark_cancelled(s, job_id)
        s.commit()
        return None
    if job.status == JobStatus.RUNNING and job.updated_at > now - timedelta(seconds=heartbeat_timeout_s):
        s.commit()
        return None
    seen = job.attempts
    if seen + 1 > max_attempts:
        fail_job(s, job_id, "too_many_attempts",
                 f"the job was delivered {seen} times and its worker died each time; it will not be retried")
        s.commit()
        return None
    won = s.execute(
        update(Job).where(Job.id == job_id, Job.attempts == seen, Job.status.in_(ACTIVE), ~Job.cancel_requested)
        .values(attempts=seen + 1, status=JobStatus.RUNNING, started_at=now, updated_at=now, steps_run=0)
    ).rowcount
    if won != 1:
        s.rollback()
        return None
    s.execute(delete(Step).where(Step.job_id == job_id))
    # A revise job's imported source text is its input, not its output: it stays.
    revise = JobParams.from_json(job.params).revise if job.params else None
    source = revise.parent_id if revise else None
    s.execute(delete(Draft).where(Draft.job_id == job_id, *([Draft.id != source] if source else [])))
    s.commit()
    s.refresh(job)
    return job


def add_steps(s: Session, job_id: str, first: int, rows: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> None:
    """Record consecutive denoising steps ``first, first + 1, ...`` in one statement: ``(committed, remasked)``
    each, both ``[[position, token_id, token_text, confidence], ...]``."""
    now = utcnow()
    s.execute(insert(Step), [{"job_id": job_id, "step": first + i, "committed": list(c), "remasked": list(r),
                              "created_at": now} for i, (c, r) in enumerate(rows)])


def writable(s: Session, job_id: str, attempt: int) -> tuple[bool, bool]:
    """(this attempt still owns the job, a client asked to cancel it), in one read."""
    row = s.execute(select(Job.status, Job.attempts, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
    if row is None:
        return False, False
    return row.status == JobStatus.RUNNING and row.attempts == attempt, bool(row.cancel_requested)


def set_canvas(s: Session, job_id: str, canvas: dict) -> None:
    """Replace a job's canvas before its first step (a revise job whose scorer added regions)."""
    s.execute(update(Job).where(Job.id == job_id).values(canvas=canvas, updated_at=utcnow()))


def set_steps_run(s: Session, job_id: str, steps_run: int) -> None:
    """Record progress; also the heartbeat the reaper watches."""
    s.execute(update(Job).where(Job.id == job_id).values(steps_run=steps_run, updated_at=utcnow()))


def finish_job(s: Session, job_id: str, *, text: str, token_ids: list[int], result_extra: dict,
               steps_run: int, parent_id: str | None = None, layout: dict | None = None) -> Draft:
    """Write the job's draft and mark it succeeded, in the caller's one transaction. Idempotent.

    ``parent_id``: the draft this one revises (its version is the parent's plus one).
    Raises Conflict when the job was failed or cancelled meanwhile: a finished job never changes state;
    and JobCancelled when a cancel was accepted (202) before this: a cancelled job never ends succeeded,
    even when its last step was already written. The status change is a compare-and-swap that also
    requires no cancel request, so a cancel committed between the read and the write still wins.
    """
    job = _locked(s, job_id)
    if job.status == JobStatus.SUCCEEDED and job.result:
        return s.get_one(Draft, job.result["draft_id"])
    if job.status in TERMINAL:
        raise Conflict(f"job {job_id} is already {job.status}; it cannot succeed now")
    tenant_id = job.tenant_id
    now = utcnow()
    won = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE), ~Job.cancel_requested).values(
        status=JobStatus.SUCCEEDED, finished_at=now, updated_at=now, steps_run=steps_run)).rowcount == 1
    if not won:
        if s.scalar(select(Job.cancel_requested).where(Job.id == job_id)):
            raise JobCancelled("cancelled by the client")
        raise Conflict(f"job {job_id} finished meanwhile; it cannot succeed now")
    parent = s.get(Draft, parent_id) if parent_id else None
    draft = Draft(tenant_id=tenant_id, job_id=job_id, parent_id=parent.id if parent else None,
                  version=parent.version + 1 if parent else 1, text=text, token_ids=token_ids, layout=layout)
    s.add(draft)
    s.flush()
    s.execute(update(Job).where(Job.id == job_id).values(result={"text": text, "draft_id": draft.id, **result_extra}))
    s.expire(job)
    return draft


def fail_job(s: Session, job_id: str, code: str, message: str) -> bool:
    """Fail a queued or running job; False (no change) when it had already finished."""
    now = utcnow()
    return s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE)).values(
        status=JobStatus.FAILED, error_code=code, error_message=message, finished_at=now, updated_at=now)).rowcount == 1


def mark_cancelled(s: Session, job_id: str) -> bool:
    """Cancel a queued or running job; False (no change) when it had already finished."""
    now = utcnow()
    return s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                     .values(status=JobStatus.CANCELLED, finished_at=now, updated_at=now)).rowcount == 1


def request_cancel(s: Session, job_id: str, tenant_id: str) -> Job:
    """Queued: cancelled now, it never runs. Running: flagged; the worker stops at its next step.

    Compare-and-swap on the status, so a worker claiming the job at the same moment either sees the
    cancellation (and skips the job) or has already made it running (and it is flagged instead).
    """
    job = get_job(s, job_id, tenant_id)
    now = utcnow()
    queued = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(
        status=JobStatus.CANCELLED, finished_at=now, updated_at=now, cancel_requested=True)).rowcount
    if not queued:
        running = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING)
                            .values(cancel_requested=True)).rowcount
        if not running:
            s.refresh(job)
            raise Conflict(f"job {job_id} is already {job.status}; only queued or running jobs can be cancelled")
    s.flush()
    s.refresh(job)
    return job


def list_steps(s: Session, job_id: str, after: int | None = None) -> list[Step]:
    """The job's steps in order; only those after step ``after`` when given (for resuming a stream)."""
    where = [Step.job_id == job_id] + ([Step.step > after] if after is not None else [])
    return list(s.scalars(select(Step).where(*where).order_by(Step.step)))


def list_drafts(s: Session, job_id: str) -> list[Draft]:
    """The job's drafts by version."""
    return list(s.scalars(select(Draft).where(Draft.job_id == job_id).order_by(Draft.version)))


def add_source_draft(s: Session, job: Job, text: str, token_ids: list[int]) -> Draft:
    """A revise job's imported text (one Redraft did not write), so its result has a parent to diff against."""
    draft = Draft(tenant_id=job.tenant_id, job_id=job.id, parent_id=None, version=1, text=text,
                  token_ids=token_ids, layout=None)
    s.add(draft)
    s.flush()
    return draft


def lineage(s: Session, draft: Draft, max_depth: int = 1000) -> tuple[list[Draft], list[Draft]]:
    """(ancestors from the root down to ``draft``'s parent, every descendant breadth-first)."""
    ancestors: list[Draft] = []
    parent_id = draft.parent_id
    while parent_id is not None and len(ancestors) < max_depth:
        parent = s.get_one(Draft, parent_id)
        ancestors.append(parent)
        parent_id = parent.parent_id
    descendants: list[Draft] = []
    frontier = [draft.id]
    while frontier and len(descendants) < max_depth:
        children = list(s.scalars(select(Draft).where(Draft.parent_id.in_(frontier))
                                  .order_by(Draft.created_at, Draft.id)))
        descendants += children
        frontier = [c.id for c in children]
    return ancestors[::-1], descendants


def get_draft(s: Session, draft_id: str, tenant_id: str) -> Draft:
    """The draft; NotFound also when it belongs to another tenant."""
    draft = s.get(Draft, draft_id)
    if draft is None or draft.tenant_id != tenant_id:
        raise NotFound(f"draft {draft_id} not found")
    return draft


def _stale(now: datetime, heartbeat_timeout_s: float, queued_timeout_s: float) -> ColumnElement[bool]:
    return or_(
        (Job.status == JobStatus.RUNNING) & (Job.updated_at < now - timedelta(seconds=heartbeat_timeout_s)),
        (Job.status == JobStatus.QUEUED) & (Job.updated_at < now - timedelta(seconds=queued_timeout_s)),
    )


def stuck_jobs(s: Session, now: datetime, heartbeat_timeout_s: float, queued_timeout_s: float) -> list[Job]:
    """Running jobs whose worker stopped beating, and queued jobs whose message may have been lost."""
    stale = _stale(now, heartbeat_timeout_s, queued_timeout_s)
    return list(s.scalars(select(Job).where(stale).order_by(Job.created_at)))


def mark_reaped(s: Session, job_id: str, heartbeat_timeout_s: float, queued_timeout_s: float) -> bool:
    """Atomically take a stale job for re-enqueueing; False when another reaper already did.

    The job goes back to ``queued``: the next delivery claims it, and the old attempt, if it was
    only slow rather than dead, sees it no longer owns the job and stops.
    """
    now = utcnow()
    won = s.execute(update(Job).where(Job.id == job_id, _stale(now, heartbeat_timeout_s, queued_timeout_s))
                    .values(updated_at=now, status=JobStatus.QUEUED)).rowcount
    return won == 1


def save_template(s: Session, tenant_id: str, name: str, source: str, description: str | None = None) -> Template:
    """Create the tenant's template ``name``, or replace its source if it exists."""
    row = s.scalar(select(Template).where(Template.tenant_id == tenant_id, Template.name == name))
    if row is None:
        row = Template(tenant_id=tenant_id, name=name, source=source, description=description)
        s.add(row)
    else:
        row.source, row.description, row.updated_at = source, description, utcnow()
    s.flush()
    return row


def get_template(s: Session, tenant_id: str, name: str) -> Template:
    row = s.scalar(select(Template).where(Template.tenant_id == tenant_id, Template.name == name))
    if row is None:
        raise NotFound(f"template {name!r} not found; save it with POST /v1/templates first")
    return row


def list_templates(s: Session, tenant_id: str) -> list[Template]:
    return list(s.scalars(select(Template).where(Template.tenant_id == tenant_id).order_by(Template.name)))


# ------------------------------------------------------------------------------------ operators: keys and tenants
# `redraft keys revoke|list` and `redraft tenants delete` (redraft/cli.py). Deleting a tenant relies on the
# foreign keys' ON DELETE CASCADE (storage/tables.py, migration 0001/0002; SQLite enforces them because
# storage/db.py turns PRAGMA foreign_keys on for every connection).

MIN_KEY_PREFIX = 8  # "rdk_" and four more characters: a shorter prefix would name too many keys


def get_tenant(s: Session, name: str) -> Tenant:
    tenant = s.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"no tenant called {name!r}; tenants come into being with `redraft keys create --tenant NAME`")
    return tenant


def list_api_keys(s: Session, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys (revoked ones too), oldest first."""
    return list(s.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at,
                                                                                       ApiKey.id)))


def find_api_key(s: Session, key_or_prefix: str) -> ApiKey:
    """The key itself, or the one key whose shown prefix starts with ``key_or_prefix``."""
    row = s.scalar(select(ApiKey).where(ApiKey.key_hash == _hash(key_or_prefix)))
    if row is not None:
        return row
    if len(key_or_prefix) > len("rdk_") + 8 or len(key_or_prefix) < MIN_KEY_PREFIX:
        raise NotFound(f"no API key matches {key_or_prefix!r}: give the whole key, or a prefix of at least "
                       f"{MIN_KEY_PREFIX} characters as `redraft keys list --tenant NAME` shows it")
    rows = list(s.scalars(select(ApiKey).where(ApiKey.prefix.startswith(key_or_prefix, autoescape=True))
                          .order_by(ApiKey.created_at).limit(11)))
    if not rows:
        raise NotFound(f"no API key has the prefix {key_or_prefix!r}; `redraft keys list --tenant NAME` shows them")
    if len(rows) > 1:
        shown = ", ".join(r.prefix for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
        raise Conflict(f"the prefix {key_or_prefix!r} matches {len(rows)} keys ({shown}); give a longer prefix or "
                       "the whole key")
    return rows[0]


def revoke_api_key(s: Session, key_or_prefix: str) -> tuple[ApiKey, bool]:
    """Revoke the key (``find_api_key``); (its row, whether it was revoked just now). The next request with it is a
    401: ``tenant_for_key`` reads ``revoked_at`` on every request."""
    row = find_api_key(s, key_or_prefix)
    if row.revoked_at is not None:
        return row, False
    s.execute(update(ApiKey).where(ApiKey.id == row.id, ApiKey.revoked_at.is_(None)).values(revoked_at=utcnow()))
    s.refresh(row)
    return row, True


def tenant_usage(s: Session, tenant_id: str) -> dict[str, int]:
    """How many rows of each kind the tenant owns, and how many of its jobs are queued or running."""
    jobs = dict(s.execute(select(Job.status, func.count()).where(Job.tenant_id == tenant_id)
                          .group_by(Job.status)).all())

    def count(model: Any, *where: Any) -> int:
        return s.scalar(select(func.count()).select_from(model).where(*where)) or 0

    return {
        "keys": count(ApiKey, ApiKey.tenant_id == tenant_id),
        "jobs": sum(jobs.values()),
        **{status: jobs.get(status, 0) for status in ACTIVE},  # queued, running
        "steps": count(Step.__table__.join(Job.__table__), Job.tenant_id == tenant_id),
        "drafts": count(Draft, Draft.tenant_id == tenant_id),
        "templates": count(Template, Template.tenant_id == tenant_id),
    }


def running_job_ids(s: Session, tenant_id: str) -> list[str]:
    return list(s.scalars(select(Job.id).where(Job.tenant_id == tenant_id, Job.status == JobStatus.RUNNING)
                          .order_by(Job.created_at)))


def cancel_tenant_jobs(s: Session, tenant_id: str) -> int:
    """Cancel every queued or running job of the tenant, as ``request_cancel`` does one: queued ones now, running
    ones flagged (their worker stops at its next step). Returns how many were active."""
    now = utcnow()
    queued = s.execute(update(Job).where(Job.tenant_id == tenant_id, Job.status == JobStatus.QUEUED).values(
        status=JobStatus.CANCELLED, finished_at=now, updated_at=now, cancel_requested=True)).rowcount
    running = s.execute(update(Job).where(Job.tenant_id == tenant_id, Job.status == JobStatus.RUNNING)
                        .values(cancel_requested=True)).rowcount
    return queued + running


def delete_tenant(s: Session, tenant_id: str, *, allow_running: bool = False) -> dict[str, int]:
    """Delete the tenant and everything it owns (keys, jobs, steps, drafts, templates) through the foreign keys'
    cascades, in the caller's transaction; returns ``tenant_usage`` as it was just before.

    Raises Conflict while a job of the tenant is running, unless ``allow_running``: a worker still on one of
    them then finds its job gone at its next step (``writable``) and drops it.
    """
    tenant = s.get(Tenant, tenant_id, with_for_update=True, populate_existing=True)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id} not found")
    usage = tenant_usage(s, tenant_id)
    if usage[JobStatus.RUNNING] and not allow_running:
        ids = running_job_ids(s, tenant_id)
        raise Conflict(f"tenant {tenant.name!r} has {len(ids)} running job(s) ({', '.join(ids[:5])}"
                       f"{', ...' if len(ids) > 5 else ''}); wait for them, or force: cancel them first")
    s.execute(delete(Tenant).where(Tenant.id == tenant_id))
    s.expunge(tenant)
    return usage


# ---- sending jobs to the queue (the reaper's side: workers/reaper.py) ----------------------------------


def mark_enqueued(s: Session, job_id: str) -> None:
    """Record that the job's id was just sent to the queue."""
    s.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))


def unsent_jobs(s: Session, created_before: datetime) -> list[tuple[str, datetime | None]]:
    """(id, enqueued_at) of queued jobs never sent (the broker was down at submission), created before the time."""
    where = (Job.status == JobStatus.QUEUED, Job.enqueued_at.is_(None), Job.created_at < created_before)
    return [tuple(r) for r in s.execute(select(Job.id, Job.enqueued_at).where(*where).order_by(Job.created_at))]


def jobs_sent_before(s: Session, before: datetime) -> list[tuple[str, datetime | None]]:
    """(id, enqueued_at) of queued jobs last sent before the time (to a broker that has since lost its data)."""
    where = (Job.status == JobStatus.QUEUED, Job.enqueued_at < before)
    return [tuple(r) for r in s.execute(select(Job.id, Job.enqueued_at).where(*where).order_by(Job.created_at))]


def queued_sent_at(s: Session, job_ids: Sequence[str]) -> list[tuple[str, datetime | None]]:
    """(id, enqueued_at) of those of the jobs that are still queued."""
    if not job_ids:
        return []
    where = (Job.id.in_(job_ids), Job.status == JobStatus.QUEUED)
    return [tuple(r) for r in s.execute(select(Job.id, Job.enqueued_at).where(*where).order_by(Job.created_at))]


def take_for_resend(s: Session, job_id: str, sent_at: datetime | None) -> bool:
    """Atomically take a queued job for sending again: True for the one caller that finds it still queued
    and its ``enqueued_at`` still ``sent_at``, as the caller read it (it becomes now). Commits."""
    now = utcnow()
    sent = Job.enqueued_at.is_(None) if sent_at is None else Job.enqueued_at == sent_at
    won = s.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED, sent)
        .values(enqueued_at=now, updated_at=now)
    ).rowcount
    s.commit()
    return won == 1


def mark_unsent(s: Session, job_id: str) -> None:
    """The send after :func:`take_for_resend` failed: leave the job for the next pass to send."""
    s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(enqueued_at=None))
