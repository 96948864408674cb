"""Job submission: validate, tokenise, compile the canvas, insert the row, commit, then enqueue."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from api.schemas import GapSegment, GenerateJobCreate, InfillJobCreate
from constraints.canvas import Canvas
from constraints.generate import compile_generate, prompt_slot
from constraints.infill import Gap, compile_infill, gap, parse_text
from constraints.templates import render_template
from redraft.errors import InvalidRequest, NotFound
from redraft.models import ModelInfo, load_model_info, load_tokenizer
from redraft.queue import enqueue
from redraft.settings import Settings
from storage import repo
from storage.models import Job

log = logging.getLogger(__name__)


def resolve_model(name: str | None, settings: Settings) -> ModelInfo:
    name = name or settings.default_model
    if name not in settings.models:
        raise InvalidRequest(
            f"unknown model {name!r}; available: {', '.join(sorted(settings.models))} (see GET /v1/models)",
            code="unknown_model",
        )
    return load_model_info(name, settings.models[name])


JobRequest = InfillJobCreate | GenerateJobCreate


def sampling_params(req: JobRequest, settings: Settings) -> dict:
    steps = settings.default_steps if req.steps is None else req.steps
    if not 1 <= steps <= settings.max_steps:
        raise InvalidRequest(f"steps must be between 1 and {settings.max_steps}; got {steps}")
    return {
        "steps": steps,
        "seed": req.seed,
        "temperature": req.temperature,
        "block_size": req.block_size,
        "remasking": req.remasking,
    }


def compile_request(req: JobRequest, info: ModelInfo, settings: Settings, saved_source: str | None = None) -> Canvas:
    tokenizer = load_tokenizer(info.path)
    if isinstance(req, GenerateJobCreate):
        source = req.template if req.template is not None else saved_source
        if source is not None:
            pieces = render_template(source, req.variables, settings.default_gap_tokens, settings.max_gap_tokens)
        else:
            max_tokens = req.max_tokens or settings.default_gap_tokens
            pieces = [req.prompt, prompt_slot(req.target, max_tokens, req.min_tokens, settings.max_gap_tokens)]
        return compile_generate([p for p in pieces if p], tokenizer, info)
    if req.text is not None:
        segments = parse_text(req.text, settings.default_gap_tokens, settings.max_gap_tokens)
    else:
        segments: list[str | Gap] = []
        for seg in req.segments or []:
            if isinstance(seg, GapSegment):
                segments.append(gap(seg.gap.max_tokens or settings.default_gap_tokens, settings.max_gap_tokens))
            else:
                segments.append(seg.text)
        if not any(isinstance(s, Gap) for s in segments):
            raise InvalidRequest('the segments have no gap: add at least one {"gap": {"max_tokens": N}}')
    return compile_infill(segments, tokenizer, info)


def submit_job(session: Session, tenant_id: str, req: JobRequest, settings: Settings) -> Job:
    """Everything that can be wrong with a request is found here, before any row is written."""
    info = resolve_model(req.model, settings)
    params = sampling_params(req, settings)
    saved = None
    if isinstance(req, GenerateJobCreate) and req.template_name is not None:
        try:
            saved = repo.get_template(session, tenant_id, req.template_name).source
        except NotFound as exc:
            raise InvalidRequest(exc.message, code="unknown_template") from exc
    canvas = compile_request(req, info, settings, saved)
    job = repo.create_job(
        session,
        tenant_id=tenant_id,
        kind=req.kind,
        model=info.name,
        request=req.model_dump(mode="json", exclude_none=True),
        params=params,
        canvas=canvas.to_json(),
    )
    session.commit()
    try:
        enqueue(job.id)
    except Exception:  # the row is committed: the reaper re-enqueues queued jobs, so none is lost
        log.exception("could not enqueue job %s; the reaper will retry", job.id)
    return job
