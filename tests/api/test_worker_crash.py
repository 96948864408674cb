"""SIGKILL a worker mid-job, start another: the job completes, with no duplicated steps or drafts."""

from __future__ import annotations

import time

import pytest

from tests.utils.service import running_service, wait_for


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_service(request, tiny_model_dir, tmp_path):
    with running_service(request.param, tiny_model_dir, tmp_path) as svc:
        yield svc


def test_sigkill_mid_job_then_a_new_worker_completes_it(crash_service):
    svc = crash_service
    with svc.client(svc.new_key("crash")) as client:
        r = client.post("/v1/jobs", json={"kind": "infill", "text": "[[gap:120]] middle [[gap:120]]", "steps": 240})
        job_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/v1/jobs/{job_id}").json()["timings"]["steps_run"] < 3:
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.02)
        svc.kill_worker(svc.workers[0])
        killed_at = client.get(f"/v1/jobs/{job_id}").json()
        assert killed_at["status"] == "running" and killed_at["timings"]["steps_run"] < 240
        svc.start_worker()
        done = wait_for(client, job_id, timeout=180)
        assert done["status"] == "succeeded", done["error"]
        assert done["timings"]["attempts"] == 2
        steps = client.get(f"/v1/jobs/{job_id}/steps").json()["data"]
        assert [s["step"] for s in steps] == list(range(done["timings"]["steps_run"]))
        positions = [p for s in steps for p, *_ in s["committed"]]
        assert len(positions) == len(set(positions)) == 240
        assert client.get(f"/v1/jobs/{job_id}/drafts").json()["count"] == 1
