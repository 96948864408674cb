"""OpenAI's request and response shapes, as far as Redraft speaks them.

Every field OpenAI defines for these endpoints is here, so none is silently dropped: a field is *supported*
(it does what OpenAI says), *mapped* (onto a Redraft field), *ignored* (accepted and documented as having no
effect) or *rejected* (a 400 that says why, unless it holds its neutral value). ``REJECTED`` and ``IGNORED``
are the tables; the README lists them. A field OpenAI does not define is a 400, as OpenAI answers it.
Redraft's own sampling fields are accepted beside OpenAI's (send them with the SDK's ``extra_body``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.openai.errors import unsupported

OPENAI_REQUEST = ConfigDict(extra="forbid", populate_by_name=True)
MAX_N = 128  # OpenAI's own bound on `n`; every choice is one Redraft job (and counts against the tenant's quotas)
MAX_STOP = 4  # OpenAI's bound on `stop` sequences

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
# Accepted and without effect (OpenAI account, caching and reasoning options that a local server has no use for).
IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
           "prompt_cache_retention", "prompt_cache_options", "safety_identifier", "reasoning_effort", "verbosity")
# Redraft's own fields, passed to the job as they are (validated there, with the same limits as POST /v1/jobs).
EXTENSIONS = ("steps", "block_size", "remasking", "threshold", "entropy_bound", "t_max", "t_min", "remask_budget",
              "remask_below", "safety", "min_tokens")


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    """``value`` is one of ``neutral`` (None and booleans by identity, so ``True`` is not ``1``)."""
    return any(value is n if n is None or isinstance(n, bool) else (value == n and not isinstance(value, bool))
               for n in neutral)


class StreamOptions(BaseModel):
    model_config = OPENAI_REQUEST
    include_usage: bool = Field(False, description="a last chunk with `usage` (and no choices) before [DONE]")
    include_obfuscation: bool | None = Field(None, description="ignored: Redraft adds no obfuscation padding")


class JsonSchemaFormat(BaseModel):
    model_config = OPENAI_REQUEST
    name: str = Field(description="the schema's name (OpenAI requires one; Redraft only records it)")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="the JSON schema the answer must meet")
    strict: bool | None = Field(None, description="ignored: Redraft always holds the schema (true)")


class ResponseFormat(BaseModel):
    model_config = OPENAI_REQUEST
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(BaseModel):
    """vLLM's ``structured_outputs``: exactly one of ``json``, ``regex``, ``choice``, ``json_object``."""

    model_config = OPENAI_REQUEST
    json_: dict[str, Any] | str | None = Field(None, alias="json", description="a JSON schema (object or JSON text)")
    regex: str | None = None
    choice: list[str] | None = None
    json_object: bool | None = None
    grammar: str | None = Field(None, description="rejected: Redraft takes regex and JSON-schema targets, no CFG")
    structural_tag: Any = Field(None, description="rejected: Redraft has no structural tags")


class OpenAICreate(BaseModel):
    """What chat completions and completions share."""

    model_config = OPENAI_REQUEST
    model: str = Field(description="a model id from GET /openai/v1/models")
    max_tokens: int | None = Field(None, ge=1, description=(
        "the answer's size in tokens (the answer slot; default REDRAFT_DEFAULT_GAP_TOKENS, at most "
        "REDRAFT_MAX_GAP_TOKENS)"))
    temperature: float | None = Field(None, description="0 is greedy; default: the model's (masked models 0)")
    seed: int | None = Field(None, description="same seed, same text (default 0); choice i uses seed + i")
    n: int = Field(1, ge=1, le=MAX_N, description="choices: one Redraft job each")
    stop: str | list[str] | None = Field(None, description=(
        f"up to {MAX_STOP} strings: the answer ends before the first one it contains"))
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = Field(None, description="vLLM's field: json, regex, choice")
    diffusing: bool = Field(False, description=(
        "Redraft extension (streaming): one chunk per denoising step holding the whole current text, undecided "
        "positions marked; each chunk's content replaces the last"))
    # Redraft's own sampling fields (EXTENSIONS), checked by the job's schema.
    steps: Any = None
    block_size: Any = None
    remasking: Any = None
    threshold: Any = None
    entropy_bound: Any = None
    t_max: Any = None
    t_min: Any = None
    remask_budget: Any = None
    remask_below: Any = None
    safety: Any = None
    min_tokens: Any = None
    # Ignored (IGNORED) and rejected unless neutral (REJECTED).
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    logprobs: Any = None
    top_p: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> OpenAICreate:
        for name, (neutral, why) in REJECTED.items():
            if name in type(self).model_fields and not _neutral(getattr(self, name), neutral):
                raise unsupported(name, f"`{name}` is not supported: {why}; leave it out")
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise unsupported("stop", f"`stop` takes up to {MAX_STOP} non-empty strings; got {stops!r}")
        if self.diffusing and not self.stream:
            raise unsupported("diffusing", "`diffusing` streams the denoising steps: send it with `stream: true`")
        return self

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def extensions(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in EXTENSIONS if getattr(self, name) is not None}


class ChatMessageIn(BaseModel):
    """A message as OpenAI clients send it; the fields an assistant message carries back are accepted when null."""

    model_config = OPENAI_REQUEST
    role: str = Field(description="system, developer (as system), user or assistant")
    content: str | list[Any] | None = None
    name: str | None = Field(None, description="ignored (chat templates take no participant names)")
    refusal: Any = None
    tool_calls: Any = None
    function_call: Any = None
    audio: Any = None
    annotations: Any = None

    @model_validator(mode="after")
    def _text_turn(self) -> ChatMessageIn:
        if self.role in ("tool", "function"):
            raise unsupported("messages", f"`{self.role}` messages need tool calling, which Redraft does not "
                                          "support; send system, user and assistant messages")
        for name in ("tool_calls", "function_call", "audio"):
            if getattr(self, name):
                raise unsupported("messages", f"a message's `{name}` is not supported: Redraft has text turns only")
        if self.content is None:
            raise unsupported("messages", "every message needs `content` (a string or text parts)")
        return self


class ChatCompletionCreate(OpenAICreate):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="the same as max_tokens")
    top_logprobs: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    prediction: Any = None
    web_search_options: Any = None
    moderation: Any = None
    parallel_tool_calls: Any = None
    prompt_cache_key: Any = None
    prompt_cache_retention: Any = None
    prompt_cache_options: Any = None
    safety_identifier: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None

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
    prompt: str | list[Any] = Field(description="a string, or a list of strings (one set of `n` choices each)")
    suffix: str | None = Field(None, description="fill in the middle: the answer goes between prompt and suffix")
    echo: bool = Field(False, description="prepend the prompt to each choice's text")
    best_of: int | None = Field(None, description="accepted only as 1 or equal to n: Redraft does not rank choices")

    @model_validator(mode="after")
    def _prompts(self) -> CompletionCreate:
        if isinstance(self.prompt, list) and (not self.prompt or not all(isinstance(p, str) for p in self.prompt)):
            raise unsupported("prompt", "`prompt` must be a string or a non-empty list of strings; token-id "
                                        "prompts are not supported (send the text)")
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
