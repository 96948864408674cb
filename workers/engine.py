"""Continuous batching in a worker process: one thread runs denoising steps over every active job.

Each Celery task (a thread of the worker's ``threads`` pool) claims its job, builds the job's
``Row`` (canvas, config, seed, processors) and hands it to the engine of its model with ``run``;
then it stays in ``run`` writing the job's step records to the database as the engine produces
them (several steps per transaction when it falls behind), publishing events, and checking for
cancellation and the job timeout. The engine thread does nothing but model work: between two steps
rows join and leave, rows of equal length share one forward pass, and each row keeps its own
schedule, constraints and generator, so a job's text does not depend on its batch-mates.

Failure isolation: an exception while advancing one row (a constraint that cannot be met, a
processor bug) ends that row only (rows of a length group step together, ``sampler.advance_group``, and
each row's error comes back on its own); a forward pass that fails for a group is retried row by row, so
only the row that cannot run fails. A stop requested by the job's own thread (cancelled, timed out,
superseded) removes the row before its next step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from redraft import metrics
from redraft.workers.sampler import Row, StepRecord, advance_group, rows_forward

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Handle:
    """A row inside the engine, seen from the job's thread."""

    row: Row
    records: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    stop: BaseException | None = None  # set by the job's thread: the engine drops the row before its next step


class BatchEngine:
    """The step loop of one model in one worker process (``for_adapter`` gives the shared one)."""

    def __init__(self, model, max_batch: int = 16, name: str = "model", start: bool = True) -> None:
        """``model``: an adapter, or a masked model's ``logits(input_ids, attention_mask)`` (``rows_forward``)."""
        self.forward = rows_forward(model)
        self.max_batch = max_batch
        self._step_seconds = metrics.STEP_SECONDS.labels(name)  # Prometheus histograms (redraft/metrics.py)
        self._forward_seconds = metrics.FORWARD_SECONDS.labels(name)
        self._pending: queue.SimpleQueue[Handle] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"redraft-engine-{name}", daemon=True)
        self.steps = 0  # batched steps run (for benchmarks and logs)
        self.rows_stepped = 0
        self.forward_s = 0.0  # time in forward passes, and in advancing rows (sampling, processors, commits)
        self.advance_s = 0.0
        if start:
            self.start()

    def start(self) -> None:
        """Start the step loop (``start=False`` lets a benchmark or test queue rows first)."""
        self._thread.start()

    @property
    def pending(self) -> int:
        """Rows handed over and not yet taken into the loop."""
        return self._pending.qsize()

    # ------------------------------------------------------------------------------------ job side

    def run(self, row: Row, on_records: Callable[[list[StepRecord]], None] | None = None,
            poll_s: float = 0.25) -> Row:
        """Denoise ``row`` with whatever else is running; returns it finished.

        ``on_records(records)`` runs in the calling thread with the records produced since its last
        call (in order); raising from it stops the row (the exception is re-raised here). The row's
        own exception, if advancing it failed, is re-raised here too. Records are handed over every
        ``poll_s`` (and at the end): fewer, larger transactions for the job thread, less GIL for the engine.
        """
        handle = Handle(row)
        row.on_step = handle.records.put
        self._pending.put(handle)
        self._wake.set()
        while True:
            finished = handle.done.wait(poll_s)
            batch = _drain(handle.records)
            if batch and on_records is not None and handle.stop is None:
                try:
                    on_records(batch)
                except BaseException as exc:
                    handle.stop = exc
                    handle.done.wait()
                    raise
            if finished and handle.records.empty():
                break
        if handle.error is not None:
            raise handle.error
        return row

    # --------------------------------------------------------------------------------- engine side

    def _loop(self) -> None:
        active: list[Handle] = []
        while True:
            try:
                active = self._iteration(active)
            except Exception as exc:  # never let the loop die with jobs waiting on it: fail them instead
                log.exception("the engine loop failed; failing the %d rows it held", len(active))
                for h in active:
                    h.error = exc
                    h.done.set()
                active = []

    def _iteration(self, active: list[Handle]) -> list[Handle]:
        """Take in new rows, drop finished and stopped ones, run one step over the rest."""
        if not active and self._pending.empty():
            self._wake.wait()  # a run() after the empty() check sets the event, so this cannot miss it
        self._wake.clear()
        while len(active) < self.max_batch:
            try:
                active.append(self._pending.get_nowait())
            except queue.Empty:
                break
        live = []
        for h in active:
            if h.stop is not None:
                h.error = h.stop
                h.done.set()
            elif not h.row.active:
                h.done.set()
            else:
                live.append(h)
        active = live
        if active:
            self._step(active)
            active = [h for h in active if not h.done.is_set()]
        return active

    def _step(self, handles: list[Handle]) -> None:
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                groups = [([handles[i] for i in members], raw) for members, raw in self.forward([h.row for h in handles])]
        except Exception:
            log.exception("a batched forward pass failed; retrying its rows one by one")
            self._step_one_by_one(handles, t0)
            return
        self.steps += 1
        t1 = time.perf_counter()
        self._forwarded(t1 - t0)
        for members, raw in groups:
            self._advance(members, raw)
        self.advance_s += time.perf_counter() - t1
        self._step_seconds.observe(time.perf_counter() - t0)

    def _step_one_by_one(self, handles: list[Handle], t0: float) -> None:
        """The step after a failed batched pass: each row's own pass, and the row advanced on it before the next
        pass runs (an adapter may hand a pass's logits out of buffers that its next call reuses). A row whose own
        pass fails fails alone."""
        self.steps += 1
        self._forwarded(time.perf_counter() - t0)  # the failed batched pass
        for h in handles:
            t1 = time.perf_counter()
            try:
                with torch.no_grad():
                    own = self.forward([h.row])
            except Exception as exc:  # noqa: BLE001 - this row's pass failed: this row fails alone
                h.error = exc
                h.done.set()
                continue
            t2 = time.perf_counter()
            self._forwarded(t2 - t1)
            for _, raw in own:
                self._advance([h], raw)
            self.advance_s += time.perf_counter() - t2
        self._step_seconds.observe(time.perf_counter() - t0)

    def _forwarded(self, seconds: float) -> None:
        self.forward_s += seconds
        self._forward_seconds.observe(seconds)

    def _advance(self, members: list[Handle], raw: torch.Tensor) -> None:
        """Advance the rows of one forward pass on its logits; a row's error ends that row only."""
        try:
            with torch.no_grad():
                errors = advance_group([h.row for h in members], raw)
        except Exception as exc:  # a failure of the group step itself: its rows fail, the others go on
            log.exception("a group step failed; failing its %d rows", len(members))
            errors = [exc] * len(members)
        for h, error in zip(members, errors):
            if error is None:
                self.rows_stepped += 1
            else:  # this row's failure is this row's alone
                h.error = error
                h.done.set()


def _drain(q: queue.SimpleQueue) -> list:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


_engines: dict[int, BatchEngine] = {}
_lock = threading.Lock()


def for_adapter(adapter, max_batch: int) -> BatchEngine:
    """The process's engine for this adapter (one per loaded model), started on first use."""
    with _lock:
        engine = _engines.get(id(adapter))
        if engine is None:
            engine = _engines[id(adapter)] = BatchEngine(adapter, max_batch, adapter.info.name)
        return engine
