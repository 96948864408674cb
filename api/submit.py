"""Job submission: validate, tokenise, compile the canvas, insert the row, commit, then enqueue."""

from __future__ import annotations

import logging
from dataclasses import asdict

from sqlalchemy.orm import Session

from redraft.api.metrics import observe_compile
from redraft.api.schemas import GapSegment, GenerateJobCreate, InfillJobCreate, ReviseJobCreate
from redraft.constraints.canvas import Canvas
from redraft.constraints.chat import render_chat
from redraft.constraints.generate import compile_generate, prompt_slot
from redraft.constraints.infill import Gap, compile_infill, gap, parse_text
from redraft.constraints.revise import (
    auto_regions,
    compile_revision,
    span_regions,
    target_regions,
    violation_regions,
)
from redraft.constraints.safety import SafetyTargets, find_violations, parse_safety
from redraft.constraints.templates import render_template
from redraft.errors import InvalidRequest, NotFound
from redraft.families import ModelInfo, load_model_info, load_tokenizer
from redraft.jobs import JobParams, RevisePlan, job_default
from redraft.queue import enqueue
from redraft.settings import Settings
from redraft.storage import repo
from redraft.storage.tables import Job

log = logging.getLogger(__name__)


def resolve_model(name: str | None, settings: Settings) -> ModelInfo:
    name = name or settings.default_model
    if name not in settings.models:
        raise InvalidRequest(
            f"unknown model {name!r}; available: {', '.join(sorted(settings.models))} (see GET /v1/models)",
            code="unknown_model",
        )
    return load_model_info(name, settings.models[name])


JobRequest = InfillJobCreate | GenerateJobCreate | ReviseJobCreate


def sampling_params(req: JobRequest, settings: Settings, info: ModelInfo) -> JobParams:
    """The job's resolved parameters: the request's, else the model's defaults, else JobParams' own."""
    defaults = info.defaults
    steps = req.steps if req.steps is not None else defaults.get("steps", settings.default_steps)
    if not 1 <= steps <= settings.max_steps:
        raise InvalidRequest(f"steps must be between 1 and {settings.max_steps}; got {steps}")
    if info.noise == "uniform":
        unused = [name for name in ("block_size", "remasking", "remask_budget")
                  if getattr(req, name) != job_default(name)]
        if unused:
            raise InvalidRequest(
                f"{', '.join(unused)} do not apply to model {info.name!r} ({info.family}: block diffusion from "
                f"uniform noise, canvases of {info.canvas_length} tokens, acceptance re-decided every step); "
                "leave them out, or tune `entropy_bound`, `threshold`, `t_max`/`t_min` or `steps`")
    if req.cache is not None and (info.noise == "uniform" or info.model_type != "modernbert"):
        raise InvalidRequest(
            f"cache {req.cache!r} does not apply to model {info.name!r}: "
            + ("it keeps its context in its encoder's KV cache, exactly, always; leave `cache` out"
               if info.noise == "uniform" else
               f"the prefix cache reads ModernBERT's layers, and this is {info.model_type!r}; leave `cache` out"),
            code="cache_unsupported")
    temperature: dict[str, float | None] = {}  # left out: JobParams' default (greedy)
    if req.t_max is not None:  # the request's schedule
        temperature = {"temperature": None, "t_max": req.t_max, "t_min": req.t_min}
    elif req.temperature is not None:
        temperature = {"temperature": req.temperature}
    elif "t_max" in defaults:  # the model's own schedule
        temperature = {"temperature": None, "t_max": defaults["t_max"], "t_min": defaults["t_min"]}
    return JobParams(
        steps=steps,
        seed=req.seed,
        **temperature,
        block_size=req.block_size,
        remasking=req.remasking,
        threshold=req.threshold,
        entropy_bound=req.entropy_bound if req.entropy_bound is not None else (
            defaults.get("entropy_bound") if req.threshold is None else None),
        stability=defaults.get("stability"),
        confidence_stop=defaults.get("confidence_stop"),
        remask_budget=req.remask_budget,
        remask_below=req.remask_below,
        cache=req.cache,
        safety=req.safety,
    )


def safety_targets(req: JobRequest) -> SafetyTargets | None:
    """The hard safety targets (banned, pii), validated; ``avoid`` is the workers' (it needs a model)."""
    if req.safety is None:
        return None
    return parse_safety({"banned": req.safety.banned, "pii": req.safety.pii})


