"""Where a job's step records go: the database (through the worker's one writer thread) and Redis pub/sub.

The engine thread only does model work; each job's thread receives its records in bursts (``BatchEngine.run``)
and hands them to its ``StepSink``, which numbers them and queues them on the process's ``StepWriter``. That one
thread writes every job's queued records together: one transaction for all the jobs it finds waiting (each job
checked for ownership and cancellation inside it, its rows inserted in one statement, its progress and heartbeat
touched), then every job's step events in one Redis round trip. So sixteen jobs cost one transaction per burst,
not sixteen, and neither the forward pass nor the job threads ever wait on the database for a step. A job learns
that it was cancelled or superseded at its next burst (the writer keeps the answer for its sink), and before the
job's draft is written its thread waits for its last records (``StepSink.flush``).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from tokenizers import Tokenizer

from redraft.errors import JobCancelled, JobTimeout
from redraft.families import token_text
from redraft.jobs import JobEvent
from redraft.queue import client_for, job_channel
from redraft.settings import Settings
from redraft.storage import repo
from redraft.storage.db import session_scope
from redraft.workers.sampler import StepRecord

log = logging.getLogger(__name__)

Rows = list[tuple[list[list], list[list[int]]]]  # per step: (committed, remasked)


class Publisher:
    """Publishes job events on Redis pub/sub; the database stays the source of truth.

    Every job's publisher shares the process's client (``redraft.queue.client_for``): one connection pool for the
    process (each job opened its own connection before), with the broker's bounded waits, so a Redis that stops
    answering costs the step writer one bounded wait a burst (its events are dropped with a warning)."""

    def __init__(self, settings: Settings) -> None:
        self.client = client_for(settings) if settings.redis_url else None

    def publish(self, job_id: str, event: str, data: dict[str, Any]) -> None:
        self.publish_many([(job_id, event, data)])

    def publish_many(self, events: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Publish ``(job_id, event, data)`` in order, in one round trip."""
        if self.client is None or not events:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for job_id, event, data in events:
                pipe.publish(job_channel(job_id), json.dumps({"event": event, "data": data}))
            pipe.execute()
        except redis.RedisError:  # events are a wake-up signal; readers fall back to the database
            log.warning("could not publish %d events", len(events))


class StepSink:
    """A job's step records, numbered across its rounds (``offset``) and written by the process's ``StepWriter``.

    ``records`` and ``write`` queue and return at once; they raise what the writer found on an earlier burst
    (cancelled, superseded) and the job's time-out. ``flush`` waits until everything queued is written.
    """

    def __init__(self, job_id: str, attempt: int, tokenizer: Tokenizer, publisher: Publisher,
                 settings: Settings, writer: StepWriter | None = None) -> None:
        self.job_id, self.attempt, self.tokenizer = job_id, attempt, tokenizer
        self.publisher, self.settings = publisher, settings
        self.writer = writer or step_writer()
        self.offset = 0  # steps handed to the writer so far (their numbers are taken)
        self.started = time.monotonic()
        self.error: BaseException | None = None  # set by the writer: this attempt may not write any more
        self.pending = 0  # bursts queued and not yet written
        self.written = threading.Condition()

    def records(self, batch: list[StepRecord]) -> None:
        rows = []
        for rec in batch:
            committed = [
                [p, t, token_text(self.tokenizer, t), round(c, 5)]
                for p, t, c in zip(rec.positions, rec.tokens, rec.confidences)
            ]
            rows.append((committed, [list(r) for r in rec.remasked]))
        self.write_rows(rows)

    def write(self, committed: list[list], remasked: list[list[int]]) -> None:
        self.write_rows([(committed, remasked)])

    def write_rows(self, rows: Rows) -> None:
        self.check()
        first = self.offset
        self.offset += len(rows)
        with self.written:
            self.pending += 1
        self.writer.put(Burst(self, first, rows))
        if time.monotonic() - self.started > self.settings.job_timeout_s:
            raise JobTimeout(f"the job ran longer than {self.settings.job_timeout_s} s and was stopped")

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every queued burst is written (or refused); raise what the writer found."""
        with self.written:
            if not self.written.wait_for(lambda: self.pending == 0, timeout_s):
                raise TimeoutError(f"the step writer did not write job {self.job_id}'s steps in {timeout_s} s")
        self.check()

    def _done(self, error: BaseException | None) -> None:
        with self.written:
            if error is not None and self.error is None:
                self.error = error
            self.pending -= 1
            self.written.notify_all()


class MemorySink(StepSink):
    """A step sink that keeps the steps in memory (scripts and tests run ``Drafting`` without a job row)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer, self.offset, self.job_id, self.error = tokenizer, 0, None, None
        self.steps: Rows = []

    def write_rows(self, rows: Rows) -> None:
        self.steps += rows
        self.offset += len(rows)

    def flush(self, timeout_s: float | None = None) -> None:
        pass


