"""Request and response shapes, one per direction. Routes never return ORM rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from redraft.jobs import Cache, JobStatus, Remasking, SafetyParams, WholeNumbers, job_default


def exactly_one_of(*names: str) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra`` for a model that takes exactly one of the fields ``names``: the group is stated
    in the JSON schema as a oneOf of ``required``s, and those fields' null (accepted: the same as leaving the
    field out) is not advertised, so the OpenAPI document says which bodies are valid, not only the validator."""

    def extra(schema: dict[str, Any]) -> None:
        for name in names:
            prop = schema["properties"][name]
            kept = [s for s in prop.get("anyOf", ()) if s != {"type": "null"}]
            if len(kept) == 1:
                del prop["anyOf"]
                prop.update(kept[0])
            prop.pop("default", None)
        schema["oneOf"] = [{"required": [n], "not": {"anyOf": [{"required": [o]} for o in names if o != n]}}
                           for n in names]

    return extra


# Request bodies: unknown fields are an error (a typo must not be ignored) and types are taken as the schema
# says — no "5" for 5 or 1.0 for a count (an int is still a float).
REQUEST = ConfigDict(extra="forbid", strict=True)

MAX_VARIABLE_DEPTH = 32  # template variables nest at most this deep


class TextSegment(WholeNumbers):
    model_config = REQUEST
    text: str


class GapSpec(WholeNumbers):
    model_config = REQUEST
    max_tokens: int | None = Field(None, description="up to this many tokens (default: the server's gap size)")


class GapSegment(WholeNumbers):
    model_config = REQUEST
    gap: GapSpec


class SafetySpec(SafetyParams, WholeNumbers):
    """Safety targets, on any job kind. ``banned`` and ``pii`` hold during decoding (token masks);
    ``avoid`` steers away from topics by re-masking and re-writing spans a scorer rates high."""

    model_config = REQUEST  # the fields, their limits and defaults: redraft.jobs.SafetyParams


class SamplingParams(WholeNumbers):
    model_config = REQUEST
    model: str | None = Field(None, description="a name from GET /v1/models (default: the server's default)")
    steps: int | None = Field(None, description=(
        "denoising steps (forward passes); default from the model (block-diffusion families: the most steps per "
        "canvas, from its generation_config.json) or the server. At most one step per masked position is run: "
        "more steps than masks run as many as there are masks. The job's `params.steps` is the number asked for, "
        "`timings.steps_run` the number run"))
    seed: int = Field(job_default("seed"), ge=0, le=2**63 - 1, description="same seed, same output")
    temperature: float | None = Field(None, ge=0.0, le=10.0, description=(
        "one temperature for every step: 0 is greedy, above 0 samples; default: the model's (masked families "
        "0, DiffusionGemma its t_max -> t_min schedule)"))
    t_max: float | None = Field(None, gt=0.0, le=10.0, description=(
        "a linear temperature schedule from t_max at the first step to t_min at the last (give both)"))
    t_min: float | None = Field(None, gt=0.0, le=10.0, description="the schedule's last temperature")
    entropy_bound: float | None = Field(None, gt=0.0, le=1000.0, description=(
        "accept, each step, the lowest-entropy proposals whose summed entropy minus the largest stays within "
        "this (DiffusionGemma's rule; its default comes from the model)"))
    block_size: int | None = Field(None, ge=1, le=65536, description="semi-autoregressive blocks of this many tokens")
    remasking: Remasking = job_default("remasking")
    threshold: float | None = Field(None, gt=0.0, le=1.0, description=(
        "parallel decoding: each step commits every masked position whose confidence is at least this "
        "(at least one per step) instead of following `steps` (Fast-dLLM); omit for the steps schedule"))
    remask_budget: int = Field(job_default("remask_budget"), ge=0, le=4096, description=(
        "self-correction: up to this many committed tokens may be re-masked and written again during "
        "denoising (ReMDM-style; 0 is off)"))
    remask_below: float = Field(job_default("remask_below"), gt=0.0, le=1.0,
                                description="only tokens committed below this confidence")
    cache: Cache | None = Field(job_default("cache"), description=(
        "opt-in, approximate, for ModernBERT masked models: \"prefix\" computes the fixed context left of the "
        "current block once per block and reuses it for the block's other steps (Fast-dLLM's prefix cache; with "
        "`block_size`, per block; without, the text before the first gap, once). Faster on long contexts, at a "
        "measured cost in quality (docs/benchmarks.md); off by default. DiffusionGemma always caches its context, "
        "exactly: leave it out there"))
    safety: SafetySpec | None = None

    @model_validator(mode="after")
    def _one_temperature(self) -> SamplingParams:
        if (self.t_max is None) != (self.t_min is None):
            raise ValueError("give both `t_max` and `t_min` (a linear schedule), or neither")
        if self.t_max is not None and self.temperature is not None:
            raise ValueError("give `temperature` (one for every step) or `t_max`/`t_min` (a schedule), not both")
        if self.t_max is not None and self.t_max < self.t_min:
            raise ValueError(f"t_max ({self.t_max}) must be at least t_min ({self.t_min}): the schedule cools down")
        if self.threshold is not None and self.entropy_bound is not None:
            raise ValueError("give `threshold` or `entropy_bound` (two acceptance rules), not both")
        return self


