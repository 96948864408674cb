"""The Celery tasks (``workers/tasks.py``) in this process, without starting a worker: the task a job id is sent to
runs that job's lifecycle; Celery's worker signals start the process's heartbeat, which records the jobs the worker
receives and clears a receipt when its task ends, start its reaper, and stop both at shutdown. Real workers
receiving, dying and being reaped are exercised in tests/faults/."""

from __future__ import annotations

import json
import threading

import pytest
from celery import Celery
from celery.signals import task_received, worker_init, worker_ready, worker_shutdown
from celery.worker.request import Request

from redraft.queue import RUN_JOB, Keys, live_workers, send
from redraft.storage.tables import Job
from tests.redraft.test_queue import configured, message_args
from tests.storage.test_repo import make_job
from tests.utils.service import REDIS_URL
from tests.utils.waiting import until


@pytest.fixture
def tasks(session, database_url: str, queue: str):
    """The tasks module, with the process's settings naming the test's database, Redis and queue, and liveness and
    reaping fast (the worker reads its settings when its signals fire)."""
    with configured(
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        REDRAFT_QUEUE_NAME=queue,
        REDRAFT_WORKER_HEARTBEAT_INTERVAL_S="0.05",
        REDRAFT_WORKER_HEARTBEAT_TTL_S="2",
        REDRAFT_REAPER_INTERVAL_S="0.05",
        REDRAFT_ENQUEUE_GRACE_S="0",
    ):
        from redraft.workers import tasks

        yield tasks


def delivered(app: Celery, queue: str) -> Request:
    """The queue's next message as a worker's consumer hands it to ``task_received``: a Celery request."""
    with app.connection_for_read() as conn:
        message = conn.default_channel.basic_get(queue, no_ack=True)
        assert message is not None, "no message in the queue"
        return Request(message, app=app)


def test_a_job_id_sent_to_the_queue_runs_that_jobs_lifecycle(tasks, session):
    task = tasks.app.tasks[RUN_JOB]  # what a worker runs for the messages ``send`` writes
    assert task.name == tasks.run_job.name == RUN_JOB
    assert task.acks_late and task.reject_on_worker_lost  # a dead worker's job is delivered again
    job = make_job(session)  # for model "m", which this process does not serve
    assert task.apply(args=[job.id]).get() == "failed"
    row = session.get(Job, job.id, populate_existing=True)
    assert row.status == "failed" and row.error_code == "unknown_model"  # failed visibly, never lost
    assert task.apply(args=[job.id]).get() == "skipped"  # a second delivery does nothing


# The worker signals fire once in a process (as in a worker), so this runs on one backend.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_worker_records_what_it_receives_and_reaps_until_it_shuts_down(tasks, session, broker, queue):
    keys = Keys(queue)
    job = make_job(session)
    send(job.id)
    request = delivered(tasks.app, queue)
    assert request.name == RUN_JOB and request.args == [job.id]
    task_received.send(sender=None, request=request)
    assert not broker.exists(keys.receipts)  # this process is no worker yet (e.g. `celery inspect` imported it)

    worker_init.send(sender=None)
    try:
        until(lambda: live_workers(broker, keys), "the worker's heartbeat never beat", timeout_s=30)
        (worker_id,) = live_workers(broker, keys)
        task_received.send(sender=None, request=request)
        receipt = json.loads(broker.hget(keys.receipts, job.id))
        assert receipt["worker"] == worker_id and receipt["task"] == request.id
        tasks.app.send_task("celery.accumulate", args=["not-a-job"], queue=queue)  # another task's message
        tasks.app.send_task(RUN_JOB, args=[], queue=queue)  # a message without a job id
        for _ in range(2):
            task_received.send(sender=None, request=delivered(tasks.app, queue))
        assert broker.hkeys(keys.receipts) == [job.id.encode()]  # only run_job's deliveries of a job are recorded

        assert tasks.run_job.apply(args=[job.id], task_id=request.id).get() == "failed"  # the delivery runs, ends
        assert not broker.hexists(keys.receipts, job.id)  # and its receipt is cleared

        unsent = make_job(session)  # never sent: the worker's reaper sends it
        worker_ready.send(sender=None)
        until(
            lambda: [message_args(m)[1] for m in broker.lrange(queue, 0, -1)] == [[unsent.id]],
            "the worker's reaper never sent the job",
            timeout_s=30,
        )
    finally:
        worker_shutdown.send(sender=None)
    assert not live_workers(broker, keys)  # gone at once, not after the heartbeat's TTL
    until(
        lambda: not any(t.name in ("redraft-reaper", "redraft-heartbeat") for t in threading.enumerate()),
        "the reaper or the heartbeat never stopped",
        timeout_s=30,
    )