def revision_canvas(session: Session, tenant_id: str, req: ReviseJobCreate, info: ModelInfo,
                    settings: Settings, targets: SafetyTargets | None) -> tuple[Canvas, dict]:
    """The revise job's canvas and its plan (source, kept ranges, regions) for the worker."""
    tokenizer = load_tokenizer(info.path)
    layout = None
    if req.draft_id is not None:
        try:
            draft = repo.get_draft(session, req.draft_id, tenant_id)
        except NotFound as exc:
            raise InvalidRequest(f"{exc.message}: revise one of your drafts (GET /v1/jobs/{{id}}/drafts)",
                                 code="unknown_draft") from exc
        text, layout = draft.text, draft.layout
    else:
        text = req.text
    limit, default = settings.max_gap_tokens, settings.default_gap_tokens
    regions = span_regions(text, [s.model_dump() for s in req.spans], tokenizer, default, limit)
    if req.auto is not None:
        regions += auto_regions(layout, req.auto.model_dump())
    regions += target_regions(text, layout, [t.model_dump(exclude_none=True) for t in req.targets], tokenizer, info,
                              default, limit)
    if targets is not None:
        regions += violation_regions(text, find_violations(text, targets), tokenizer, limit)
    avoid = req.safety is not None and bool(req.safety.avoid)
    if not regions and not avoid:
        raise InvalidRequest(
            "nothing to revise: the spans are empty, no token is below the auto threshold, and the text already "
            "meets every target; loosen `auto` or name `spans`", code="nothing_to_revise")
    # With `avoid`, the worker first scores the text and may add regions (then it recompiles the canvas).
    canvas, kept, regions = compile_revision(text, regions, tokenizer, info, allow_empty=avoid)
    return canvas, {"kept": kept, "regions": [asdict(r) for r in regions]}


def compile_request(req: InfillJobCreate | GenerateJobCreate, info: ModelInfo, settings: Settings,
                    saved_source: str | None = None) -> Canvas:
    tokenizer = load_tokenizer(info.path)
    if isinstance(req, GenerateJobCreate):
        source = req.template if req.template is not None else saved_source
        if source is not None:
            pieces = render_template(source, req.variables, settings.default_gap_tokens, settings.max_gap_tokens)
        else:  # the prompt form, or the messages form: the rendered conversation is its prompt
            context = req.prompt if req.messages is None else render_chat(
                info, [m.model_dump() for m in req.messages])
            max_tokens = req.max_tokens or settings.default_gap_tokens
            pieces = [context, prompt_slot(req.target, max_tokens, req.min_tokens, settings.max_gap_tokens)]
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


def check_text(value: object, where: str = "request") -> None:
    """Every string of a request must be storable text: no lone surrogate (JSON's "\\ud800" decodes to one, and
    neither UTF-8 nor PostgreSQL can hold it) and no NUL character (PostgreSQL refuses it). Iterative, so a
    deeply nested value cannot exhaust the stack."""
    stack: list[tuple[object, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidRequest(f"{path} contains a NUL character (\\u0000): remove it; text cannot hold it",
                                     code="bad_text")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidRequest(f"{path} contains a lone surrogate ({item[exc.start]!a}): send valid Unicode "
                                     "text (pair the surrogates, or send the character itself)", code="bad_text") from exc
        elif isinstance(item, dict):
            stack.extend((v, f"{path}.{k}") for k, v in item.items())
            stack.extend((k, f"{path} key") for k in item if isinstance(k, str))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))


def submit_job(session: Session, tenant_id: str, req: JobRequest, settings: Settings) -> Job:
    """Everything that can be wrong with a request is found here, before any row is written."""
    check_text(req.model_dump(exclude_none=True))
    info = resolve_model(req.model, settings)
    params = sampling_params(req, settings, info)
    targets = safety_targets(req)  # validated here for every kind; a revise job also rewrites what breaks them
    saved, plan = None, None
    if isinstance(req, GenerateJobCreate) and req.template_name is not None:
        try:
            saved = repo.get_template(session, tenant_id, req.template_name).source
        except NotFound as exc:
            raise InvalidRequest(exc.message, code="unknown_template") from exc
    with observe_compile():
        if isinstance(req, ReviseJobCreate):
            canvas, plan = revision_canvas(session, tenant_id, req, info, settings, targets)
        else:
            canvas = compile_request(req, info, settings, saved)
    job = repo.create_job(
        session,
        tenant_id=tenant_id,
        kind=req.kind,
        model=info.name,
        request=req.model_dump(mode="json", exclude_none=True),
        params=params.to_json(),
        canvas=canvas.to_json(),
    )
    if plan is not None:  # revise: the new draft's parent is the draft given, or the text given, imported
        parent_id = req.draft_id or repo.add_source_draft(session, job, req.text, []).id
        params.revise = RevisePlan(parent_id=parent_id, **plan)
        job.params = params.to_json()
    session.commit()
    try:
        enqueue(job.id)
    except Exception as exc:  # noqa: BLE001 - the row is committed and unsent: a worker's reaper sends it, none is lost
        log.warning("could not enqueue job %s (%s: %s); the reaper sends it within seconds of the broker's return",
                    job.id, type(exc).__name__, exc)
    return job
