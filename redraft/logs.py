"""One logging setup for the API and the workers: one record per line on stderr, JSON or text.

``REDRAFT_LOG_FORMAT=json`` writes one JSON object per line (``time``, ``level``, ``logger``, ``message``, any
``extra`` fields, ``exc_info``), for log shippers; ``text`` (the default) reads best in a terminal. Every record
a job's own worker thread writes carries that job's ``job_id``: ``redraft.workers.runner.run_job`` is wrapped in
``bind_job_id``, which sets a context variable for the job's thread, and a filter on the one handler copies it
onto each record, whichever logger wrote it (the batching engine's thread serves every job, and names none).

Who calls ``configure_logging``: Celery workers through the ``setup_logging`` signal below (connected when this
module is imported, which ``redraft.workers.runner`` does, so Celery leaves logging to us), and the API when its ASGI
lifespan starts (``redraft.api.metrics.RequestObserver``), after uvicorn has set up its own loggers, so uvicorn's lines
come out in the same format. uvicorn's access log is turned off: the API writes its own request log
(``redraft.access``: method, path, status, duration).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import IO, Any, ParamSpec, TypeVar

from celery.signals import setup_logging
from pythonjsonlogger.json import JsonFormatter

from redraft.settings import Settings, get_settings

job_id_var: ContextVar[str | None] = ContextVar("redraft_job_id", default=None)
jobs_log = logging.getLogger("redraft.jobs")

P = ParamSpec("P")
R = TypeVar("R")

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON_FIELDS = "%(levelname)s %(name)s %(message)s"


def bind_job_id(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func(job_id, ...)`` with ``job_id`` bound for every record logged meanwhile (in this thread), between
    a ``redraft.jobs`` record when it starts and one when it returns (with what it returned and how long it took)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        token = job_id_var.set(str(args[0]) if args else kwargs.get("job_id"))  # type: ignore[arg-type]
        started = time.monotonic()
        jobs_log.info("job started")
        try:
            outcome = func(*args, **kwargs)
        except BaseException:
            jobs_log.exception("job raised after %.2f s", time.monotonic() - started)
            raise
        else:
            elapsed = round(time.monotonic() - started, 3)
            jobs_log.info("job ended: %s after %.2f s", outcome, elapsed,
                          extra={"outcome": str(outcome), "duration_s": elapsed})
            return outcome
        finally:
            job_id_var.reset(token)

    return wrapper


class JobIdFilter(logging.Filter):
    """Puts the bound job id on each record (a record that already names a ``job_id`` keeps its own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job_id = job_id_var.get()
        if job_id is not None and not hasattr(record, "job_id"):
            record.job_id = job_id
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [job <id>]``."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job_id = getattr(record, "job_id", None)
        return f"{line} [job {job_id}]" if job_id else line


def json_formatter() -> JsonFormatter:
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, extras."""
    return JsonFormatter(_JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger"}, timestamp="time",
                         json_ensure_ascii=False)


def configure_logging(settings: Settings | None = None, stream: IO[str] | None = None) -> logging.Handler:
    """Send every logger's records to one handler on ``stream`` (stderr) in ``settings.log_format``.

    Idempotent: the handler it installed before is replaced; other handlers on the root logger (pytest's, say)
    are left alone. uvicorn's loggers are made to propagate to it, and uvicorn's access log is turned off (the
    API logs each request itself, with its duration).
    """
    settings = settings or get_settings()
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "redraft", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.redraft = True  # type: ignore[attr-defined]
    handler.setFormatter(json_formatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(JobIdFilter())
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)  # REDRAFT_LOG_LEVEL, the root's, decides for uvicorn's lines too
        logger.disabled = False  # a dictConfig elsewhere in the process (disable_existing_loggers) cannot mute it
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    return handler


@setup_logging.connect
def _celery_setup_logging(**_: Any) -> None:
    """Celery calls this instead of configuring logging itself (a receiver on ``setup_logging`` means "mine")."""
    configure_logging()