@dataclass
class Burst:
    sink: StepSink
    first: int  # the number of its first step
    rows: Rows = field(default_factory=list)


class StepWriter:
    """The process's one writer of step records: every job's bursts, one transaction per round of work."""

    def __init__(self, max_rows: int = 2000, start: bool = True) -> None:
        self.max_rows = max_rows  # rows per transaction at most (a long backlog is written in several)
        self._queue: queue.SimpleQueue[Burst] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="redraft-step-writer", daemon=True)
        self.transactions = 0  # for tests and benchmarks
        if start:
            self._thread.start()

    def start(self) -> None:
        self._thread.start()

    def put(self, burst: Burst) -> None:
        self._queue.put(burst)

    def _loop(self) -> None:
        while True:
            bursts = [self._queue.get()]
            rows = len(bursts[0].rows)
            while rows < self.max_rows:
                try:
                    bursts.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                rows += len(bursts[-1].rows)
            try:
                self.write(bursts)
            except Exception:  # never let the writer die: each job then gets its own transaction
                log.exception("writing %d bursts together failed; writing them job by job", len(bursts))
                for job in _by_sink(bursts).values():
                    try:
                        self.write(job)
                    except Exception as exc:  # this job's write failed: it fails, the others go on
                        for b in job:
                            b.sink._done(exc)

    def write(self, bursts: list[Burst]) -> None:
        """Write the bursts (several jobs, in queue order per job) in one transaction, then publish their events."""
        jobs = _by_sink(bursts)
        refused: dict[StepSink, BaseException] = {}
        with session_scope() as s:
            for sink, mine in jobs.items():
                if sink.error is not None:
                    continue
                owner, cancel = repo.writable(s, sink.job_id, sink.attempt)
                if not owner or cancel:
                    refused[sink] = (JobCancelled("another attempt owns this job now", code="superseded")
                                     if not owner else JobCancelled("cancelled by the client"))
                    continue
                rows = [r for b in mine for r in b.rows]
                repo.add_steps(s, sink.job_id, mine[0].first, rows)
                repo.set_steps_run(s, sink.job_id, mine[0].first + len(rows))
        self.transactions += 1
        events = [(sink.job_id, JobEvent.STEP, {"step": b.first + i, "committed": c, "remasked": r})
                  for sink, mine in jobs.items() if sink not in refused and sink.error is None
                  for b in mine for i, (c, r) in enumerate(b.rows)]
        if events:
            next(iter(jobs)).publisher.publish_many(events)
        for sink, mine in jobs.items():
            for b in mine:
                sink._done(refused.get(sink))


def _by_sink(bursts: list[Burst]) -> dict[StepSink, list[Burst]]:
    out: dict[StepSink, list[Burst]] = {}
    for b in bursts:
        out.setdefault(b.sink, []).append(b)
    return out


_writer: StepWriter | None = None
_writer_lock = threading.Lock()


def step_writer() -> StepWriter:
    """The process's step writer, started on first use."""
    global _writer
    with _writer_lock:
        if _writer is None:
            _writer = StepWriter()
        return _writer