class InfillJobCreate(SamplingParams):
    model_config = ConfigDict(json_schema_extra=exactly_one_of("text", "segments"))
    kind: Literal["infill"]
    text: str | None = Field(None, description="text with [[gap]] or [[gap:N]] markers")
    segments: list[TextSegment | GapSegment] | None = Field(None, description="structured alternative to text")

    @model_validator(mode="after")
    def _one_source(self) -> InfillJobCreate:
        if (self.text is None) == (self.segments is None):
            raise ValueError("give exactly one of `text` (with [[gap]] markers) or `segments`")
        return self


MAX_CHAT_MESSAGES = 500  # a conversation longer than this is a mistake, not a request
MAX_CHAT_CHARS = 200_000  # all messages' text together (models here take far fewer tokens)


class ChatTextPart(WholeNumbers):
    model_config = REQUEST
    type: Literal["text"]
    text: str


class ChatMessage(WholeNumbers):
    model_config = REQUEST
    role: Literal["system", "user", "assistant"]
    content: str | list[ChatTextPart] = Field(description=(
        'the text, or a list of {"type": "text", "text": ...} parts (joined by newlines); only text parts'))

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                if kind != "text":
                    raise ValueError(f'only text parts ({{"type": "text", "text": ...}}) are supported; got {kind!r}')
        return value

    def text_length(self) -> int:
        return len(self.content) if isinstance(self.content, str) else sum(len(p.text) for p in self.content)


