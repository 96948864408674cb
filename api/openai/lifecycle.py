"""Submit an OpenAI request's jobs, wait for them, read their outcomes, cancel them when the client goes away.

Submission is Redraft's one path (``redraft.api.submit.submit_job`` under the tenant's quotas, as POST /v1/jobs); waiting
reads the job's events as GET /v1/jobs/{id}/events does (Redis pub/sub wakes it, the database is the truth).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from redraft.api.openai.errors import OpenAIError, context_too_long, from_redraft
from redraft.api.openai.jobs import ChoicePlan, Outcome
from redraft.api.quotas import Quotas
from redraft.api.routes.jobs import event_stream
from redraft.api.submit import submit_job
from redraft.errors import Conflict, ConstraintError, RedraftError
from redraft.families import ModelInfo, load_model_info
from redraft.jobs import LAST_EVENTS, JobStatus
from redraft.settings import Settings
from redraft.storage import repo
from redraft.storage.db import get_sessionmaker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    """A job as the stream needs it: its start canvas, its params and its model."""

    job_id: str
    model: str
    created: int
    canvas: dict[str, Any]
    params: dict[str, Any]


def model_info(settings: Settings, name: str) -> ModelInfo:
    return load_model_info(name, settings.models[name])


def submit_all(session: Session, tenant_id: str, plans: list[ChoicePlan], settings: Settings,
               text_field: str) -> list[Submitted]:
    """One job per choice, each admitted by the tenant's quotas; none stays queued when one is refused."""
    done: list[Submitted] = []
    try:
        for plan in plans:
            with Quotas(settings).admit(session, tenant_id):
                job = submit_job(session, tenant_id, plan.request, settings)
            done.append(Submitted(job.id, job.model, int(job.created_at.timestamp()), job.canvas, job.params))
    except RedraftError as exc:
        session.rollback()
        cancel_jobs([d.job_id for d in done], tenant_id)
        param = plans[0].target_from if isinstance(exc, ConstraintError) else \
            text_field if context_too_long(exc) else None
        raise from_redraft(exc, param) from exc
    return done


def cancel_jobs(job_ids: list[str], tenant_id: str) -> None:
    """Ask to cancel each job (repo.request_cancel); one that has finished already is left as it is."""
    with get_sessionmaker()() as s:
        for job_id in job_ids:
            try:
                repo.request_cancel(s, job_id, tenant_id)
                s.commit()
            except Conflict:
                s.rollback()


async def cancel_shielded(job_ids: list[str], tenant_id: str) -> None:
    """``cancel_jobs`` from a request that is being torn down (its cancel scope must not stop the cancel)."""
    with anyio.CancelScope(shield=True):
        try:
            await run_in_threadpool(cancel_jobs, job_ids, tenant_id)
        except Exception:  # the client is gone: nobody to answer, so log it
            log.exception("could not cancel jobs %s after their client went away", job_ids)
        else:
            log.info("client went away: cancelled jobs %s", job_ids)


async def job_events(job_id: str, request: Request, settings: Settings) -> AsyncIterator[tuple[str, dict]]:
    """The job's events as (name, data): each `step` (a StepPublic), then `done` or `failed`; it ends early,
    without a terminal event, when the client disconnects."""
    events = event_stream(job_id, request, settings.redis_url)
    try:
        async for event in events:
            yield event["event"], json.loads(event["data"])
    finally:
        await events.aclose()


def timeout_error(job_ids: list[str], settings: Settings) -> OpenAIError:
    ids = ", ".join(job_ids)
    return OpenAIError(504, f"the job(s) {ids} did not finish within {settings.openai_wait_timeout_s:g} s "
                            "(REDRAFT_OPENAI_WAIT_TIMEOUT_S); they go on: read the result at GET /v1/jobs/{id}, or "
                            "stream the request instead", type="timeout", code="timeout",
                       headers={"x-redraft-job-id": ids})


async def wait_all(submitted: list[Submitted], request: Request, settings: Settings) -> bool:
    """Wait until every job has ended: True; False when the client disconnected first. A 504 past the limit."""
    try:
        async with asyncio.timeout(settings.openai_wait_timeout_s):
            for sub in submitted:
                ended = False
                async for name, _ in job_events(sub.job_id, request, settings):
                    ended = name in LAST_EVENTS
                if not ended:
                    return False
    except TimeoutError as exc:
        raise timeout_error([s.job_id for s in submitted], settings) from exc
    return True


def load_outcomes(job_ids: list[str], tenant_id: str, settings: Settings) -> list[Outcome]:
    """Each finished job's answer, token counts and ending, from its row and its draft."""
    outcomes = []
    with get_sessionmaker()() as s:
        for job_id in job_ids:
            job = repo.get_job(s, job_id, tenant_id)
            info = model_info(settings, job.model)
            slot = [p for p, k in enumerate(job.canvas["slot_of"]) if k == 0]
            answer, written = None, []
            if job.status == JobStatus.SUCCEEDED and job.result:
                draft = repo.get_draft(s, job.result["draft_id"], tenant_id)
                written = [t for t in (draft.token_ids[p] for p in slot) if t not in (info.empty_id, info.mask_id)]
                answer = (job.result.get("slots") or {}).get("answer") if job.kind == "generate" \
                    else (job.result.get("gaps") or [""])[0]
            error = (job.error_code or job.status, job.error_message or f"the job ended {job.status}") \
                if job.status != JobStatus.SUCCEEDED else None
            outcomes.append(Outcome(
                job_id=job.id, status=job.status, model=job.model, created=int(job.created_at.timestamp()),
                answer=answer, error=error, prompt_tokens=sum(job.canvas["fixed"]), completion_tokens=len(written),
                slot_size=len(slot), ended_by_eos=any(t in info.eos_ids for t in written)))
    return outcomes


def failure(outcome: Outcome) -> OpenAIError:
    """The answer for a job that did not succeed (failed while running, or cancelled by someone else)."""
    code, message = outcome.error or (JobStatus.FAILED, "the job failed")
    return OpenAIError(500, f"job {outcome.job_id} {outcome.status}: {message}", type="server_error", code=code,
                       headers={"x-redraft-job-id": outcome.job_id})
