"""The reaper: finds jobs whose worker died and puts them back on the queue.

A job is stale when it is running and its row has not been touched (every step touches it) for
``heartbeat_timeout_s``, or queued for ``job_timeout_s`` (its message was lost, e.g. Redis was down at
submission). Re-enqueueing is safe because tasks are idempotent by job id; ``repo.mark_reaped``
makes sure only one reaper among many workers re-enqueues a given job.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from redraft.queue import enqueue
from redraft.settings import Settings
from storage import repo
from storage.db import session_scope

log = logging.getLogger(__name__)


def reap_once(settings: Settings) -> list[str]:
    """Re-enqueue stale jobs once; returns their ids."""
    with session_scope() as s:
        ids = [j.id for j in repo.stuck_jobs(s, datetime.now(UTC), settings.heartbeat_timeout_s, settings.job_timeout_s)]
    requeued = []
    for job_id in ids:
        with session_scope() as s:
            if not repo.mark_reaped(s, job_id, settings.heartbeat_timeout_s, settings.job_timeout_s):
                continue  # another reaper took it, or the job moved on
        enqueue(job_id)
        requeued.append(job_id)
        log.warning("re-enqueued stale job %s", job_id)
    return requeued


def loop(settings: Settings, stop: threading.Event) -> None:
    while not stop.wait(settings.reaper_interval_s):
        try:
            reap_once(settings)
        except Exception:  # the reaper must outlive a database or broker hiccup
            log.exception("reaper pass failed")
