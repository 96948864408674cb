"""Structured logs (redraft/logs.py): one JSON object per line, ``job_id`` on every record of a job's processing
in a real Celery worker, and the API's request log with method, path, status and duration."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redraft.logs import bind_job_id, configure_logging
from redraft.settings import Settings, get_settings
from tests.utils.service import running_service, wait_for


@pytest.fixture
def json_log():
    """A JSON handler on a buffer, removed after the test: (buffer, logger)."""
    buffer = io.StringIO()
    handler = configure_logging(Settings(log_format="json", log_level="WARNING"), stream=buffer)
    yield buffer, logging.getLogger("redraft.test")
    logging.getLogger().removeHandler(handler)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=st.text(), extra=st.dictionaries(st.sampled_from(["path", "method", "tenant", "note"]), st.text()),
       job_id=st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=1, max_size=32)))
def test_every_record_is_one_json_line_that_keeps_its_fields(json_log, message, extra, job_id):
    buffer, log = json_log
    buffer.seek(0)
    buffer.truncate()  # the buffer is the fixture's; each example starts it empty

    def emit(_: str | None) -> None:
        log.warning("%s", message, extra=extra)

    (bind_job_id(emit) if job_id is not None else emit)(job_id)
    lines = buffer.getvalue().split("\n")
    assert len(lines) == 2 and lines[1] == ""  # one line, whatever the message holds (newlines, quotes, ...)
    record = json.loads(lines[0])
    assert record["message"] == message and record["level"] == "WARNING" and record["logger"] == "redraft.test"
    assert all(record[k] == v for k, v in extra.items())
    assert record.get("job_id") == job_id
    assert record["time"].endswith("+00:00")


def test_the_job_id_stays_with_its_own_thread(json_log):
    buffer, log = json_log
    bound, other = threading.Event(), threading.Event()

    @bind_job_id
    def job(job_id: str) -> None:
        bound.set()
        other.wait(10)  # meanwhile, another thread logs without a job
        log.info("inside")

    thread = threading.Thread(target=job, args=("abc123",))
    logging.getLogger().setLevel(logging.INFO)
    thread.start()
    bound.wait(10)
    log.info("outside")
    other.set()
    thread.join(timeout=10)
    records = {r["message"]: r for r in map(json.loads, buffer.getvalue().splitlines())}
    assert records["inside"]["job_id"] == "abc123" and "job_id" not in records["outside"]
    assert records["job started"]["job_id"] == "abc123"
    assert records["job ended: None after 0.00 s"]["outcome"] == "None"


def test_the_api_logs_each_request_with_method_path_status_and_duration(monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from redraft.api.main import create_app

    monkeypatch.setenv("REDRAFT_LOG_FORMAT", "json")
    get_settings.cache_clear()
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with TestClient(create_app()) as api:  # the lifespan sets up logging, as under uvicorn
            api.get("/v1/jobs/abc")  # no key: a 401 before any database work
            api.get("/healthz")  # probes are logged at DEBUG: not at the default INFO
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        monkeypatch.undo()
        get_settings.cache_clear()
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "redraft.access"]
    assert len(access) == 1, records
    assert {k: access[0][k] for k in ("method", "path", "status")} == {"method": "GET", "path": "/v1/jobs/abc",
                                                                       "status": 401}
    assert access[0]["duration_ms"] >= 0 and access[0]["message"].startswith("GET /v1/jobs/abc 401 ")


@pytest.mark.slow
def test_a_worker_writes_json_lines_with_the_job_id(tiny_model_dir, tmp_path):
    with running_service("sqlite", tiny_model_dir, tmp_path, REDRAFT_LOG_FORMAT="json") as svc:
        with svc.client(svc.new_key("acme")) as client:
            job = client.post("/v1/jobs", json={"kind": "infill", "text": "Hello [[gap:3]].", "steps": 3}).json()
            assert wait_for(client, job["id"])["status"] == "succeeded"
    lines = (tmp_path / "worker.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, lines[-20:]
    assert {"time", "level", "logger", "message"} <= set(records[0])  # Celery's own start-up records too
    mine = [r for r in records if r.get("job_id") == job["id"]]
    assert [r["message"] for r in mine if r["logger"] == "redraft.jobs"][0] == "job started"
    ended = [r for r in mine if r["logger"] == "redraft.jobs"][-1]
    assert ended["outcome"] == "succeeded" and ended["duration_s"] > 0
    assert "job_id" not in records[0]  # records outside a job carry none
