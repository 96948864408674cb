"""OpenAI's request and response shapes, as far as Redraft speaks them.

Every field OpenAI defines for these endpoints is here, so none is silently dropped: a field is *supported*
(it does what OpenAI says), *mapped* (onto a Redraft field), *ignored* (accepted and documented as having no
effect) or *rejected* (a 400 that says why, unless it holds its neutral value). ``REJECTED`` and ``IGNORED``
are the tables; the README lists them. A field OpenAI does not define is a 400, as OpenAI answers it.
Redraft's own sampling fields are accepted beside OpenAI's (send them with the SDK's ``extra_body``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from copy import copy
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from redraft.api.openai.errors import unsupported
from redraft.api.schemas import MAX_CHAT_MESSAGES, REQUEST, ChatTextPart, GenerateJobCreate, SafetySpec, SamplingParams
from redraft.jobs import Cache, Remasking, WholeNumbers

# As /v1's request bodies (api.schemas.REQUEST): unknown fields and wrong JSON types are refused (no 0 for false,
# no "5" for 5; an int is still a float), so the OpenAPI document says exactly which bodies pass.
OPENAI_REQUEST = ConfigDict(**REQUEST, populate_by_name=True)
MAX_N = 128  # OpenAI's own bound on `n`; every choice is one Redraft job (and counts against the tenant's quotas)
MAX_STOP = 4  # OpenAI's bound on `stop` sequences
MAX_SEED = 2**53  # the largest integer every JSON parser holds exactly; choice i's job has seed + i (below 2**63)

# Field -> (values that mean "off", why anything else is refused).
REJECTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "logprobs": ((None, False, 0), "Redraft does not return log-probabilities (a diffusion model commits tokens in "
                                   "any order; per-token confidences are in GET /v1/drafts/{id} `layout`)"),
    "top_logprobs": ((None, 0), "Redraft does not return log-probabilities"),
    "top_p": ((None, 1), "Redraft has no nucleus sampling; use `temperature` (0 is greedy)"),
    "frequency_penalty": ((None, 0), "Redraft has no frequency penalty"),
    "presence_penalty": ((None, 0), "Redraft has no presence penalty"),
    "logit_bias": ((None, {}), "Redraft has no logit bias; constrain the answer with `response_format` or "
                               "`structured_outputs` instead"),
    "tools": ((None, []), "Redraft has no tool calling; constrain the answer with `response_format` instead"),
    "tool_choice": ((None, "none"), "Redraft has no tool calling"),
    "functions": ((None, []), "Redraft has no function calling"),
    "function_call": ((None, "none"), "Redraft has no function calling"),
    "audio": ((None,), "Redraft writes text only"),
    "modalities": ((None, ["text"]), "Redraft writes text only"),
    "prediction": ((None,), "Redraft has no predicted outputs; to keep text and rewrite around it, use a "
                            "`revise` job (POST /v1/jobs)"),
    "web_search_options": ((None,), "Redraft does not search the web"),
    "moderation": ((None,), "Redraft has no moderation models; use Redraft's `safety` field (banned phrases, PII, "
                            "avoided topics)"),
}
# A message's fields of tool calling and audio: (values that mean "none", refused otherwise).
MESSAGE_REJECTED: dict[str, tuple[Any, ...]] = {"tool_calls": (None, []), "function_call": (None,), "audio": (None,)}
# Accepted and without effect (OpenAI account, caching and reasoning options that a local server has no use for).
IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
           "prompt_cache_retention", "prompt_cache_options", "safety_identifier", "reasoning_effort", "verbosity")
# Redraft's own fields, passed to the job as they are (validated there, with the same limits as POST /v1/jobs).
EXTENSIONS = ("steps", "block_size", "remasking", "threshold", "entropy_bound", "t_max", "t_min", "remask_budget",
              "remask_below", "cache", "safety", "min_tokens")


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    """``value`` is one of ``neutral`` (None and booleans by identity, so ``True`` is not ``1``)."""
    return any(value is n if n is None or isinstance(n, bool) else (value == n and not isinstance(value, bool))
               for n in neutral)


def only(neutral: tuple[Any, ...], why: str) -> Any:
    """A field Redraft accepts only at one of its ``neutral`` values (a validator refuses the rest, saying ``why``):
    its JSON schema is the enum of those values, so a schema-valid body is never refused for it."""
    shown = " / ".join(json.dumps(v) for v in neutral)
    return Field(None, description=f"rejected unless {shown}: {why}",
                 json_schema_extra={"enum": list(neutral)})


def rejected(name: str) -> Any:
    """The field ``name`` of ``REJECTED``."""
    return only(*REJECTED[name])


def ignored() -> Any:
    return Field(None, description="ignored: accepted, and without effect")


def job_field(name: str, model: type[BaseModel] = SamplingParams) -> Any:
    """A Redraft job's own field (its bounds and description, defined once there), absent unless sent: the job's
    schema checks it again, and the OpenAPI document says the same."""
    field = copy(model.model_fields[name])
    field.default = None
    return field


def explain(param: str, message: str, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """``handler(value)``, its failure told as ``message``: what the field takes (for a union, pydantic's first
    error names a branch the sender never meant)."""
    try:
        return handler(value)
    except ValidationError:
        raise unsupported(param, message) from None


def exactly_one_given(*names: str) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra``: exactly one of ``names`` is given and not null, the others null or left out (the
    JSON-schema form of the check in ``jobs.structure_target``)."""

    def extra(schema: dict[str, Any]) -> None:
        schema["oneOf"] = [{"required": [n], "properties": {
            o: {"not": {"type": "null"}} if o == n else {"type": "null"} for o in names}} for n in names]

    return extra


