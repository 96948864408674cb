"""The FastAPI application and its one error handler per error family."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.limits import BodyLimit
from api.routes import drafts, jobs, system, templates
from api.web import mount_web
from redraft.errors import RedraftError
from redraft.settings import get_settings

log = logging.getLogger(__name__)


def _describe(errors: list[dict]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        if err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')}); "
                         "send a JSON object with Content-Type: application/json")
        else:
            parts.append(f"{loc}: {err.get('msg')}")
    return "; ".join(parts)


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(title="Redraft", version="0.1.0",
                  description="Infill, constrained generation and revision with masked diffusion language models.")
    app.state.settings = settings

    @app.exception_handler(RedraftError)
    async def _redraft_error(_: Request, exc: RedraftError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        # The database did not answer (down, or every pooled connection busy): a retryable 503, not a 500.
        log.warning("database unavailable: %s", type(exc).__name__)
        return JSONResponse({"detail": "the database is not answering right now; retry in a few seconds",
                             "code": "database_unavailable"}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe(exc.errors()), "code": "invalid_request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail), "code": "http_error"}, status_code=exc.status_code)

    app.include_router(jobs.router)
    app.include_router(drafts.router)
    app.include_router(templates.router)
    app.include_router(system.router)
    mount_web(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app


app = create_app()
