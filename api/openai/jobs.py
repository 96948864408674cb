"""OpenAI requests as ordinary Redraft jobs, and finished jobs as OpenAI choices.

A chat completion is a ``generate`` job with ``messages`` (the model's chat template renders them, as for
POST /v1/jobs); a completion is a ``generate`` job with a ``prompt``, or with a ``suffix`` an ``infill`` job with
one gap between prompt and suffix. ``n`` choices are ``n`` jobs with seeds ``seed``, ``seed + 1``, ... Structure
targets come from ``response_format`` or vLLM's ``structured_outputs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from redraft.api.openai.errors import OpenAIError, unsupported
from redraft.api.openai.schemas import (
    ChatCompletionCreate,
    CompletionCreate,
    JsonObjectFormat,
    JsonSchemaResponseFormat,
    OpenAICreate,
    Usage,
)
from redraft.api.schemas import GenerateJobCreate, InfillJobCreate
from redraft.api.submit import JobRequest

# `{"type": "json_object"}`: any JSON object whose values are scalars, arrays of scalars or objects of scalars. A
# schema for JSON of any depth compiles ~20x slower (15 s at an 8k vocabulary); for a fixed shape send a schema.
_SCALAR = {"type": ["string", "number", "boolean", "null"]}
JSON_OBJECT_SCHEMA = {"type": "object", "additionalProperties": {"anyOf": [
    _SCALAR, {"type": "array", "items": _SCALAR}, {"type": "object", "additionalProperties": _SCALAR}]}}


@dataclass(frozen=True)
class ChoicePlan:
    """One choice: the job request, and what turns the job's answer into the choice's text."""

    index: int
    prompt_index: int  # which prompt (completions take several); usage counts each prompt once
    request: JobRequest
    prefix: str  # `echo`: the prompt, before the answer
    stops: tuple[str, ...]
    target_from: str | None  # the field a structure target came from (it holds: the answer ends where it does)


def structure_target(body: OpenAICreate) -> tuple[dict[str, Any] | None, str | None]:
    """Redraft's ``target`` for the request's structured output, and the field it came from."""
    fmt, so = body.response_format, body.structured_outputs
    if fmt is not None and fmt.type != "text" and so is not None:
        raise unsupported("structured_outputs", "give `response_format` or `structured_outputs`, not both")
    if isinstance(fmt, JsonSchemaResponseFormat):
        return {"json_schema": fmt.json_schema.schema_}, "response_format"
    if isinstance(fmt, JsonObjectFormat):
        return {"json_schema": JSON_OBJECT_SCHEMA}, "response_format"
    if so is None:
        return None, None
    given = {k: v for k, v in (("json", so.json_), ("regex", so.regex), ("choice", so.choice),
                               ("json_object", so.json_object or None), ("grammar", so.grammar),
                               ("structural_tag", so.structural_tag)) if v is not None}
    if len(given) != 1:
        raise unsupported("structured_outputs", "structured_outputs takes exactly one of `json`, `regex`, `choice` "
                                                f"or `json_object`; got {sorted(given) or 'none'}")
    (kind, value), = given.items()
    if kind in ("grammar", "structural_tag"):
        raise unsupported("structured_outputs", f"structured_outputs `{kind}` is not supported: Redraft takes "
                                                "`json`, `regex`, `choice` and `json_object`")
    if kind == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise unsupported("structured_outputs", f"structured_outputs `json` is not valid JSON: {exc}") from exc
        return {"json_schema": value}, "structured_outputs"
    if kind == "json_object":
        return {"json_schema": JSON_OBJECT_SCHEMA}, "structured_outputs"
    return ({"regex": value} if kind == "regex" else {"choices": value}), "structured_outputs"


def _validated(model: type[GenerateJobCreate] | type[InfillJobCreate], data: dict[str, Any]) -> JobRequest:
    """The Redraft request, or a 400 naming the field Redraft refused."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg")).removeprefix("Value error, ")  # a validator's own message, without pydantic's tag
        raise OpenAIError(400, f"{loc}: {msg}" if loc else msg, param=loc or None, code="invalid_value") from exc


