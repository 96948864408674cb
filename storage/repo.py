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
from storage.models import ApiKey, Draft, Job, Step, Template, Tenant, utcnow

ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")


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
              status="queued")
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
    if job.status == "running" and job.updated_at > now - timedelta(seconds=heartbeat_timeout_s):
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
        .values(attempts=seen + 1, status="running", started_at=now, updated_at=now, steps_run=0)
    ).rowcount
    if won != 1:
        s.rollback()
        return None
    s.execute(delete(Step).where(Step.job_id == job_id))
    # A revise job's imported source text is its input, not its output: it stays.
    source = (job.params or {}).get("revise", {}).get("parent_id")
    s.execute(delete(Draft).where(Draft.job_id == job_id, *([Draft.id != source] if source else [])))
    s.commit()
    s.refresh(job)
    return job


def still_owner(s: Session, job_id: str, attempt: int) -> bool:
    """Whether the attempt that claimed the job still owns it (a takeover bumps ``attempts``)."""
    row = s.execute(select(Job.status, Job.attempts).where(Job.id == job_id)).one_or_none()
    return row is not None and row.status == "running" and row.attempts == attempt


def add_step(s: Session, job_id: str, step: int, committed: Sequence[Any], remasked: Sequence[Any] = ()) -> None:
    """Record one denoising step: ``[[position, token_id, token_text, confidence], ...]`` committed."""
    add_steps(s, job_id, step, [(committed, remasked)])


def add_steps(s: Session, job_id: str, first: int, rows: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> None:
    """Record consecutive steps ``first, first + 1, ...`` in one statement (``(committed, remasked)`` each)."""
    now = utcnow()
    s.execute(insert(Step), [{"job_id": job_id, "step": first + i, "committed": list(c), "remasked": list(r),
                              "created_at": now} for i, (c, r) in enumerate(rows)])


def writable(s: Session, job_id: str, attempt: int) -> tuple[bool, bool]:
    """(this attempt still owns the job, a client asked to cancel it), in one read."""
    row = s.execute(select(Job.status, Job.attempts, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
    if row is None:
        return False, False
    return row.status == "running" and row.attempts == attempt, bool(row.cancel_requested)


def set_canvas(s: Session, job_id: str, canvas: dict) -> None:
    """Replace a job's canvas before its first step (a revise job whose scorer added regions)."""
    s.execute(update(Job).where(Job.id == job_id).values(canvas=canvas, updated_at=utcnow()))


def set_steps_run(s: Session, job_id: str, steps_run: int) -> None:
    """Record progress; also the heartbeat the reaper watches."""
    s.execute(update(Job).where(Job.id == job_id).values(steps_run=steps_run, updated_at=utcnow()))


def cancel_requested(s: Session, job_id: str) -> bool:
    """Whether a client asked to cancel the job (the worker checks at every step)."""
    return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


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
    if job.status == "succeeded" and job.result:
        return s.get_one(Draft, job.result["draft_id"])
    if job.status in TERMINAL:
        raise Conflict(f"job {job_id} is already {job.status}; it cannot succeed now")
    tenant_id = job.tenant_id
    now = utcnow()
    won = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE), ~Job.cancel_requested).values(
        status="succeeded", finished_at=now, updated_at=now, steps_run=steps_run)).rowcount == 1
    if not won:
        if cancel_requested(s, job_id):
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
        status="failed", error_code=code, error_message=message, finished_at=now, updated_at=now)).rowcount == 1


def mark_cancelled(s: Session, job_id: str) -> bool:
    """Cancel a queued or running job; False (no change) when it had already finished."""
    now = utcnow()
    return s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                     .values(status="cancelled", finished_at=now, updated_at=now)).rowcount == 1


def request_cancel(s: Session, job_id: str, tenant_id: str) -> Job:
    """Queued: cancelled now, it never runs. Running: flagged; the worker stops at its next step.

    Compare-and-swap on the status, so a worker claiming the job at the same moment either sees the
    cancellation (and skips the job) or has already made it running (and it is flagged instead).
    """
    job = get_job(s, job_id, tenant_id)
    now = utcnow()
    queued = s.execute(update(Job).where(Job.id == job_id, Job.status == "queued").values(
        status="cancelled", finished_at=now, updated_at=now, cancel_requested=True)).rowcount
    if not queued:
        running = s.execute(update(Job).where(Job.id == job_id, Job.status == "running")
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
        (Job.status == "running") & (Job.updated_at < now - timedelta(seconds=heartbeat_timeout_s)),
        (Job.status == "queued") & (Job.updated_at < now - timedelta(seconds=queued_timeout_s)),
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
                    .values(updated_at=now, status="queued")).rowcount
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
