"""/openai/v1: chat completions, completions (with `suffix`: fill in the middle), Mercury's FIM alias, models."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.openai.errors import OpenAIError
from api.openai.jobs import ChoicePlan, chat_plans, completion_plans, finish, usage_of
from api.openai.lifecycle import cancel_shielded, failure, load_outcomes, submit_all, wait_all
from api.openai.schemas import (
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
from api.openai.stream import ChunkWriter, stream_choices
from redraft.models import registry
from redraft.settings import Settings
from storage.models import Tenant

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 429, 503)}
router = APIRouter(responses=ERRORS)
CLIENT_CLOSED = 499  # nginx's status for "the client closed the request" (nobody reads it)


def _card(name: str, path: Path, context_length: int, family: str) -> ModelCard:
    config = Path(path) / "config.json"
    created = int(os.stat(config).st_mtime) if config.exists() else 0
    return ModelCard(id=name, created=created, context_length=context_length, family=family)


@router.get("/models", response_model=ModelList)
def list_models(_: CurrentTenant, settings: SettingsDep) -> ModelList:
    """The models served, in OpenAI's list shape."""
    return ModelList(data=[_card(n, i.path, i.context_length, i.family) for n, i in registry(settings.models).items()])


@router.get("/models/{model_id}", response_model=ModelCard)
def get_model(model_id: str, _: CurrentTenant, settings: SettingsDep) -> ModelCard:
    """One model; 404 `model_not_found` for a name the server does not serve."""
    info = registry(settings.models).get(model_id)
    if info is None:
        raise OpenAIError(404, f"the model {model_id!r} does not exist; available: "
                               f"{', '.join(sorted(settings.models))} (GET /openai/v1/models)", param="model",
                          code="model_not_found")
    return _card(model_id, info.path, info.context_length, info.family)


@router.post("/chat/completions", response_model=ChatCompletion)
async def chat_completions(body: ChatCompletionCreate, request: Request, session: SessionDep, tenant: CurrentTenant,
                           settings: SettingsDep) -> Response:
    """A chat completion: one `generate` job with `messages` per choice."""
    return await _respond(body, chat_plans(body), "messages", request, session, tenant, settings)


@router.post("/completions", response_model=Completion)
@router.post("/fim/completions", response_model=Completion, summary="Fim Completions (Mercury's alias)")
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
        if outcome.status != "succeeded":
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
