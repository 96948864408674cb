"""/v1/jobs: submit, inspect, cancel, and watch jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import APIRouter, Body, Query, Request
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import EventSourceResponse

from redraft.api.deps import CurrentTenant, SessionDep, SettingsDep
from redraft.api.quotas import Quotas
from redraft.api.schemas import (
    AUTHED_ERRORS,
    BODY_ERRORS,
    DraftPublic,
    DraftsPublic,
    JobCreate,
    JobError,
    JobLinks,
    JobPublic,
    JobResult,
    JobsPublic,
    JobTimings,
    StepPublic,
    StepsPublic,
    error_responses,
)
from redraft.api.submit import submit_job
from redraft.families import load_model_info, load_tokenizer, token_text
from redraft.jobs import TERMINAL, JobEvent, JobStatus
from redraft.queue import job_channel
from redraft.settings import Settings
from redraft.storage import repo
from redraft.storage.db import get_sessionmaker
from redraft.storage.tables import Draft, Job, Step

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=AUTHED_ERRORS)
JOB_404 = error_responses(404)  # the routes that name a job


def job_public(job: Job) -> JobPublic:
    base = f"/v1/jobs/{job.id}"
    return JobPublic(
        id=job.id,
        kind=job.kind,
        status=job.status,
        model=job.model,
        params=job.params,
        result=JobResult(**job.result) if job.result else None,
        error=JobError(code=job.error_code, message=job.error_message or "") if job.error_code else None,
        timings=JobTimings(created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
                           steps_run=job.steps_run, attempts=job.attempts),
        links=JobLinks(self=base, steps=f"{base}/steps", drafts=f"{base}/drafts", events=f"{base}/events",
                       cancel=f"{base}/cancel"),
    )


def step_public(step: Step) -> StepPublic:
    return StepPublic(step=step.step, committed=[tuple(c) for c in step.committed], remasked=step.remasked or [])


def draft_public(draft: Draft) -> DraftPublic:
    return DraftPublic(id=draft.id, job_id=draft.job_id, parent_id=draft.parent_id, version=draft.version,
                       text=draft.text, token_ids=draft.token_ids, layout=draft.layout,
                       created_at=draft.created_at)


# OpenAPI links: what a client (or schemathesis' stateful phase) can do next with the id in a response.
_JOB_LINKS = {name: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}} for name, op in (
    ("GetJob", "get_job_v1_jobs__job_id__get"), ("GetSteps", "get_steps_v1_jobs__job_id__steps_get"),
    ("GetDrafts", "get_drafts_v1_jobs__job_id__drafts_get"), ("Cancel", "cancel_job_v1_jobs__job_id__cancel_post"))}


@router.post("", status_code=202, response_model=JobPublic, responses={
    **BODY_ERRORS, **error_responses(429), 202: {"description": "queued", "links": _JOB_LINKS}})
def create_job(session: SessionDep, tenant: CurrentTenant, settings: SettingsDep,
               body: Annotated[JobCreate, Body()]) -> JobPublic:
    """Queue a job; poll its `links.self` or stream `links.events`. A spent tenant quota is a 429."""
    with Quotas(settings).admit(session, tenant.id):
        job = submit_job(session, tenant.id, body, settings)
    return job_public(job)


@router.get("", response_model=JobsPublic)
def list_jobs(session: SessionDep, tenant: CurrentTenant, limit: Annotated[int, Query(ge=1, le=200)] = 50,
              offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> JobsPublic:
    """The tenant's jobs, newest first."""
    jobs, count = repo.list_jobs(session, tenant.id, limit=limit, offset=offset)
    return JobsPublic(data=[job_public(j) for j in jobs], count=count)


@router.get("/{job_id}", response_model=JobPublic, responses=JOB_404)
def get_job(job_id: str, session: SessionDep, tenant: CurrentTenant) -> JobPublic:
    """A job's status, result, error and timings."""
    return job_public(repo.get_job(session, job_id, tenant.id))


def canvas_text(job: Job, settings: Settings) -> list[str]:
    if job.model not in settings.models:
        return []
    tokenizer = load_tokenizer(load_model_info(job.model, settings.models[job.model]).path)
    return [token_text(tokenizer, t) for t in job.canvas["token_ids"]]