NonEmpty = Annotated[str, Field(min_length=1)]


class StreamOptions(WholeNumbers):
    model_config = OPENAI_REQUEST
    include_usage: bool = Field(False, description="a last chunk with `usage` (and no choices) before [DONE]")
    include_obfuscation: bool | None = Field(None, description="ignored: Redraft adds no obfuscation padding")


class JsonSchemaFormat(WholeNumbers):
    model_config = OPENAI_REQUEST
    name: str = Field(description="the schema's name (OpenAI requires one; Redraft only records it)")
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="the JSON schema the answer must meet")
    strict: bool | None = Field(None, description="ignored: Redraft always holds the schema (true)")


class TextFormat(WholeNumbers):
    model_config = OPENAI_REQUEST
    type: Literal["text"]


class JsonObjectFormat(WholeNumbers):
    model_config = OPENAI_REQUEST
    type: Literal["json_object"]


class JsonSchemaResponseFormat(WholeNumbers):
    model_config = OPENAI_REQUEST
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs``: exactly one of ``json``, ``regex``, ``choice``, ``json_object``."""

    model_config = ConfigDict(**OPENAI_REQUEST, json_schema_extra=exactly_one_given("json", "regex", "choice",
                                                                                  "json_object"))
    json_: dict[str, Any] | str | None = Field(None, alias="json", description="a JSON schema (object or JSON text)")
    regex: str | None = None
    choice: list[str] | None = Field(None, min_length=1)
    json_object: Literal[True] | None = None
    grammar: Any = only((None,), "Redraft takes regex and JSON-schema targets, no CFG")
    structural_tag: Any = only((None,), "Redraft has no structural tags")


class OpenAICreate(WholeNumbers):
    """What chat completions and completions share."""

    model_config = OPENAI_REQUEST
    model: str = Field(min_length=1, description="a model id from GET /openai/v1/models")
    max_tokens: int | None = Field(None, ge=1, description=(
        "the answer's size in tokens (the answer slot; default REDRAFT_DEFAULT_GAP_TOKENS, at most "
        "REDRAFT_MAX_GAP_TOKENS)"))
    temperature: float | None = job_field("temperature")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description=(
        "same seed, same text (default 0); choice i uses seed + i"))
    n: int = Field(1, ge=1, le=MAX_N, description="choices: one Redraft job each")
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOP)] | None = Field(None, description=(
        f"up to {MAX_STOP} non-empty strings: the answer ends before the first one it contains (not with a "
        "structure target)"))
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = Field(None, description=(
        "the answer's target; not with `structured_outputs`, `stop` or (completions) `suffix`"))
    structured_outputs: StructuredOutputs | None = Field(None, description="vLLM's field: json, regex, choice")
    diffusing: bool = Field(False, description=(
        "Redraft extension (streaming, with `stream: true` only): one chunk per denoising step holding the whole "
        "current text, undecided positions marked; each chunk's content replaces the last"))
    # Redraft's own sampling fields (EXTENSIONS; the SDK's `extra_body`), as in POST /v1/jobs.
    steps: int | None = job_field("steps")
    block_size: int | None = job_field("block_size")
    remasking: Remasking | None = job_field("remasking")
    threshold: float | None = job_field("threshold")
    entropy_bound: float | None = job_field("entropy_bound")
    t_max: float | None = job_field("t_max")
    t_min: float | None = job_field("t_min")
    remask_budget: int | None = job_field("remask_budget")
    remask_below: float | None = job_field("remask_below")
    cache: Cache | None = job_field("cache")
    safety: SafetySpec | None = job_field("safety")
    min_tokens: int | None = job_field("min_tokens", GenerateJobCreate)
    # Ignored (IGNORED) and rejected unless neutral (REJECTED).
    user: Any = ignored()
    metadata: Any = ignored()
    store: Any = ignored()
    service_tier: Any = ignored()
    logprobs: Any = rejected("logprobs")
    top_p: Any = rejected("top_p")
    frequency_penalty: Any = rejected("frequency_penalty")
    presence_penalty: Any = rejected("presence_penalty")
    logit_bias: Any = rejected("logit_bias")

    @field_validator("stop", mode="wrap")
    @classmethod
    def _stops(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return explain("stop", f"`stop` takes a string or up to {MAX_STOP} non-empty strings; got {value!r}",
                       value, handler)

    @field_validator("response_format", mode="wrap")
    @classmethod
    def _format(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return explain("response_format", '`response_format` is {"type": "text"}, {"type": "json_object"} or '
                                          '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}',
                       value, handler)

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> OpenAICreate:
        for name, (neutral, why) in REJECTED.items():
            if name in type(self).model_fields and not _neutral(getattr(self, name), neutral):
                raise unsupported(name, f"`{name}` is not supported: {why}; leave it out")
        if self.diffusing and not self.stream:
            raise unsupported("diffusing", "`diffusing` streams the denoising steps: send it with `stream: true`")
        return self

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def extensions(self) -> dict[str, Any]:
        return self.model_dump(include=set(EXTENSIONS), exclude_none=True)


class ChatMessageIn(WholeNumbers):
    """A message as OpenAI clients send it; the fields an assistant message carries back are accepted when null."""

    model_config = OPENAI_REQUEST
    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="developer is taken as system; tool and function messages need tool calling (not supported)")
    content: str | list[ChatTextPart] = Field(description='a string, or text parts ({"type": "text", "text": ...})')
    name: str | None = Field(None, description="ignored (chat templates take no participant names)")
    refusal: Any = ignored()
    tool_calls: Any = only(MESSAGE_REJECTED["tool_calls"], "Redraft has text turns only")
    function_call: Any = only(MESSAGE_REJECTED["function_call"], "Redraft has text turns only")
    audio: Any = only(MESSAGE_REJECTED["audio"], "Redraft has text turns only")
    annotations: Any = ignored()

    @field_validator("role", mode="before")
    @classmethod
    def _text_role(cls, value: Any) -> Any:
        if value in ("tool", "function"):
            raise unsupported("messages", f"`{value}` messages need tool calling, which Redraft does not support; "
                                          "send system, developer, user and assistant messages")
        return value

    @field_validator("content", mode="wrap")
    @classmethod
    def _text_content(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return explain("messages", 'a message\'s `content` is a string or a list of text parts ({"type": "text", '
                                   '"text": ...}); image, audio and file parts are not supported', value, handler)

    @model_validator(mode="after")
    def _text_turn(self) -> ChatMessageIn:
        for name, neutral in MESSAGE_REJECTED.items():
            if not _neutral(getattr(self, name), neutral):
                raise unsupported("messages", f"a message's `{name}` is not supported: Redraft has text turns only")
        return self


class ChatCompletionCreate(OpenAICreate):
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_CHAT_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, description=(
        "the same as max_tokens (send one of them, or both equal)"))
    top_logprobs: Any = rejected("top_logprobs")
    tools: Any = rejected("tools")
    tool_choice: Any = rejected("tool_choice")
    functions: Any = rejected("functions")
    function_call: Any = rejected("function_call")
    audio: Any = rejected("audio")
    modalities: Any = rejected("modalities")
    prediction: Any = rejected("prediction")
    web_search_options: Any = rejected("web_search_options")
    moderation: Any = rejected("moderation")
    parallel_tool_calls: Any = ignored()
    prompt_cache_key: Any = ignored()
    prompt_cache_retention: Any = ignored()
    prompt_cache_options: Any = ignored()
    safety_identifier: Any = ignored()
    reasoning_effort: Any = ignored()
    verbosity: Any = ignored()

    @model_validator(mode="after")
    def _one_size(self) -> ChatCompletionCreate:
        if None not in (self.max_tokens, self.max_completion_tokens) and self.max_tokens != self.max_completion_tokens:
            raise unsupported("max_tokens", f"`max_tokens` ({self.max_tokens}) and `max_completion_tokens` "
                                            f"({self.max_completion_tokens}) differ; send one of them")
        return self

    @property
    def answer_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionCreate(OpenAICreate):
    prompt: str | Annotated[list[str], Field(min_length=1)] = Field(description=(
        "a string, or a list of strings (one set of `n` choices each); token-id prompts are not supported"))
    suffix: str | None = Field(None, description="fill in the middle: the answer goes between prompt and suffix")
    echo: bool = Field(False, description="prepend the prompt to each choice's text")
    best_of: int | None = Field(None, ge=1, description=(
        "accepted only as 1 or equal to n: Redraft does not rank choices"))

    @field_validator("prompt", mode="wrap")
    @classmethod
    def _text_prompts(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return explain("prompt", "`prompt` must be a string or a non-empty list of strings; token-id prompts are "
                                 "not supported (send the text)", value, handler)

    @model_validator(mode="after")
    def _prompts(self) -> CompletionCreate:
        if self.best_of not in (None, 1, self.n):
            raise unsupported("best_of", f"`best_of` ({self.best_of}) is not supported: Redraft does not rank "
                                         "choices; leave it out, or use `n`")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


# ----------------------------------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int = Field(description="the canvas's fixed tokens (the rendered prompt, and the suffix)")
    completion_tokens: int = Field(description="tokens written in the answers (unused positions not counted)")
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when the model directory's config.json was written (Unix seconds)")
    owned_by: str = "redraft"
    context_length: int = Field(description="Redraft extension: the most tokens one canvas may hold")
    family: str = Field(description="Redraft extension: the model family (GET /v1/models has the details)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str = Field(description="what was wrong, and how to fix it")
    type: str = Field(description="invalid_request_error, rate_limit_error, server_error, timeout")
    param: str | None = Field(None, description="the request field at fault, where one is")
    code: str | None = Field(None, description="stable: invalid_api_key, model_not_found, context_length_exceeded, ...")


class ErrorResponse(BaseModel):
    error: ErrorDetail
