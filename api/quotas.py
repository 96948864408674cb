"""Per-tenant quotas on job submission, so one tenant cannot starve the others.

Three limits, each refused with a 429 (``RateLimited``) and a ``Retry-After``:

- **concurrent jobs**: the tenant's jobs queued or running (and not asked to cancel), counted in the
  database. The database is the source of truth for a job's state, so nothing can leak: a finished,
  failed or cancelled job frees its slot the moment its row changes, and a job whose worker died is
  still counted as what it is (running, until the reaper re-queues or fails it). A Redis counter would
  need its own repair for every one of those paths. The count is checked twice: before the submission
  work (a cheap refusal) and again inside the transaction that inserts the job, under a lock on the
  tenant's row, so simultaneous submissions cannot overshoot the limit.
- **jobs per minute**: submissions in a moving window of 60 s (``limits``' moving window in Redis).
- **compile time per minute**: the wall-clock seconds of the synchronous submission work (validating,
  tokenising, compiling constraints, the insert), charged to a fixed 60 s window in Redis after every
  submission, also one refused with a 4xx after compiling. A tenant whose window is spent is refused
  until it resets; one submission may overdraw it (the per-compile budgets bound by how much).

Redis down or slow (``REDRAFT_QUOTA_REDIS_TIMEOUT_S``): the per-minute limits fail open (the request is
let through and a warning logged), because submission itself survives a Redis outage (the job row commits
and the reaper enqueues it later) and refusing every tenant would turn an outage into one for all. The
concurrent-jobs limit lives in the database and holds regardless.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from limits import RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from redraft.errors import RateLimited
from redraft.jobs import ACTIVE
from redraft.settings import Settings
from redraft.storage.tables import Job, Tenant

log = logging.getLogger(__name__)

KEY_PREFIX = "redraft:quota"
# When a concurrent slot frees up is not known in advance (a job's length depends on its steps and the queue).
CONCURRENT_RETRY_AFTER_S = 5


@lru_cache(maxsize=8)
def _storage(redis_url: str, timeout_s: float) -> RedisStorage:
    # No retries: a quota check costs at most one timeout, then the request goes through (fail open).
    return RedisStorage(redis_url, key_prefix=KEY_PREFIX, wrap_exceptions=True, socket_timeout=timeout_s,
                        socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))


def _ms(seconds: float) -> int:
    return math.ceil(round(seconds * 1000, 3))  # rounded first: 0.029 s is 29 ms, not 30


def _retry_after(reset_at: float) -> int:
    return max(1, math.ceil(reset_at - time.time()))


def active_jobs(session: Session, tenant_id: str) -> int:
    """The tenant's jobs that hold a concurrent slot: queued or running, and not asked to cancel."""
    return session.scalar(select(func.count()).select_from(Job).where(
        Job.tenant_id == tenant_id, Job.status.in_(ACTIVE), Job.cancel_requested.is_(False))) or 0