@router.get("/{job_id}/steps", response_model=StepsPublic, responses=JOB_404)
def get_steps(job_id: str, session: SessionDep, tenant: CurrentTenant, settings: SettingsDep) -> StepsPublic:
    """The step history: enough to replay the canvas from its start to the final tokens."""
    job = repo.get_job(session, job_id, tenant.id)
    steps = [step_public(s) for s in repo.list_steps(session, job.id)]
    mask_id = next((t for t, f in zip(job.canvas["token_ids"], job.canvas["fixed"]) if not f), -1)
    return StepsPublic(job_id=job.id, canvas=job.canvas["token_ids"], canvas_text=canvas_text(job, settings),
                       fixed=job.canvas["fixed"], mask_id=mask_id, data=steps, count=len(steps))


@router.get("/{job_id}/drafts", response_model=DraftsPublic, responses={**JOB_404, 200: {"description": "the drafts", "links": {
    name: {"operationId": op, "parameters": {"draft_id": "$response.body#/data/0/id"}}
    for name, op in (("GetDraft", "get_draft_v1_drafts__draft_id__get"),
                     ("GetLineage", "get_lineage_v1_drafts__draft_id__lineage_get"))}}})
def get_drafts(job_id: str, session: SessionDep, tenant: CurrentTenant) -> DraftsPublic:
    """The drafts this job produced (an infill job produces version 1)."""
    job = repo.get_job(session, job_id, tenant.id)
    drafts = [draft_public(d) for d in repo.list_drafts(session, job.id)]
    return DraftsPublic(data=drafts, count=len(drafts))


@router.post("/{job_id}/cancel", status_code=202, response_model=JobPublic,
             responses={**JOB_404, **error_responses(409)})
def cancel_job(job_id: str, session: SessionDep, tenant: CurrentTenant) -> JobPublic:
    """A queued job never runs; a running job stops at its next step."""
    job = repo.request_cancel(session, job_id, tenant.id)
    session.commit()
    return job_public(job)


@router.get("/{job_id}/events", response_class=EventSourceResponse, responses={**JOB_404, 200: {
    "description": "an SSE stream: `step` events (a StepPublic each), then one `done` (a JobPublic) or `failed`",
    "content": {"text/event-stream": {"schema": {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"enum": [e.value for e in JobEvent]},
        "data": {"type": "string", "description": "JSON: a StepPublic for `step`, a JobPublic for `done` / `failed`"},
        "id": {"type": "string", "description": "on `step` events: the step number"}}}}}}})
async def job_events(job_id: str, request: Request, tenant: CurrentTenant, settings: SettingsDep) -> EventSourceResponse:
    """Server-Sent Events: the steps so far, then each new `step`, then `done` or `failed`."""
    await run_in_threadpool(_check_job, job_id, tenant.id)
    return EventSourceResponse(event_stream(job_id, request, settings.redis_url))


def _check_job(job_id: str, tenant_id: str) -> None:
    with get_sessionmaker()() as s:
        repo.get_job(s, job_id, tenant_id)


def _poll(job_id: str, after: int) -> tuple[list[StepPublic], Job]:
    with get_sessionmaker()() as s:
        steps = [step_public(st) for st in repo.list_steps(s, job_id, after=after)]
        job = repo.get_job(s, job_id)
        s.expunge(job)
        return steps, job


async def event_stream(job_id: str, request: Request, redis_url: str | None) -> AsyncIterator[dict]:
    """The database is the source of truth; pub/sub only wakes the stream up early.

    Subscribing before the first read means no step can slip between the two; steps are sent in
    order, each once, by remembering the last step sent.
    """
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2) if redis_url else None
    pubsub = client.pubsub() if client else None
    try:
        if pubsub is not None:
            try:
                await pubsub.subscribe(job_channel(job_id))
            except (aioredis.RedisError, OSError):  # Redis is down: the database alone serves the stream
                log.warning("events for job %s: Redis unreachable, polling the database", job_id)
                await _close_quietly(pubsub)
                pubsub = None
        last = -1
        while True:
            steps, job = await run_in_threadpool(_poll, job_id, last)
            for st in steps:
                last = st.step
                yield {"event": JobEvent.STEP, "id": str(st.step), "data": st.model_dump_json()}
            if job.status in TERMINAL:
                event = JobEvent.FAILED if job.status == JobStatus.FAILED else JobEvent.DONE
                yield {"event": event, "data": job_public(job).model_dump_json()}
                return
            if await request.is_disconnected():
                return
            if pubsub is not None:
                try:
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                except aioredis.RedisError:
                    await asyncio.sleep(0.5)
            else:
                await asyncio.sleep(0.5)
    finally:
        if pubsub is not None:
            await _close_quietly(pubsub)
        if client is not None:
            await _close_quietly(client)


async def _close_quietly(resource) -> None:
    try:
        await resource.aclose()
    except (aioredis.RedisError, OSError):
        pass


