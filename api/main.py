"""The FastAPI application and its one error handler per error family."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from redraft.api import metrics
from redraft.api.limits import BodyLimit, NoNulInUrl
from redraft.api.openai import mount_openai
from redraft.api.routes import drafts, jobs, system, templates
from redraft.api.web import EVERY_RESPONSE, docs_page, mount_web
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


_HTTP_CODES = {400: "bad_body", 404: "not_found", 405: "method_not_allowed"}


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _mount_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts and styles from the fastapi-offline package, served here at
    /docs-assets: FastAPI's own pages load them from a CDN, and are blank on a host without internet."""
    app.mount("/docs-assets", StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    def urls(request: Request) -> tuple[str, str, str]:  # the document, the assets, the favicon (behind a root_path)
        root = request.scope.get("root_path", "")
        return f"{root}{app.openapi_url}", f"{root}/docs-assets", f"{root}/docs-assets/favicon.png"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        spec, assets, icon = urls(request)
        return docs_page(get_swagger_ui_html(
            openapi_url=spec, title=f"{app.title} - Swagger UI", swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css", swagger_favicon_url=icon))

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        spec, assets, icon = urls(request)
        return docs_page(get_redoc_html(openapi_url=spec, title=f"{app.title} - ReDoc", with_google_fonts=False,
                                        redoc_js_url=f"{assets}/redoc.standalone.js", redoc_favicon_url=icon))


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(title="Redraft", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Infill, constrained generation and revision with masked diffusion language models.")
    app.state.settings = settings
    _mount_docs(app)

    @app.exception_handler(RedraftError)
    async def _redraft_error(_: Request, exc: RedraftError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status_code,
                            headers=exc.headers or None)

    @app.exception_handler(OperationalError)
    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _database_down(_: Request, exc: Exception) -> JSONResponse:
        # The database did not answer (down, or every pooled connection busy): a retryable 503, not a 500.
        log.warning("database unavailable: %s", type(exc).__name__)
        return JSONResponse({"detail": "the database is not answering right now; retry in a few seconds",
                             "code": "database_unavailable"}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not a bad request. Starlette's outermost ServerErrorMiddleware sends this answer (outside every
        # middleware added here, so the security headers are set on it here) and re-raises for the server's log.
        log.error("unhandled %s while answering a request", type(exc).__name__, exc_info=exc)
        return JSONResponse({"detail": "the server failed on this request (an internal error, logged); retry, and "
                             "report it if it persists", "code": "internal_error"}, status_code=500,
                            headers=EVERY_RESPONSE)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe(exc.errors()), "code": "invalid_request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (404 no route, 405 with its Allow header, 400 undecodable body), in the one
        # error shape and with their headers kept.
        detail, code = str(exc.detail), _HTTP_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 400 and "parsing the body" in detail:
            detail = "the body could not be decoded: send UTF-8 JSON with Content-Type: application/json"
        headers = exc.headers
        if exc.status_code == 405:  # Starlette's Allow names only the first route on the path; name them all
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return JSONResponse({"detail": detail, "code": code}, status_code=exc.status_code, headers=headers)

    app.include_router(jobs.router)
    app.include_router(drafts.router)
    app.include_router(templates.router)
    app.include_router(system.router)
    mount_openai(app)
    if settings.metrics_enabled:
        app.include_router(metrics.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(NoNulInUrl)
    mount_web(app)  # its security headers wrap the middleware above
    app.add_middleware(metrics.RequestObserver, settings=settings)  # outermost: sees every answer, and its time
    return app


app = create_app()
