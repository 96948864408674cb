"""Models, liveness and readiness."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.schemas import AUTHED_ERRORS, ModelPublic, ModelsPublic
from redraft.models import registry

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


@router.get("/readyz")
def readyz(session: SessionDep, settings: SettingsDep) -> JSONResponse:
    """The database and Redis both answer."""
    checks: dict[str, str] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # report, don't raise: this endpoint exists to say what is down
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        redis.Redis.from_url(settings.redis_url or "redis://unset", socket_timeout=2).ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)