class Quotas:
    """The three per-tenant limits of one settings object; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_concurrent = settings.tenant_max_concurrent_jobs
        self.jobs = RateLimitItemPerMinute(settings.tenant_jobs_per_minute) \
            if settings.tenant_jobs_per_minute > 0 else None
        # Compile time is counted in milliseconds: the window's counter holds integers.
        compile_ms = _ms(settings.tenant_compile_s_per_minute)
        self.compile_ms = RateLimitItemPerMinute(compile_ms) if compile_ms > 0 else None
        storage = _storage(settings.redis_url, settings.quota_redis_timeout_s) if settings.redis_url else None
        self.moving = MovingWindowRateLimiter(storage) if storage else None
        self.fixed = FixedWindowRateLimiter(storage) if storage else None

    @contextmanager
    def admit(self, session: Session, tenant_id: str) -> Iterator[None]:
        """Refuse the submission (429) if a limit is reached; else run the body, timed, with the concurrent
        limit re-checked when its transaction commits, and charge the body's seconds afterwards."""
        self.check_compile_time(tenant_id)
        self.check_concurrent(session, tenant_id)
        self.hit_jobs_per_minute(tenant_id)
        guard = self._concurrent_guard(tenant_id)
        if guard is not None:
            event.listen(session, "before_commit", guard)
        started = time.perf_counter()
        try:
            yield
        finally:
            if guard is not None:
                event.remove(session, "before_commit", guard)
            self.charge_compile_time(tenant_id, time.perf_counter() - started)

    def check_concurrent(self, session: Session, tenant_id: str) -> None:
        """429 when the tenant's jobs already fill REDRAFT_TENANT_MAX_CONCURRENT_JOBS."""
        if self.max_concurrent > 0:
            self._refuse_if_full(active_jobs(session, tenant_id))

    def _concurrent_guard(self, tenant_id: str):
        """A ``before_commit`` hook: lock the tenant's row, then count again, the new job included. The lock
        (FOR NO KEY UPDATE, which the jobs' foreign key does not wait on) serialises this tenant's commits, so
        two submissions cannot both see the last free slot. SQLite serialises writers by itself."""
        if self.max_concurrent <= 0:
            return None

        def guard(session: Session) -> None:
            session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
            self._refuse_if_full(active_jobs(session, tenant_id) - 1)

        return guard

    def _refuse_if_full(self, active: int) -> None:
        if active >= self.max_concurrent:
            raise RateLimited(
                f"this tenant already has {active} jobs queued or running, the most allowed at once "
                f"(REDRAFT_TENANT_MAX_CONCURRENT_JOBS={self.max_concurrent}); wait for one to finish or cancel one "
                "(POST /v1/jobs/{id}/cancel), then retry", retry_after=CONCURRENT_RETRY_AFTER_S,
                code="too_many_concurrent_jobs")

    def hit_jobs_per_minute(self, tenant_id: str) -> None:
        """Count one submission; 429 (counting nothing) when the last 60 s already hold the most allowed."""
        if self.jobs is None or self.moving is None:
            return
        try:
            if self.moving.hit(self.jobs, "jobs", tenant_id):
                return
            reset_at = self.moving.get_window_stats(self.jobs, "jobs", tenant_id).reset_time
        except StorageError as exc:
            log.warning("jobs-per-minute quota not enforced for tenant %s: Redis unavailable (%s)", tenant_id,
                        exc.storage_error)
            return
        retry = _retry_after(reset_at)
        raise RateLimited(
            f"this tenant submitted {self.jobs.amount} jobs in the last minute, the most allowed "
            f"(REDRAFT_TENANT_JOBS_PER_MINUTE={self.jobs.amount}); retry in {retry} s", retry_after=retry,
            code="jobs_per_minute_exceeded")

    def check_compile_time(self, tenant_id: str) -> None:
        """429 while the tenant's compile-time window is spent."""
        if self.compile_ms is None or self.fixed is None:
            return
        try:
            if self.fixed.test(self.compile_ms, "compile_ms", tenant_id):
                return
            reset_at = self.fixed.get_window_stats(self.compile_ms, "compile_ms", tenant_id).reset_time
        except StorageError as exc:
            log.warning("compile-time quota not enforced for tenant %s: Redis unavailable (%s)", tenant_id,
                        exc.storage_error)
            return
        retry = _retry_after(reset_at)
        raise RateLimited(
            f"this tenant's submissions used their {self.settings.tenant_compile_s_per_minute:g} s of compile "
            f"time for this minute (REDRAFT_TENANT_COMPILE_S_PER_MINUTE); retry in {retry} s, or send smaller "
            "texts, templates and targets", retry_after=retry, code="compile_time_exceeded")

    def charge_compile_time(self, tenant_id: str, seconds: float) -> None:
        """Charge ``seconds`` of submission work (at least 1 ms) to the tenant's window."""
        if self.compile_ms is None or self.fixed is None:
            return
        try:  # a fixed window's counter takes the full cost, also past its limit: spent until the window resets
            self.fixed.hit(self.compile_ms, "compile_ms", tenant_id, cost=max(1, _ms(seconds)))
        except StorageError as exc:
            log.warning("compile time of tenant %s not charged: Redis unavailable (%s)", tenant_id,
                        exc.storage_error)
