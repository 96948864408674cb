"""Redis restarts while jobs run (issue 12): the worker reconnects and keeps running, the running jobs
finish with no duplicated step, and a job submitted after the restart is picked up.

Before the fix, the worker exited here with ``Unrecoverable error: AttributeError("'NoneType' object has
no attribute 'hostname'")`` (see ``redraft.queue.RedisChannel``). It takes a worker holding unacknowledged
messages *and* waiting for more (a BRPOP in flight: it has free threads) when Redis goes away."""

from __future__ import annotations

import time

from tests.utils.service import wait_for

JOB = {"kind": "infill", "text": "[[gap:40]] and [[gap:40]]", "steps": 60}


def _submit(svc, clients, n):
    ids = []
    for i in range(n):
        r = clients[i % len(clients)].post("/v1/jobs", json=JOB)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _assert_clean(svc, client_of, job_id):
    """Succeeded at its first attempt, with steps 0..n-1 once each and every position written once."""
    client = client_of[job_id]
    done = wait_for(client, job_id, timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["timings"]["attempts"] == 1  # the running attempt went on; nothing re-ran it
    steps = client.get(f"/v1/jobs/{job_id}/steps").json()["data"]
    assert [s["step"] for s in steps] == list(range(done["timings"]["steps_run"]))
    positions = [p for s in steps for p, *_ in s["committed"]]
    assert len(positions) == len(set(positions)) == 80
    assert client.get(f"/v1/jobs/{job_id}/drafts").json()["count"] == 1


def test_a_worker_survives_a_redis_restart_with_jobs_in_flight(service_on, private_redis):
    svc = service_on(workers=1, REDRAFT_WORKER_BATCH_SIZE="8")
    clients = [svc.client(svc.new_key(f"tenant-{i}")) for i in range(2)]
    try:
        ids = _submit(svc, clients, 6)  # all running, with 2 threads free
        client_of = {job_id: clients[i % 2] for i, job_id in enumerate(ids)}
        deadline = time.monotonic() + 60
        while sum(svc.job_row(j).steps_run > 0 for j in ids) < 4:
            assert time.monotonic() < deadline, "the jobs never started"
            time.sleep(0.05)
        private_redis.restart(down_s=1.0)
        after = _submit(svc, clients, 1)[0]
        client_of[after] = clients[0]
        deadline = time.monotonic() + 120
        while svc.job_row(after).status != "succeeded":
            assert svc.workers[0].poll() is None, "the worker exited after the Redis restart"
            assert time.monotonic() < deadline, f"the job submitted after the restart is {svc.job_row(after).status}"
            time.sleep(0.1)
        for job_id in [*ids, after]:
            _assert_clean(svc, client_of, job_id)
        assert svc.workers[0].poll() is None, "the worker exited after the Redis restart"
    finally:
        for c in clients:
            c.close()
