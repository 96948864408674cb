"""Runs one job by id, the job's lifecycle: the real logic behind the Celery task (which only passes the id).

Load the model, claim the job, read what its drafting needs (a revise's parent draft), run the drafting
(``workers/drafting.py``, which never touches the database), write the draft, publish the outcome, or fail the
job visibly. Idempotent by job id: ``redraft.storage.repo.claim_job`` decides whether this delivery runs (a finished job,
a cancelled one, or one another live worker holds is skipped), and a re-run after a dead attempt
starts from a clean slate, so steps and drafts are never duplicated.
"""

from __future__ import annotations

import logging

from redraft.constraints.canvas import Canvas
from redraft.errors import Conflict, JobCancelled, RedraftError
from redraft.families import load_tokenizer
from redraft.jobs import JobEvent, JobParams, JobStatus
from redraft.logs import bind_job_id
from redraft.settings import Settings, get_settings
from redraft.storage import repo
from redraft.storage.db import session_scope
from redraft.storage.tables import Draft, Job
from redraft.workers.adapters import get_adapter
from redraft.workers.drafting import Drafting, Source
from redraft.workers.engine import for_adapter
from redraft.workers.steps import Publisher, StepSink

log = logging.getLogger(__name__)


@bind_job_id  # every record logged while this job runs carries its job_id (redraft/logs.py)
def run_job(job_id: str, settings: Settings | None = None) -> str:
    """Run a job to a terminal state; returns the status it ended in (or "skipped")."""
    settings = settings or get_settings()
    publisher = Publisher(settings)
    with session_scope() as s:
        row = s.get(Job, job_id)
        model = row.model if row else None
    # Load the model (lazily, once per process) before claiming, so a slow first load does not
    # look like a dead worker to the reaper.
    adapter, load_error = None, None
    try:  # any failure here fails the job below (after the claim), never loses it
        if model not in settings.models:
            raise RedraftError(f"this worker does not serve model {model!r}", code="unknown_model")
        adapter = get_adapter(model, settings.models[model], settings.device, settings.torch_compile)
    except Exception as exc:
        load_error = exc
    with session_scope() as s:
        job = repo.claim_job(s, job_id, settings.max_attempts, settings.heartbeat_timeout_s)
        if job is None:
            return "skipped"
        attempt = job.attempts
        kind, params, canvas_json = job.kind, JobParams.from_json(job.params), job.canvas
    try:
        if load_error is not None:
            raise load_error
        sink = StepSink(job_id, attempt, load_tokenizer(adapter.info.path), publisher, settings)
        draft = Drafting(adapter, Canvas.from_json(canvas_json), params, sink, settings,
                         engine=for_adapter(adapter, settings.worker_batch_size),
                         on_canvas=lambda canvas: store_canvas(job_id, canvas))
        text, extra, layout, parent_id = draft.run(kind, parent_source(params))
        sink.flush()  # every step is in the database before the draft is
        with session_scope() as s:
            row = repo.finish_job(s, job_id, text=text, token_ids=draft.tokens, result_extra=extra,
                                  steps_run=sink.offset, parent_id=parent_id, layout=layout)
            draft_id = row.id
        publisher.publish(job_id, JobEvent.DONE, {"status": JobStatus.SUCCEEDED, "draft_id": draft_id, "text": text})
        return JobStatus.SUCCEEDED
    except JobCancelled as exc:
        if exc.code == "superseded":
            return "skipped"
        with session_scope() as s:
            repo.mark_cancelled(s, job_id)
        publisher.publish(job_id, JobEvent.DONE, {"status": JobStatus.CANCELLED})
        return JobStatus.CANCELLED
    except Conflict:  # finished meanwhile (e.g. cancelled after the last step): nothing left to write
        return "skipped"
    except RedraftError as exc:
        _fail(job_id, exc.code, exc.message, publisher)
        return JobStatus.FAILED
    except Exception as exc:  # a bug must fail the job visibly, never lose it
        log.exception("job %s failed", job_id)
        _fail(job_id, "internal_error", f"{type(exc).__name__}: {exc}", publisher)
        return JobStatus.FAILED


def parent_source(params: JobParams) -> Source | None:
    """A revise job's parent draft (text and layout), read for its drafting; None for other kinds."""
    if params.revise is None:
        return None
    with session_scope() as s:
        parent = s.get_one(Draft, params.revise.parent_id)
        return Source(parent.text, parent.layout)


def store_canvas(job_id: str, canvas: Canvas) -> None:
    """A canvas the drafting rebuilt (revise with ``avoid``), stored before any step."""
    with session_scope() as s:
        repo.set_canvas(s, job_id, canvas.to_json())


def _fail(job_id: str, code: str, message: str, publisher: Publisher) -> None:
    with session_scope() as s:
        repo.fail_job(s, job_id, code, message)
    error = {"code": code, "message": message}
    publisher.publish(job_id, JobEvent.FAILED, {"status": JobStatus.FAILED, "error": error})
