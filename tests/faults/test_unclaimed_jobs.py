"""Jobs nobody will run are sent again within seconds, not after ``job_timeout_s`` (issue 12): a job whose
worker died before claiming it (while loading the model), a job submitted while Redis was down, and a job
whose message Redis lost when it restarted without persistence. ``job_timeout_s`` and
``heartbeat_timeout_s`` are 10 minutes here, so only the new paths can finish them within the waits."""

from __future__ import annotations

import json
import os
import shutil

from redraft.queue import Keys, live_workers
from tests.utils.service import wait_for
from tests.utils.waiting import until

JOB = {"kind": "infill", "text": "A [[gap:8]] b", "steps": 8}
SLOW_FALLBACKS = {"REDRAFT_JOB_TIMEOUT_S": "600", "REDRAFT_HEARTBEAT_TIMEOUT_S": "600"}


def test_a_job_whose_worker_died_while_loading_the_model_runs_on_another(service_on, tiny_model_dir, tmp_path):
    # A model directory whose config.json is a FIFO: a worker serving it blocks loading the model, forever.
    hung_dir = tmp_path / "hung-model"
    shutil.copytree(tiny_model_dir, hung_dir)
    (hung_dir / "config.json").unlink()
    os.mkfifo(hung_dir / "config.json")
    svc = service_on(workers=0, **SLOW_FALLBACKS)
    hung = svc.start_worker(REDRAFT_MODELS=json.dumps({"tiny-random": str(hung_dir)}))
    keys, broker = Keys(svc.env["REDRAFT_QUEUE_NAME"]), svc.broker()
    with svc.client(svc.new_key("acme")) as client:
        job_id = client.post("/v1/jobs", json=JOB).json()["id"]
        # Received, held (its heartbeat lists it) and never claimed: the worker is loading the model.
        until(lambda: any(job_id in b.held for b in live_workers(broker, keys).values()),
              "the worker never got the job")
        assert broker.hexists(keys.receipts, job_id) and svc.job_row(job_id).status == "queued"
        svc.kill_worker(hung)
        svc.start_worker()
        done = wait_for(client, job_id, timeout=60)
        assert done["status"] == "succeeded", done["error"]
        assert done["timings"]["attempts"] == 1  # the dead worker never claimed it
        until(lambda: not broker.hexists(keys.receipts, job_id), "the receipt was never cleared")


def test_jobs_sent_while_redis_was_down_or_lost_by_its_restart_run(service_on, private_redis):
    svc = service_on(workers=0, **SLOW_FALLBACKS)
    with svc.client(svc.new_key("acme")) as client:
        lost = client.post("/v1/jobs", json=JOB).json()["id"]  # sent; waits in Redis (no worker yet)
        assert svc.job_row(lost).enqueued_at is not None
        private_redis.stop()
        r = client.post("/v1/jobs", json=JOB)  # the row is written, the send fails
        assert r.status_code == 202, r.text
        unsent = r.json()["id"]
        assert svc.job_row(unsent).enqueued_at is None
        private_redis.start()  # empty: the first job's message is gone
        assert private_redis_depth(svc) == 0
        svc.start_worker()
        for job_id in (lost, unsent):
            done = wait_for(client, job_id, timeout=60)
            assert done["status"] == "succeeded", done["error"]
            assert done["timings"]["attempts"] == 1


def private_redis_depth(svc) -> int:
    return svc.broker().llen(svc.env["REDRAFT_QUEUE_NAME"])
