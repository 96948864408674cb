"""The job lifecycle (``workers/runner.py``) on both databases, in this process, without Celery: a queued job runs
to its draft with its steps stored, a second delivery is skipped, a job the worker cannot serve fails visibly,
a cancelled one never runs, and a revise reads its parent draft through the lifecycle (the drafting never opens
a database session)."""

from __future__ import annotations

import os

import pytest

from redraft.api.schemas import GenerateJobCreate, InfillJobCreate, ReviseJobCreate
from redraft.api.submit import compile_request, revision_canvas, sampling_params
from redraft.families import load_model_info
from redraft.jobs import JobStatus
from redraft.settings import Settings, get_settings
from redraft.storage import repo
from redraft.storage.tables import Draft, Job, Step
from redraft.workers.runner import run_job

MODEL = "tiny"


@pytest.fixture
def worker_settings(session, database_url, tiny_model_dir):
    """The lifecycle's settings: the test's database (``session_scope`` reads it from the environment), the tiny
    model, the machine's Redis for step events."""
    saved = {k: os.environ.get(k) for k in ("DATABASE_URL", "REDIS_URL")}
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    get_settings.cache_clear()
    yield Settings(models={MODEL: tiny_model_dir}, default_model=MODEL, database_url=database_url, device="cpu")
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


def queue_job(session, settings: Settings, req, model: str = MODEL) -> str:
    """A job row as the API commits it (canvas and params compiled), not sent to any queue."""
    info = load_model_info(MODEL, settings.models[MODEL])
    tenant = repo.get_or_create_tenant(session, "lifecycle")
    if req.kind == "revise":
        canvas, plan = revision_canvas(session, tenant.id, req, info, settings, None)
    else:
        canvas, plan = compile_request(req, info, settings), None
    params = sampling_params(req, settings, info).to_json()
    job = repo.create_job(session, tenant_id=tenant.id, kind=req.kind, model=model,
                          request=req.model_dump(mode="json", exclude_none=True), params=params, canvas=canvas.to_json())
    if plan is not None:
        parent = repo.add_source_draft(session, job, req.text, [])
        job.params = {**job.params, "revise": {"parent_id": parent.id, **plan}}
    session.commit()
    return job.id


def test_a_job_runs_to_its_draft_and_a_second_delivery_is_skipped(session, worker_settings):
    job_id = queue_job(session, worker_settings, InfillJobCreate(kind="infill", text="The cat [[gap:6]] mat.", steps=4))
    assert run_job(job_id, worker_settings) == JobStatus.SUCCEEDED
    session.expire_all()
    job = session.get(Job, job_id)
    assert job.status == JobStatus.SUCCEEDED and job.error_code is None
    (draft,) = session.query(Draft).filter_by(job_id=job_id).all()
    assert draft.text.startswith("The cat ") and draft.text.endswith(" mat.")
    steps = session.query(Step).filter_by(job_id=job_id).count()
    assert steps == job.steps_run > 0  # every step is stored before the draft
    assert run_job(job_id, worker_settings) == "skipped"  # idempotent by job id: nothing written twice
    session.expire_all()
    assert session.query(Draft).filter_by(job_id=job_id).count() == 1
    assert session.query(Step).filter_by(job_id=job_id).count() == steps


def test_a_job_for_a_model_this_worker_does_not_serve_fails_visibly(session, worker_settings):
    job_id = queue_job(session, worker_settings, GenerateJobCreate(kind="generate", prompt="Hi", max_tokens=4),
                       model="elsewhere")
    assert run_job(job_id, worker_settings) == JobStatus.FAILED
    session.expire_all()
    job = session.get(Job, job_id)
    assert job.status == JobStatus.FAILED and job.error_code == "unknown_model" and "elsewhere" in job.error_message


def test_a_cancelled_job_never_runs(session, worker_settings):
    job_id = queue_job(session, worker_settings, InfillJobCreate(kind="infill", text="a [[gap:4]] b", steps=2))
    repo.request_cancel(session, job_id, session.get(Job, job_id).tenant_id)
    session.commit()
    assert run_job(job_id, worker_settings) == "skipped"
    session.expire_all()
    assert session.get(Job, job_id).status == JobStatus.CANCELLED
    assert session.query(Draft).filter_by(job_id=job_id).count() == 0


def test_a_revise_reads_its_parent_draft_through_the_lifecycle(session, worker_settings):
    source = "The capital of France is Paris."
    job_id = queue_job(session, worker_settings, ReviseJobCreate(kind="revise", text=source, steps=4,
                                                                 spans=[{"start": 4, "end": 11}]))
    assert run_job(job_id, worker_settings) == JobStatus.SUCCEEDED
    session.expire_all()
    job = session.get(Job, job_id)
    draft = session.query(Draft).filter_by(job_id=job_id).order_by(Draft.version.desc()).first()
    assert draft.parent_id == job.params["revise"]["parent_id"]
    assert draft.text.startswith("The ") and draft.text.endswith(" of France is Paris.")
