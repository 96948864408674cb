"""The reaper: finds jobs nobody will run and puts them back on the queue. Each worker runs one, every
``reaper_interval_s``; a pass re-sends

- running jobs whose row has not been touched (every step touches it) for ``heartbeat_timeout_s``: their
  worker died mid-job;
- queued jobs never sent (the broker was down at submission), ``enqueue_grace_s`` after they were created;
- queued jobs sent before the broker lost its data (``redraft.queue.broker_epoch``: Redis restarted empty);
- queued jobs whose receipt (``redraft.queue``) names a worker whose heartbeat is gone (it died, e.g. while
  loading the model, before claiming them) or a live worker that no longer holds them (Celery drops the
  messages it had reserved when its broker connection breaks);
- as a last resort, queued jobs untouched for ``job_timeout_s``.

Re-sending is safe because tasks are idempotent by job id (``repo.claim_job``). Only one reaper among many
acts on a job: ``repo.mark_reaped`` and ``repo.take_for_resend`` are compare-and-sets in the database, and
a receipt is taken by deleting it only if it is unchanged.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime, timedelta

import redis

from redraft.queue import Keys, WorkerBeat, broker_client, broker_epoch, delete_if, live_workers, send
from redraft.settings import Settings
from redraft.storage import repo
from redraft.storage.db import session_scope

log = logging.getLogger(__name__)


def reap_once(settings: Settings, client: redis.Redis | None = None) -> list[str]:
    """One pass; returns the ids of the jobs it re-sent."""
    client = client or broker_client(settings)
    epoch = broker_epoch(client, Keys(settings.queue_name))  # first: what this pass sends is not "before" it
    _unsend_stale(settings)
    now = datetime.now(UTC)
    with session_scope() as s:
        unsent = repo.unsent_jobs(s, now - timedelta(seconds=settings.enqueue_grace_s))
    requeued = _resend(unsent, "it was not in the queue")
    with session_scope() as s:
        lost = repo.jobs_sent_before(s, epoch)
    # a job this pass sent already is not sent again for another reason (a lost job whose receipt is an orphan)
    requeued += _resend([j for j in lost if j[0] not in requeued], "Redis lost its messages")
    requeued += _reap_receipts(settings, client, set(requeued))
    return requeued


def _unsend_stale(settings: Settings) -> None:
    """Running jobs whose worker stopped beating, and queued jobs untouched for ``job_timeout_s``, go back to
    queued and unsent: the same pass sends them."""
    with session_scope() as s:
        stuck = repo.stuck_jobs(s, datetime.now(UTC), settings.heartbeat_timeout_s, settings.job_timeout_s)
        ids = [j.id for j in stuck]
    for job_id in ids:
        with session_scope() as s:
            if not repo.mark_reaped(s, job_id, settings.heartbeat_timeout_s, settings.job_timeout_s):
                continue  # another reaper took it, or the job moved on
            repo.mark_unsent(s, job_id)
        log.warning("stale job %s goes back to the queue", job_id)


def _resend(jobs: list[tuple[str, datetime | None]], why: str) -> list[str]:
    """Send each queued job again, unless another reaper (or the API) sent it since we read it."""
    sent = []
    for job_id, sent_at in jobs:
        with session_scope() as s:
            if not repo.take_for_resend(s, job_id, sent_at):
                continue
        try:
            send(job_id)
        except Exception:  # noqa: BLE001 - the broker is still away: the next pass sends it
            with session_scope() as s:
                repo.mark_unsent(s, job_id)
            log.warning("could not send job %s (%s); will retry", job_id, why)
            continue
        sent.append(job_id)
        log.warning("re-sent job %s: %s", job_id, why)
    return sent


def _reap_receipts(settings: Settings, client: redis.Redis, sent: set[str] = frozenset()) -> list[str]:
    """Re-send queued jobs received by a worker that is dead or no longer holds them (but those in ``sent``, sent
    earlier in this pass: their orphaned receipts are only taken)."""
    keys = Keys(settings.queue_name)
    receipts = client.hgetall(keys.receipts)
    if not receipts:
        return []
    beats = live_workers(client, keys)
    orphans = []
    for field, raw in receipts.items():
        job_id, receipt = field.decode(), json.loads(raw)
        if _still_held(beats.get(receipt["worker"]), job_id, receipt["at"], settings.worker_heartbeat_ttl_s):
            continue
        if delete_if(client, keys.receipts, job_id, raw.decode()):  # only one reaper takes it
            orphans.append(job_id)
    with session_scope() as s:
        still_queued = repo.queued_sent_at(s, [j for j in orphans if j not in sent])
    resent = _resend(still_queued, "the worker that received it died or dropped it")
    dead = {m.decode() for m in client.smembers(keys.workers)} - set(beats)
    if dead:
        client.srem(keys.workers, *dead)
    return resent


def _still_held(beat: WorkerBeat | None, job_id: str, received_at: float, ttl_s: float) -> bool:
    """Whether a receipt's worker is alive and still holds the job (or received it too recently to tell:
    its heartbeat lists held jobs from Celery's state, which trails the receipt by a moment)."""
    if beat is None:
        return False
    return job_id in beat.held or received_at > beat.at - ttl_s


def loop(settings: Settings, stop: threading.Event) -> None:
    client = broker_client(settings)
    while not stop.wait(settings.reaper_interval_s):
        try:
            reap_once(settings, client)
        except redis.RedisError as exc:  # Redis is away: the consumer says so too; try again next pass
            log.warning("reaper pass stopped: Redis does not answer (%s)", exc)
        except Exception:  # the reaper must outlive a database or broker hiccup
            log.exception("reaper pass failed")