class GenerateJobCreate(SamplingParams):
    model_config = ConfigDict(json_schema_extra=exactly_one_of("template", "template_name", "prompt", "messages"))
    kind: Literal["generate"]
    template: str | None = Field(None, description='Jinja2 source; {{ slot("name", max_tokens=8, regex=...) }} marks model text')
    template_name: str | None = Field(None, description="a template saved with POST /v1/templates")
    variables: dict[str, Any] = Field(default_factory=dict, description="values for the template's variables")
    prompt: str | None = Field(None, description="fixed context; the answer is one slot named `answer` after it")
    messages: list[ChatMessage] | None = Field(None, min_length=1, max_length=MAX_CHAT_MESSAGES, description=(
        "a conversation (system / user / assistant turns) rendered with the model's own chat template, ready "
        f"for the assistant's reply; the answer is one slot named `answer` after it. At most {MAX_CHAT_MESSAGES} "
        f"messages and {MAX_CHAT_CHARS:,} characters of text in all"))
    target: dict[str, Any] | None = Field(None, description='{"regex": ...} | {"json_schema": {...}} | {"choices": [...]}')
    max_tokens: int | None = Field(None, description="answer slot size (prompt and messages forms)")
    min_tokens: int = Field(0, ge=0, description=(
        "answer must hold at least this many tokens (prompt and messages forms)"))

    @field_validator("messages")
    @classmethod
    def _chat_size(cls, value: list[ChatMessage] | None) -> list[ChatMessage] | None:
        if value is not None and (total := sum(m.text_length() for m in value)) > MAX_CHAT_CHARS:
            raise ValueError(f"the messages hold {total:,} characters; at most {MAX_CHAT_CHARS:,} in all")
        return value

    @field_validator("variables")
    @classmethod
    def _shallow(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Template variables are data, at most MAX_VARIABLE_DEPTH deep (deeper cannot even be stored)."""
        stack = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > MAX_VARIABLE_DEPTH:
                raise ValueError(f"variables are nested more than {MAX_VARIABLE_DEPTH} deep; flatten them")
            children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
        return value

    @model_validator(mode="after")
    def _one_form(self) -> GenerateJobCreate:
        if sum(v is not None for v in (self.template, self.template_name, self.prompt, self.messages)) != 1:
            raise ValueError("give exactly one of `template` (with slot() calls), `template_name` (a saved template), "
                             "`prompt` or `messages` (a chat, rendered with the model's chat template; these two "
                             "with an optional `target`)")
        if self.prompt is None and self.messages is None and (self.target is not None or self.max_tokens is not None):
            raise ValueError("`target` and `max_tokens` belong to the prompt form or the messages form; in a template "
                             "pass them to slot()")
        return self


class SpanEdit(WholeNumbers):
    model_config = REQUEST
    start: int = Field(ge=0, description="first character to rewrite")
    end: int = Field(ge=0, description="one past the last character; start == end inserts")
    max_tokens: int | None = Field(None, ge=1, description="room for the rewrite (default: its current length)")


class AutoRevise(WholeNumbers):
    model_config = REQUEST
    confidence_below: float | None = Field(None, gt=0.0, le=1.0, description="rewrite tokens written below this")
    least_confident: int | None = Field(None, ge=1, description="rewrite the k tokens written least confidently")

    @model_validator(mode="after")
    def _one(self) -> AutoRevise:
        if (self.confidence_below is None) == (self.least_confident is None):
            raise ValueError('auto takes exactly one of {"confidence_below": x} or {"least_confident": k}')
        return self


class CharRange(WholeNumbers):
    model_config = REQUEST
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class ReviseTarget(WholeNumbers):
    model_config = REQUEST
    span: CharRange | None = Field(None, description="where the target applies (or name a `slot`)")
    slot: str | None = Field(None, description="a slot of the draft (from the job that wrote it)")
    regex: str | None = None
    choices: list[str] | None = None
    json_schema: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1, description="room for the rewrite")

    @model_validator(mode="after")
    def _where(self) -> ReviseTarget:
        if (self.span is None) == (self.slot is None):
            raise ValueError("a revise target needs exactly one of `span` or `slot`")
        if sum(v is not None for v in (self.regex, self.choices, self.json_schema)) != 1:
            raise ValueError("a revise target needs exactly one of `regex`, `choices`, `json_schema`")
        return self


class ReviseJobCreate(SamplingParams):
    model_config = ConfigDict(json_schema_extra=exactly_one_of("draft_id", "text"))
    kind: Literal["revise"]
    draft_id: str | None = Field(None, description="a draft Redraft wrote (its confidences allow `auto`)")
    text: str | None = Field(None, min_length=1, description="or any text to revise")
    spans: list[SpanEdit] = Field(default_factory=list, description="character ranges to rewrite")
    auto: AutoRevise | None = Field(None, description="rewrite what the model was least sure of")
    targets: list[ReviseTarget] = Field(default_factory=list, description="rewrite where these do not hold")

    @model_validator(mode="after")
    def _source(self) -> ReviseJobCreate:
        if (self.draft_id is None) == (self.text is None):
            raise ValueError("give exactly one of `draft_id` (a draft to revise) or `text`")
        if not (self.spans or self.auto or self.targets or self.safety):
            raise ValueError("say what to reconsider: `spans`, `auto`, `targets` and/or `safety`")
        return self


JobCreate = Annotated[InfillJobCreate | GenerateJobCreate | ReviseJobCreate, Field(discriminator="kind")]


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
    steps_run: int = Field(description=(
        "denoising steps run so far, over every canvas and round; can be fewer than `params.steps`, which is "
        "capped at one step per masked position"))
    attempts: int


class SafetyRound(BaseModel):
    round: int
    max_score: float = Field(description="the highest topic score of any written span in this round's draft")
    mean_score: float
    rewritten: list[dict[str, Any]] = Field(description="spans above the threshold: start, end, text, topic, score")


class JobResult(BaseModel):
    text: str
    gaps: list[str] | None = Field(None, description="infill: each gap's text, in order")
    slots: dict[str, str] | None = Field(None, description="generate: slot name -> text (prompt form: `answer`)")
    edits: list[dict[str, Any]] | None = Field(None, description=(
        "revise: each range whose text changed, with its old and new text; empty when the revision changed nothing "
        "(the new draft's text is its parent's)"))
    safety_rounds: list[SafetyRound] | None = Field(None, description="avoid: each scoring round")
    draft_id: str
    parent_draft_id: str | None = None


class JobPublic(BaseModel):
    id: str
    kind: str
    status: JobStatus
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
    """Replay a step by applying ``committed`` and then ``remasked`` (positions sent back to the mask)."""

    step: int
    committed: list[tuple[int, int, str, float]] = Field(description="[position, token_id, token_text, confidence]")
    remasked: list[tuple[int, int]] = Field(default_factory=list, description="[position, token_id it held]")


class StepsPublic(BaseModel):
    job_id: str
    canvas: list[int] = Field(description="the starting canvas: token ids with the mask id at free positions")
    canvas_text: list[str] = Field(description=(
        "each starting-canvas token decoded alone with the model's tokenizer (special tokens kept); "
        "empty when the job's model is no longer served"))
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
    layout: dict[str, Any] | None = Field(None, description=(
        "written: [[start, end, confidence], ...] for each token the model wrote (character offsets); "
        "slots: [{name, start, end}]; null for imported text"))
    created_at: datetime


class DraftsPublic(BaseModel):
    data: list[DraftPublic]
    count: int


class LineagePublic(BaseModel):
    draft_id: str
    ancestors: list[DraftPublic] = Field(description="from the root down to the parent")
    descendants: list[DraftPublic] = Field(description="every revision made from it, breadth-first")


class DiffOp(BaseModel):
    op: Literal["equal", "insert", "delete", "replace"]
    a: tuple[int, int] = Field(description="character range in `against`")
    b: tuple[int, int] = Field(description="character range in this draft")
    old: str = Field(description="text removed from `against` ('' for equal and insert)")
    new: str = Field(description="text added in this draft ('' for equal and delete)")


class DiffPublic(BaseModel):
    draft_id: str
    against: str
    changed: bool
    ops: list[DiffOp]


class ModelPublic(BaseModel):
    name: str
    family: str
    context_length: int
    mask_token: str
    vocab_size: int
    noise: Literal["mask", "uniform"] = Field(description=(
        "what an undecided position holds: the mask token (masked diffusion) or random tokens (DiffusionGemma)"))
    canvas_length: int | None = Field(None, description="block diffusion: tokens per canvas (null: the whole canvas)")
    defaults: dict[str, Any] = Field(default_factory=dict, description=(
        "the model's own sampling defaults (steps per canvas, entropy_bound, t_max, t_min, stability, "
        "confidence_stop), from its generation_config.json"))
    random_weights: bool
    description: str


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class ErrorBody(BaseModel):
    """The one shape of every error answer: what was wrong and how to fix it, and a stable code."""

    detail: str = Field(description="what was wrong, and how to fix it")
    code: str = Field(description="stable, machine-readable: invalid_request, not_found, rate_limited, ...")


_ERROR_MEANING = {
    400: "the body could not be decoded (not UTF-8 JSON)",
    401: "missing, malformed, unknown or revoked API key",
    404: "no such resource for this tenant",
    409: "the resource is in a state that does not allow this (e.g. cancelling a finished job)",
    413: "the body is larger than REDRAFT_MAX_BODY_BYTES",
    422: "the request is well-formed but asks for something Redraft cannot do; `detail` says what to change",
    429: "a per-tenant quota is spent; retry after the `Retry-After` header's seconds",
    503: "the database (or the queue) is not answering; retry after the `Retry-After` header's seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route really gives, all in the one ``ErrorBody`` shape."""
    return {code: {"model": ErrorBody, "description": _ERROR_MEANING[code]} for code in codes}


# What every authenticated route can answer besides its success: a bad key, a bad query, a database down.
AUTHED_ERRORS = error_responses(401, 422, 503)
BODY_ERRORS = error_responses(400, 413)  # routes that read a JSON body


class TemplateCreate(WholeNumbers):
    model_config = REQUEST
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
