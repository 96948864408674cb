"""Logging set-up (redraft/logs.py): the text format, levels, one handler however often it is configured,
uvicorn's loggers, Celery's set-up signal, and ``bind_job_id`` when the job raises. JSON lines, the job id per
thread, the API's request log and a real worker's lines are in tests/api/test_logging.py."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from celery.signals import setup_logging
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pythonjsonlogger.json import JsonFormatter

from redraft.logs import TextFormatter, bind_job_id, configure_logging, job_id_var
from redraft.settings import Settings, get_settings

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<rest>.*)$")
log = logging.getLogger("redraft.test.logs")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger and uvicorn's back as they were: configure_logging changes them process-wide."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).disabled)
        for n in names
    }
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, (old, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = old
        logger.propagate, logger.disabled = propagate, disabled


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "redraft", False)]


def text_log(level: str = "DEBUG") -> io.StringIO:
    buffer = io.StringIO()
    configure_logging(Settings(log_format="text", log_level=level), stream=buffer)
    return buffer


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    message=st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40),
    job_id=st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)),
)
def test_a_text_line_is_time_level_logger_message_and_the_job(message, job_id):
    buffer = text_log()

    def emit(_: str | None) -> None:
        log.warning("%s", message)

    (bind_job_id(emit) if job_id is not None else emit)(job_id)
    lines = [line for line in buffer.getvalue().splitlines() if "redraft.test.logs" in line]
    assert len(lines) == 1
    match = TEXT_LINE.match(lines[0])
    assert match and (match["level"], match["logger"]) == ("WARNING", "redraft.test.logs")
    assert match["rest"] == (f"{message} [job {job_id}]" if job_id else message)


@pytest.mark.parametrize("configured", LEVELS)
def test_records_below_the_configured_level_are_dropped(configured):
    buffer = text_log(configured)
    for level in LEVELS:
        log.log(getattr(logging, level), "at %s", level)
    written = [TEXT_LINE.match(line)["level"] for line in buffer.getvalue().splitlines()]
    assert written == LEVELS[LEVELS.index(configured) :]


def test_configuring_again_replaces_our_handler_and_leaves_the_others():
    foreign = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    configure_logging(Settings(log_format="json"), stream=first)
    handler = configure_logging(Settings(log_format="text"), stream=second)
    assert ours() == [handler] and foreign in logging.getLogger().handlers
    assert isinstance(handler.formatter, TextFormatter)
    log.warning("once")
    assert first.getvalue() == "" and second.getvalue().count("once") == 1  # one line, on the newest stream


def test_uvicorn_lines_go_through_our_handler_and_its_access_log_is_off():
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(logging.StreamHandler(io.StringIO()))  # as uvicorn sets itself up
    buffer = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="INFO"), stream=buffer)
    assert uvicorn_error.handlers == [] and uvicorn_error.propagate
    access = logging.getLogger("uvicorn.access")
    assert access.disabled and not access.propagate and access.handlers == []
    uvicorn_error.info("Started server process")
    access.info("GET / 200")
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [(r["logger"], r["message"]) for r in records] == [("uvicorn.error", "Started server process")]


def test_json_lines_keep_non_ascii_text_as_it_is():
    buffer = io.StringIO()
    configure_logging(Settings(log_format="json"), stream=buffer)
    log.warning("café ✓ 日本")
    assert "café ✓ 日本" in buffer.getvalue()


def test_a_record_naming_its_own_job_keeps_it():
    buffer = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="INFO"), stream=buffer)
    bind_job_id(lambda job_id: log.warning("about another", extra={"job_id": "other"}))("mine")
    records = {r["message"]: r for r in map(json.loads, buffer.getvalue().splitlines())}
    assert records["about another"]["job_id"] == "other" and records["job started"]["job_id"] == "mine"


def test_a_job_that_raises_is_logged_with_its_traceback_and_the_id_is_unbound():
    buffer = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="INFO"), stream=buffer)

    @bind_job_id
    def job(job_id: str) -> None:
        raise ValueError("the model is gone")

    with pytest.raises(ValueError, match="the model is gone"):
        job("job-1")
    assert job_id_var.get() is None
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    raised = [r for r in records if r["message"].startswith("job raised after ")]
    assert len(raised) == 1 and raised[0]["level"] == "ERROR" and raised[0]["job_id"] == "job-1"
    assert "ValueError: the model is gone" in raised[0]["exc_info"]
    assert not any(r["message"].startswith("job ended") for r in records)


@given(job_id=st.text(alphabet="0123456789abcdef", min_size=1, max_size=8), outer=st.none() | st.just("outer"))
def test_the_job_id_is_bound_from_a_keyword_too_and_restored_after(job_id, outer):
    seen = []
    token = job_id_var.set(outer)
    try:
        result = bind_job_id(lambda *, job_id: seen.append(job_id_var.get()) or "done")(job_id=job_id)
        assert (result, seen) == ("done", [job_id]) and job_id_var.get() == outer
    finally:
        job_id_var.reset(token)


def test_celery_leaves_logging_to_us(monkeypatch, capsys):
    """Celery's setup_logging signal (sent instead of its own set-up) installs our handler, in the format the
    settings name, on stderr."""
    monkeypatch.setenv("REDRAFT_LOG_FORMAT", "json")
    monkeypatch.setenv("REDRAFT_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    try:
        setup_logging.send(sender=None, loglevel="INFO", logfile=None, format="", colorize=False)
        (handler,) = ours()
        assert isinstance(handler.formatter, JsonFormatter) and logging.getLogger().level == logging.WARNING
        log.warning("from a worker")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert [r["message"] for r in lines if r["logger"] == "redraft.test.logs"] == ["from a worker"]
