"""The "watch it denoise" pages: static HTML shells (Jinja2) and plain JavaScript under /static.

The pages need no server-side auth and read nothing from the database: the script asks for the API
key once, keeps it in ``sessionStorage`` and calls the JSON API with it, like any other client.

Security headers: every response of the app gets ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``
and a ``Referrer-Policy`` (``SecurityHeaders``); the pages also get a Content-Security-Policy that allows only this
origin's script and styles (no inline script, no ``style`` attributes: the script sets styles through the CSSOM)
and the API as the one thing to connect to. ``/docs`` (Swagger UI) and ``/redoc`` load their assets from this
origin too (``docs_page``: a CSP of their own, see ``DOCS_CONTENT_SECURITY_POLICY``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=HERE / "templates")

router = APIRouter(include_in_schema=False)

# The page loads /static/redraft.js and /static/redraft.css, calls /v1 with fetch(), and has a data: favicon.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "connect-src 'self'",
    "form-action 'self'", "base-uri 'none'", "frame-ancestors 'none'",
])
# /docs and /redoc (api/main.py) load Swagger UI and ReDoc from /docs-assets on this origin. Swagger UI starts from
# one inline script, allowed by its hash (added per page); ReDoc injects <style> elements (styled-components) and
# runs its search in a blob: worker; both draw data: images and fetch /openapi.json.
DOCS_CONTENT_SECURITY_POLICY = [
    "default-src 'none'", "script-src 'self'", "style-src 'self' 'unsafe-inline'", "img-src 'self' data:",
    "font-src 'self' data:", "connect-src 'self'", "worker-src blob:", "form-action 'self'", "base-uri 'none'",
    "frame-ancestors 'none'",
]
EVERY_RESPONSE = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                  "Referrer-Policy": "no-referrer"}


class SecurityHeaders:
    """Pure ASGI middleware: ``EVERY_RESPONSE`` on every HTTP response (a route's own value wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in EVERY_RESPONSE.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def docs_page(page: HTMLResponse) -> HTMLResponse:
    """FastAPI's Swagger UI or ReDoc page with ``DOCS_CONTENT_SECURITY_POLICY``, its inline scripts allowed by hash."""
    inline = re.findall(r"<script>(.*?)</script>", bytes(page.body).decode(), flags=re.DOTALL)
    hashes = [f"'sha256-{base64.b64encode(hashlib.sha256(js.encode()).digest()).decode()}'" for js in inline]
    policy = [" ".join([rule, *hashes]) if rule.startswith("script-src") else rule
              for rule in DOCS_CONTENT_SECURITY_POLICY]
    page.headers["Content-Security-Policy"] = "; ".join(policy)
    return page


def _page(request: Request, name: str, **context: str) -> HTMLResponse:
    response = TEMPLATES.TemplateResponse(request, name, context)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@router.get("/", response_class=HTMLResponse)
def new_job_page(request: Request) -> HTMLResponse:
    """A form for each job kind, and the live canvas of the job it submits."""
    return _page(request, "new_job.html", page="new")


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    """The tenant's jobs, newest first, with status and timings."""
    return _page(request, "jobs.html", page="jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> HTMLResponse:
    """One job: the live canvas while it runs, the replay scrubber and its drafts once it has finished."""
    return _page(request, "job.html", page="job", job_id=job_id)


@router.get("/drafts/{draft_id}", response_class=HTMLResponse)
def draft_page(request: Request, draft_id: str) -> HTMLResponse:
    """One draft: its text by confidence, the character diff against its parent, and its lineage."""
    return _page(request, "draft.html", page="draft", draft_id=draft_id)


def mount_web(app: FastAPI) -> None:
    """The pages, their static files, and the security headers on every response (call it after adding the
    other middleware, so that their own answers, a 413 say, get the headers too)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(SecurityHeaders)
