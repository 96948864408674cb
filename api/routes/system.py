"""Models, liveness and readiness."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from redraft.api.deps import CurrentTenant, SettingsDep
from redraft.api.schemas import AUTHED_ERRORS, ModelPublic, ModelsPublic
from redraft.families import registry
from redraft.queue import Keys, broker_client, live_workers, queue_depth
from redraft.settings import Settings, get_settings
from redraft.storage.db import database_engine

router = APIRouter(tags=["system"])


@router.get("/v1/models", response_model=ModelsPublic, responses=AUTHED_ERRORS)
def list_models(_: CurrentTenant, settings: SettingsDep) -> ModelsPublic:
    """The models the workers serve, with context length and mask token."""
    models = [ModelPublic(**info.public()) for info in registry(settings.models).values()]
    return ModelsPublic(data=models, count=len(models))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up. Answered on the event loop: never waits for the database or the thread pool."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the database or Redis does not answer, or no worker is alive"}})
async def readyz() -> JSONResponse:
    """Ready when the database and Redis answer and at least one worker is alive; also the queue depth.

    Each check runs in its own thread and is given up after ``readyz_timeout_s``, so a database or Redis
    that does not answer makes this a quick 503, never a hang; no dependency either, as FastAPI would run
    one in the request thread pool, which a hung database can exhaust.
    """
    settings = get_settings()
    timeout = settings.readyz_timeout_s
    database, broker = await asyncio.gather(_within(timeout, _check_database),
                                            _within(timeout, _check_broker, settings))
    checks = {"database": database if isinstance(database, str) else "ok"}
    body: dict[str, object] = {"checks": checks}
    if isinstance(broker, str):
        checks["redis"] = checks["workers"] = broker
    else:
        workers, depth = broker
        checks["redis"] = "ok"
        checks["workers"] = "ok" if workers else "error: no live worker (no heartbeat in Redis)"
        body.update(workers=workers, queue_depth=depth)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", **body}, status_code=200 if ok else 503)


async def _within(timeout_s: float, check: Callable[..., object], *args: object) -> object:
    """The check's result, or a string saying why it failed or that it did not answer in time."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(check, *args), timeout_s)
    except (TimeoutError, redis.TimeoutError):  # ours, or the Redis client's own (set to the same time)
        return f"error: no answer within {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - report, don't raise: this endpoint exists to say what is down
        return f"error: {type(exc).__name__}"


def _check_database() -> None:
    with database_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _check_broker(settings: Settings) -> tuple[int, int]:
    """(live workers, messages waiting in the queue)."""
    client = broker_client(settings, timeout_s=settings.readyz_timeout_s)
    try:
        return len(live_workers(client, Keys(settings.queue_name))), queue_depth(client, settings.queue_name)
    finally:
        client.close()
