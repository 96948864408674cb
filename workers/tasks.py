"""Celery tasks. A task is like a web view: it takes the job id and calls the real logic elsewhere.

Start a worker with: ``celery -A redraft.workers.tasks worker -Q gpu --pool=threads --concurrency=16``
(one process per GPU; the model loads lazily in that process on its first job; each task thread
hands its job to the process's batching engine, ``workers/engine.py``, which steps all of them).
Each worker process also beats a heartbeat into Redis and records the jobs it receives
(``redraft.queue.Heartbeat``), and runs a reaper (``workers/reaper.py``).
"""

from __future__ import annotations

import logging
import threading

from celery.signals import task_postrun, task_received, worker_init, worker_ready, worker_shutdown

from redraft.queue import RUN_JOB, Heartbeat, get_celery
from redraft.settings import get_settings
from redraft.workers import reaper, runner

log = logging.getLogger(__name__)
app = get_celery()
_stop = threading.Event()
_heartbeat: Heartbeat | None = None  # created when a worker starts (not when, e.g., `celery inspect` imports this)


@app.task(name=RUN_JOB, acks_late=True, reject_on_worker_lost=True)
def run_job(job_id: str) -> str:
    return runner.run_job(job_id)


@worker_init.connect
def _start_heartbeat(**_: object) -> None:
    global _heartbeat
    _heartbeat = Heartbeat(get_settings())
    _heartbeat.start()


@task_received.connect
def _record_receipt(request: object = None, **_: object) -> None:
    if _heartbeat is not None and request is not None and request.name == RUN_JOB and request.args:
        _heartbeat.received(request.id, str(request.args[0]))


@task_postrun.connect
def _clear_receipt(task_id: str | None = None, **_: object) -> None:
    if _heartbeat is not None and task_id:
        _heartbeat.finished(task_id)


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    """Each worker re-enqueues jobs whose worker died (a SIGKILL leaves no one to say so)."""
    settings = get_settings()
    threading.Thread(target=reaper.loop, args=(settings, _stop), name="redraft-reaper", daemon=True).start()


@worker_shutdown.connect
def _stop_background(**_: object) -> None:
    _stop.set()
    if _heartbeat is not None:
        _heartbeat.stop()
