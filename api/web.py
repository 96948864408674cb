"""The "watch it denoise" pages: static HTML shells (Jinja2) and plain JavaScript under /static.

The pages need no server-side auth and read nothing from the database: the script asks for the API
key once, keeps it in ``sessionStorage`` and calls the JSON API with it, like any other client.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=HERE / "templates")

router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str, **context: str) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, name, context)


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
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
