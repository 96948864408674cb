"""What a job is, on both sides of the queue: its status (``JobStatus``) and its parameters (``JobParams``).

Torch-free and database-free, so the API, the workers, the client and the CLI all import it. The API builds a
``JobParams`` once, at submission (``redraft.api.submit.sampling_params``), and stores ``to_json()`` in ``jobs.params``;
the worker reads it back with ``from_json`` and derives the sampler's config from it
(``redraft.workers.drafting.sampler_config``). Every job parameter's default is written here, once: the request shapes
(``redraft.api.schemas``) and the sampler (``redraft.workers.sampler.SamplerConfig``) take theirs from ``job_default``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class WholeNumbers(BaseModel):
    """Base of the request models: their int fields take a JSON number without a fraction part (3.0 as 3), as
    JSON Schema's "integer" does; with strict types "3" and 3.5 are still refused."""

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        ints = {f.alias or name for name, f in cls.model_fields.items() if f.annotation in (int, int | None)}
        return {k: int(v) if k in ints and isinstance(v, float) and v.is_integer() else v for k, v in data.items()}


class JobStatus(StrEnum):  # a str: JobStatus.QUEUED == "queued", and it is stored and sent as "queued"
    """A job's lifecycle: queued, then running, then succeeded, failed or cancelled (a queued job may be
    cancelled before it runs; a running one whose worker died goes back to queued)."""

    QUEUED = "queued"  # committed and waiting for a worker (or for the reaper to send it again)
    RUNNING = "running"  # claimed by a worker; its heartbeat is touched at every step
    SUCCEEDED = "succeeded"  # wrote its draft
    FAILED = "failed"  # stopped with an error (code and message on the job)
    CANCELLED = "cancelled"  # a client asked; a running job stops at its next step


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)  # may still change
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)  # never changes again


class JobEvent(StrEnum):
    """The events a job publishes (Redis pub/sub) and ``GET /v1/jobs/{id}/events`` streams (SSE event names)."""

    STEP = "step"  # one denoising step's commits and re-masks (a StepPublic)
    DONE = "done"  # the job ended without an error: succeeded or cancelled (a JobPublic)
    FAILED = "failed"  # the job ended with an error (a JobPublic with its error)


LAST_EVENTS = (JobEvent.DONE, JobEvent.FAILED)  # one of these ends every stream

PiiKind = Literal["email", "phone", "card"]
Remasking = Literal["low_confidence", "random"]
Cache = Literal["prefix"]  # what a job's ``cache`` may ask for (workers/prefix_cache.py)


class SafetyParams(BaseModel):
    """A job's safety targets, as stored; the request's ``redraft.api.schemas.SafetySpec`` is this shape, refusing
    unknown fields. The workers apply them (``redraft.workers.processors.safety_guard``, ``Drafting.avoid_rounds``)."""

    banned: list[str] = Field(default_factory=list, description="phrases never written (case-insensitive)")
    pii: bool | list[PiiKind] = Field(
        False, description="true (all kinds) or a list: never write email addresses, phone or card numbers")
    avoid: list[Annotated[str, Field(min_length=1, max_length=500)]] = Field(
        default_factory=list, max_length=32, description="topics in words to steer away from (non-empty)")
    avoid_threshold: float = Field(0.25, gt=0.0, le=1.0, description=(
        "a span scoring above this is rewritten (the default suits the packaged MiniLM scorer: sentences on a "
        "topic score about 0.2-0.45 against it, unrelated ones below 0.2)"))
    avoid_rounds: int = Field(3, ge=1, le=10, description="at most this many rewrite rounds")


class RevisePlan(BaseModel):
    """A revise job's plan, made at submission (``redraft.api.submit.revision_canvas``) for the worker."""

    parent_id: str  # the new draft's parent: the draft given, or the text given, imported as a draft
    kept: list[list[int]]  # [[start, end], ...]: the source's character ranges the canvas keeps byte for byte
    regions: list[dict[str, Any]]  # each rewritten range: the fields of ``redraft.constraints.revise.Region``


class JobParams(BaseModel):
    """A job's resolved parameters: the request's, else the model's defaults, else these (``redraft.api.submit``).

    Stored as JSON in ``jobs.params`` and shown as the public job's ``params``. A stored row that lacks a key
    (written before the key existed) takes the default below; a key this version no longer knows is ignored.
    A field set to None leaves the sampler its own default (``redraft.workers.sampler.SamplerConfig``).
    """

    model_config = ConfigDict(extra="ignore")

    steps: int  # forward passes; from the request, the model or REDRAFT_DEFAULT_STEPS
    seed: int = 0  # same seed, same output
    temperature: float | None = 0.0  # one temperature for every step (0 greedy); None: the t_max -> t_min schedule
    t_max: float | None = None  # a linear temperature schedule from t_max at the first step ...
    t_min: float | None = None  # ... to t_min at the last
    block_size: int | None = None  # semi-autoregressive blocks of this many positions (None: one block)
    remasking: Remasking = "low_confidence"  # which proposals to commit first: most confident, or random
    threshold: float | None = None  # parallel decoding: commit every proposal at least this confident
    entropy_bound: float | None = None  # DiffusionGemma's acceptance rule (from the model unless given)
    stability: int | None = None  # uniform noise: the model's window-stop rule (None: the sampler's)
    confidence_stop: float | None = None  # ... and its entropy bound (None: the sampler's)
    remask_budget: int = 0  # self-correction: at most this many committed tokens re-masked (0 is off)
    remask_below: float = 0.5  # ... of those committed below this confidence
    cache: Cache | None = None  # Fast-dLLM's block-wise prefix cache (ModernBERT; approximate, opt-in)
    safety: SafetyParams | None = None  # None: no safety targets
    revise: RevisePlan | None = None  # revise jobs only

    def to_json(self) -> dict[str, Any]:
        """The stored (and public) form: every sampling field, with ``safety`` and ``revise`` only when set."""
        return self.model_dump(mode="json", exclude={k for k in ("safety", "revise") if getattr(self, k) is None})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobParams:
        """A stored ``jobs.params`` back as a JobParams (missing keys take their defaults)."""
        return cls.model_validate(data)


def job_default(name: str) -> Any:
    """The default of the ``JobParams`` field ``name``: written once, there; the request shapes and the sampler
    take it from here rather than repeat it."""
    return JobParams.model_fields[name].get_default(call_default_factory=True)
