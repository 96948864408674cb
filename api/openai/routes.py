"""/openai/v1: chat completions, completions (with `suffix`: fill in the middle), Mercury's FIM alias, models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse

from redraft.api.deps import CurrentTenant, SessionDep, SettingsDep
from redraft.api.openai.errors import OpenAIError
from redraft.api.openai.jobs import ChoicePlan, chat_plans, completion_plans, finish, usage_of
from redraft.api.openai.lifecycle import cancel_shielded, failure, load_outcomes, submit_all, wait_all
from redraft.api.openai.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionCreate,
    Completion,
    CompletionChoice,
    CompletionCreate,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from redraft.api.openai.stream import ChunkWriter, stream_choices
from redraft.api.schemas import error_responses
from redraft.families import registry
from redraft.jobs import JobStatus
from redraft.settings import Settings
from redraft.storage.tables import Tenant

_MEANING = {
    400: "the request is malformed or asks for something Redraft cannot do (`param` names the field, `message` says "
         "what to change); `context_length_exceeded` for a canvas over the model's context",
    401: "missing, malformed, unknown or revoked API key (`invalid_api_key`)",
    404: "`model_not_found`: the model is not served (GET /openai/v1/models lists those that are)",
    429: "a per-tenant quota is spent (`rate_limit_error`, the quota's `code`); retry after `Retry-After` seconds",
    500: "a job failed while running (`server_error`, the job's error `code`; `x-redraft-job-id` names it)",
    503: "the database is not answering (`database_unavailable`); retry after `Retry-After` seconds",
    504: "the jobs did not finish within REDRAFT_OPENAI_WAIT_TIMEOUT_S (`timeout`); they go on: GET /v1/jobs/{id}",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries for the errors a route really answers, in OpenAI's shape."""
    return {status: {"model": ErrorResponse, "description": _MEANING[status]} for status in statuses}


def completion_responses(model: type[BaseModel], chunk: str) -> dict[int | str, dict[str, Any]]:
    """A completion route's answers: the JSON body, or with `stream: true` an SSE stream of ``chunk``s; its errors
    (413 is Redraft's own, from the body limit in front of every route)."""
    event = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string", "description": (
        f"a {chunk} chunk as JSON (with `diffusing: true` one per denoising step); an ErrorResponse as JSON if the "
        "jobs fail or time out; last, `[DONE]`")}}}
    return {200: {"model": model, "description": f"a {model.__name__}; with `stream: true` an SSE stream of chunks",
                  "content": {"text/event-stream": {"schema": event}}},
            **errors(400, 401, 404, 429, 500, 503, 504), **error_responses(413)}


router = APIRouter(responses=errors(401, 503))
CLIENT_CLOSED = 499  # nginx's status for "the client closed the request" (nobody reads it)


def _card(name: str, path: Path, context_length: int, family: str) -> ModelCard:
    config = Path(path) / "config.json"
    created = int(os.stat(config).st_mtime) if config.exists() else 0
    return ModelCard(id=name, created=created, context_length=context_length, family=family)


@router.get("/models", response_model=ModelList)
def list_models(_: CurrentTenant, settings: SettingsDep) -> ModelList:
    """The models served, in OpenAI's list shape."""
    return ModelList(data=[_card(n, i.path, i.context_length, i.family) for n, i in registry(settings.models).items()])


@router.get("/models/{model_id}", response_model=ModelCard, responses=errors(404))
def get_model(model_id: str, _: CurrentTenant, settings: SettingsDep) -> ModelCard:
    """One model; 404 `model_not_found` for a name the server does not serve."""
    info = registry(settings.models).get(model_id)
    if info is None:
        raise OpenAIError(404, f"the model {model_id!r} does not exist; available: "
                               f"{', '.join(sorted(settings.models))} (GET /openai/v1/models)", param="model",
                          code="model_not_found")
    return _card(model_id, info.path, info.context_length, info.family)


@router.post("/chat/completions", response_model=ChatCompletion,
             responses=completion_responses(ChatCompletion, "chat.completion.chunk"))
async def chat_completions(body: ChatCompletionCreate, request: Request, session: SessionDep, tenant: CurrentTenant,
                           settings: SettingsDep) -> Response:
    """A chat completion: one `generate` job with `messages` per choice."""
    return await _respond(body, chat_plans(body), "messages", request, session, tenant, settings)


@router.post("/completions", response_model=Completion, responses=completion_responses(Completion, "text_completion"))
@router.post("/fim/completions", response_model=Completion, summary="Fim Completions (Mercury's alias)",
             responses=completion_responses(Completion, "text_completion"))
async def completions(body: CompletionCreate, request: Request, session: SessionDep, tenant: CurrentTenant,
                      settings: SettingsDep) -> Response:
    """A completion: a `generate` job with the prompt, or with `suffix` an `infill` job, per choice."""
    return await _respond(body, completion_plans(body), "prompt", request, session, tenant, settings)


async def _respond(body: ChatCompletionCreate | CompletionCreate, plans: list[ChoicePlan], text_field: str,
                   request: Request, session: SessionDep, tenant: Tenant, settings: Settings) -> Response:
    chat, tenant_id = isinstance(body, ChatCompletionCreate), tenant.id  # read now: submitting expires the row
    submitted = await run_in_threadpool(submit_all, session, tenant_id, plans, settings, text_field)
    ids = [s.job_id for s in submitted]
    headers = {"x-redraft-job-id": ", ".join(ids)}
    response_id = f"{'chatcmpl' if chat else 'cmpl'}-{ids[0]}"
    if body.stream:
        writer = ChunkWriter(chat, response_id, submitted[0].model, submitted[0].created)
        return EventSourceResponse(stream_choices(writer, body, plans, submitted, request, settings, tenant_id),
                                   headers=headers)
    if not await wait_all(submitted, request, settings):
        await cancel_shielded(ids, tenant_id)
        return Response(status_code=CLIENT_CLOSED)
    outcomes = await run_in_threadpool(load_outcomes, ids, tenant_id, settings)
    for outcome in outcomes:
        if outcome.status != JobStatus.SUCCEEDED:
            raise failure(outcome)
    finished = [finish(plan, outcome) for plan, outcome in zip(plans, outcomes)]
    usage = usage_of(plans, outcomes)
    head = {"id": response_id, "created": outcomes[0].created, "model": outcomes[0].model, "usage": usage}
    if chat:
        result = ChatCompletion(**head, choices=[
            ChatChoice(index=p.index, message=AssistantMessage(content=text), finish_reason=reason)
            for p, (text, reason) in zip(plans, finished)])
    else:
        result = Completion(**head, choices=[CompletionChoice(index=p.index, text=text, finish_reason=reason)
                                             for p, (text, reason) in zip(plans, finished)])
    return JSONResponse(result.model_dump(mode="json"), headers=headers)
