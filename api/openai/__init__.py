"""The OpenAI-compatible API: a FastAPI sub-application mounted at /openai/v1, with OpenAI's error shape.

``OpenAI(base_url="http://host:8000/openai/v1", api_key=KEY)`` works against it: the same API keys and tenancy as
/v1, and every request becomes ordinary Redraft jobs (queued, batched, stored with steps and drafts, visible on
the web page). Redraft's own /v1 routes keep their shapes; this sub-application has its own error handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from redraft.api.openai.errors import OpenAIError, from_redraft
from redraft.api.openai.routes import router
from redraft.errors import RedraftError
from redraft.settings import get_settings

log = logging.getLogger(__name__)
PREFIX = "/openai/v1"


def _validation_error(exc: RequestValidationError) -> OpenAIError:
    """The first problem, as OpenAI words it: an unknown field is an "unrecognized request argument"."""
    err = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if err.get("type") == "json_invalid":
        return OpenAIError(400, "We could not parse the JSON body of your request: send a JSON object with "
                                "Content-Type: application/json", code="invalid_json")
    if err.get("type") == "extra_forbidden":
        return OpenAIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                           code="unknown_parameter")
    if err.get("type") == "missing":
        return OpenAIError(400, f"you must provide `{param}`", param=param, code="missing_required_parameter")
    return OpenAIError(400, f"{param}: {err.get('msg')}" if param else str(err.get("msg")), param=param,
                       code="invalid_value")


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The app's OpenAPI document, without FastAPI's 422 on every route (this app answers a body that does not
    validate with OpenAI's 400, documented on each route), and with the served models as the `model` examples."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)  # builds and caches app.openapi_schema
            for operations in schema["paths"].values():
                for operation in operations.values():
                    operation["responses"].pop("422", None)
            components = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
            for request in ("ChatCompletionCreate", "CompletionCreate"):
                components[request]["properties"]["model"]["examples"] = sorted(get_settings().models)
        return app.openapi_schema

    return openapi


def create_openai_app() -> FastAPI:
    app = FastAPI(title="Redraft: OpenAI-compatible API", version="0.1.0", description=(
        "Chat completions, completions with `suffix` (fill in the middle), structured outputs and streaming over "
        "Redraft's jobs. Errors are in OpenAI's shape."))

    @app.exception_handler(OpenAIError)
    async def _openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RedraftError)
    async def _redraft_error(_: Request, exc: RedraftError) -> JSONResponse:
        return from_redraft(exc).response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(exc).response()

    @app.exception_handler(OperationalError)
    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return OpenAIError(503, "the database is not answering right now; retry in a few seconds", type="server_error",
                           code="database_unavailable", headers={"Retry-After": "5"}).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = ("no such route; this API serves POST /chat/completions, POST /completions, "
                       "POST /fim/completions and GET /models under /openai/v1")
        elif exc.status_code == 405 and exc.headers and exc.headers.get("Allow"):
            message = f"method not allowed; this route takes {exc.headers['Allow']}"
        return OpenAIError(exc.status_code, message, code=code, headers=exc.headers).response()

    app.include_router(router)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


def mount_openai(app: FastAPI) -> None:
    """Mount the OpenAI-compatible API at /openai/v1 (it inherits the app's middleware: body limit, metrics)."""
    app.mount(PREFIX, create_openai_app(), name="openai")