def _sampling(body: OpenAICreate, target_from: str | None) -> dict[str, Any]:
    if body.stops and target_from is not None:
        raise unsupported("stop", f"`stop` cannot be combined with `{target_from}`: cutting the answer at a stop "
                                  "string would break the structure it must have")
    fields = {"model": body.model, "temperature": body.temperature, **body.extensions()}
    return {k: v for k, v in fields.items() if v is not None}


def chat_plans(body: ChatCompletionCreate) -> list[ChoicePlan]:
    target, target_from = structure_target(body)
    messages = [{"role": "system" if m.role == "developer" else m.role, **m.model_dump(include={"content"})}
                for m in body.messages]
    data = {"kind": "generate", "messages": messages, **_sampling(body, target_from)}
    if target is not None:
        data["target"] = target
    if body.answer_tokens is not None:
        data["max_tokens"] = body.answer_tokens
    seed = body.seed or 0
    return [ChoicePlan(i, 0, _validated(GenerateJobCreate, {**data, "seed": seed + i}), "", tuple(body.stops),
                       target_from) for i in range(body.n)]


def completion_plans(body: CompletionCreate) -> list[ChoicePlan]:
    target, target_from = structure_target(body)
    base = _sampling(body, target_from)
    if body.suffix is not None and target is not None:
        raise unsupported(target_from, f"`{target_from}` cannot be combined with `suffix` (fill in the middle); use "
                                       "POST /v1/jobs with a template whose slot has the target")
    if body.suffix is not None and "min_tokens" in base:
        raise unsupported("min_tokens", "`min_tokens` applies without `suffix` only")
    plans, seed = [], body.seed or 0
    for p, prompt in enumerate(body.prompts):
        for j in range(body.n):
            if body.suffix is not None:
                gap: dict[str, Any] = {} if body.max_tokens is None else {"max_tokens": body.max_tokens}
                data = {"kind": "infill", "segments": [{"text": prompt}, {"gap": gap}, {"text": body.suffix}], **base}
                model: Any = InfillJobCreate
            else:
                data = {"kind": "generate", "prompt": prompt, **base}
                if target is not None:
                    data["target"] = target
                if body.max_tokens is not None:
                    data["max_tokens"] = body.max_tokens
                model = GenerateJobCreate
            plans.append(ChoicePlan(p * body.n + j, p, _validated(model, {**data, "seed": seed + j}),
                                    prompt if body.echo else "", tuple(body.stops), target_from))
    return plans


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first place any stop string starts, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def safe_prefix(text: str, stops: tuple[str, ...]) -> str:
    """The part of ``text`` (a prefix of an answer that may go on) that is sure to be in the answer once it is cut
    at its stop strings: short of the first stop in it, and of any tail that could still become the start of one
    (a stop that starts there, earlier than the first one found, would cut the answer sooner)."""
    cut, _ = cut_at_stop(text, stops)
    hold = max((k for s in stops for k in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:k])), default=0)
    return text[:min(len(cut), len(text) - hold)]


@dataclass
class Outcome:
    """A finished job as a choice needs it."""

    job_id: str
    status: str
    model: str
    created: int
    answer: str | None  # the slot's text (succeeded)
    error: tuple[str, str] | None  # (code, message) of a failed job
    prompt_tokens: int
    completion_tokens: int
    slot_size: int
    ended_by_eos: bool


def finish(plan: ChoicePlan, outcome: Outcome) -> tuple[str, str]:
    """The choice's text and ``finish_reason``."""
    text, stopped = cut_at_stop(outcome.answer or "", plan.stops)
    full = outcome.completion_tokens >= outcome.slot_size and not outcome.ended_by_eos
    reason = "stop" if stopped or plan.target_from is not None or not full else "length"
    return plan.prefix + text, reason


def usage_of(plans: list[ChoicePlan], outcomes: list[Outcome]) -> Usage:
    """Each prompt's tokens once (its `n` choices share it), and every choice's answer tokens."""
    prompts: dict[int, int] = {}
    for plan, outcome in zip(plans, outcomes):
        prompts.setdefault(plan.prompt_index, outcome.prompt_tokens)
    prompt, completion = sum(prompts.values()), sum(o.completion_tokens for o in outcomes)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
