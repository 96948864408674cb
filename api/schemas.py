"""Request and response shapes, one per direction. Routes never return ORM rows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TextSegment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class GapSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int | None = Field(None, description="up to this many tokens (default: the server's gap size)")


class GapSegment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gap: GapSpec


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="a name from GET /v1/models (default: the server's default)")
    steps: int | None = Field(None, description="denoising steps (forward passes); default from the server")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="same seed, same output")
    temperature: float = Field(0.0, ge=0.0, le=10.0, description="0 is greedy; above 0 samples (Gumbel-max)")
    block_size: int | None = Field(None, ge=1, description="semi-autoregressive blocks of this many tokens")
    remasking: Literal["low_confidence", "random"] = "low_confidence"


class InfillJobCreate(SamplingParams):
    kind: Literal["infill"]
    text: str | None = Field(None, description="text with [[gap]] or [[gap:N]] markers")
    segments: list[TextSegment | GapSegment] | None = Field(None, description="structured alternative to text")

    @model_validator(mode="after")
    def _one_source(self) -> InfillJobCreate:
        if (self.text is None) == (self.segments is None):
            raise ValueError("give exactly one of `text` (with [[gap]] markers) or `segments`")
        return self


class GenerateJobCreate(SamplingParams):
    kind: Literal["generate"]
    template: str | None = Field(None, description='Jinja2 source; {{ slot("name", max_tokens=8, regex=...) }} marks model text')
    template_name: str | None = Field(None, description="a template saved with POST /v1/templates")
    variables: dict[str, Any] = Field(default_factory=dict, description="values for the template's variables")
    prompt: str | None = Field(None, description="fixed context; the answer is one slot named `answer` after it")
    target: dict[str, Any] | None = Field(None, description='{"regex": ...} | {"json_schema": {...}} | {"choices": [...]}')
    max_tokens: int | None = Field(None, description="answer slot size (prompt form)")
    min_tokens: int = Field(0, ge=0, description="answer must hold at least this many tokens (prompt form)")

    @model_validator(mode="after")
    def _one_form(self) -> GenerateJobCreate:
        if sum(v is not None for v in (self.template, self.template_name, self.prompt)) != 1:
            raise ValueError("give exactly one of `template` (with slot() calls), `template_name` (a saved template) "
                             "or `prompt` (with an optional `target`)")
        if self.prompt is None and (self.target is not None or self.max_tokens is not None):
            raise ValueError("`target` and `max_tokens` belong to the prompt form; in a template pass them to slot()")
        return self


JobCreate = Annotated[InfillJobCreate | GenerateJobCreate, Field(discriminator="kind")]


class JobLinks(BaseModel):
    self: str
    steps: str
    drafts: str
    events: str
    cancel: str


class JobError(BaseModel):
    code: str
    message: str


class JobTimings(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps_run: int
    attempts: int


class JobResult(BaseModel):
    text: str
    gaps: list[str] | None = Field(None, description="infill: each gap's text, in order")
    slots: dict[str, str] | None = Field(None, description="generate: slot name -> text (prompt form: `answer`)")
    draft_id: str


class JobPublic(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    model: str
    params: dict[str, Any]
    result: JobResult | None
    error: JobError | None
    timings: JobTimings
    links: JobLinks


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class StepPublic(BaseModel):
    step: int
    committed: list[tuple[int, int, str, float]] = Field(description="[position, token_id, token_text, confidence]")
    remasked: list[Any] = []


class StepsPublic(BaseModel):
    job_id: str
    canvas: list[int] = Field(description="the starting canvas: token ids with the mask id at free positions")
    fixed: list[bool]
    mask_id: int
    data: list[StepPublic]
    count: int


class DraftPublic(BaseModel):
    id: str
    job_id: str
    parent_id: str | None
    version: int
    text: str
    token_ids: list[int]
    created_at: datetime


class DraftsPublic(BaseModel):
    data: list[DraftPublic]
    count: int


class ModelPublic(BaseModel):
    name: str
    family: str
    context_length: int
    mask_token: str
    vocab_size: int
    random_weights: bool
    description: str


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class ErrorBody(BaseModel):
    detail: str
    code: str


class TemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$", description="unique per tenant; saving again replaces it")
    source: str = Field(min_length=1, max_length=100_000, description="Jinja2 source with slot() calls")
    description: str | None = None


class TemplatePublic(BaseModel):
    name: str
    source: str
    description: str | None
    created_at: datetime
    updated_at: datetime


class TemplatesPublic(BaseModel):
    data: list[TemplatePublic]
    count: int
