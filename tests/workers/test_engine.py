"""Continuous batching and parallel decoding: the engine a worker runs, with real jobs' processors."""

from __future__ import annotations

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.automaton import accepts
from redraft.constraints.generate import compile_generate, prompt_slot
from redraft.constraints.infill import compile_infill, parse_text
from redraft.errors import ConstraintError, JobCancelled
from redraft.families import special_ids
from redraft.settings import get_settings
from redraft.workers.drafting import Drafting
from redraft.workers.engine import BatchEngine
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.sampler import SamplerConfig, denoise
from redraft.workers.steps import MemorySink
from tests.utils.waiting import until

TEXTS = [
    "Dear team, the [[gap:4]] is ready. Please [[gap]] by Friday.",
    "[[gap:20]]",
    "One [[gap:12]] two [[gap:12]] three [[gap:3]].",
    "The capital of France is [[gap:3]].",
]

job_params = st.fixed_dictionaries({
    "text": st.sampled_from(TEXTS),
    "steps": st.integers(1, 12),
    "seed": st.integers(0, 10_000),
    "temperature": st.sampled_from([0.0, 0.9]),
    "block_size": st.sampled_from([None, 8]),
    "threshold": st.sampled_from([None, 0.05, 0.5, 0.9]),
    "remask_budget": st.sampled_from([0, 4]),
    "remasking": st.sampled_from(["low_confidence", "random"]),
    "entropy_bound": st.sampled_from([None, None, 0.5, 3.0]),  # with masked noise too: rows of one group differ
})


def drafting(adapter, tokenizer, params, engine=None):
    canvas = compile_infill(parse_text(params["text"], 16, 256), tokenizer, adapter.info)
    return Drafting(adapter, canvas, dict(params), MemorySink(tokenizer), get_settings(), engine=engine)


def run_together(adapter, tokenizer, jobs, engine):
    """Run every job at once on ``engine`` (one thread each, as the worker's task threads do). An engine
    made with ``start=False`` is started once every job is queued, so they all share its first step."""
    out: list = [None] * len(jobs)

    def work(i):
        d = drafting(adapter, tokenizer, jobs[i], engine)
        try:
            out[i] = d.run("infill")[0], d.sink.steps
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            out[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    if not engine._thread.is_alive():
        # a job that failed before queueing its rows is done, not pending
        until(lambda: engine.pending + sum(not t.is_alive() for t in threads) >= len(jobs), "the jobs never queued")
        engine.start()
    for t in threads:
        t.join(timeout=300)
    return out


@settings(max_examples=12, deadline=None)
@given(jobs=st.lists(job_params, min_size=2, max_size=5))
def test_a_jobs_text_does_not_depend_on_its_batch_mates(tiny_adapter, tiny_model, jobs):
    _, tokenizer = tiny_model
    alone = [drafting(tiny_adapter, tokenizer, p).run("infill")[0] for p in jobs]
    engine = BatchEngine(tiny_adapter.logits, max_batch=len(jobs), start=False)
    together = run_together(tiny_adapter, tokenizer, jobs, engine)
    assert [t[0] for t in together] == alone
    assert engine.rows_stepped > engine.steps, "the jobs really shared forward passes"


def test_shipped_model_batched_equals_alone(tiny_model):
    from redraft.settings import DEFAULT_MODEL_DIR
    from redraft.workers.adapters import get_adapter

    adapter = get_adapter("redraft-tiny", DEFAULT_MODEL_DIR, "cpu")
    _, tokenizer = tiny_model
    jobs = [{"text": t, "steps": 8, "seed": i, "temperature": 0.7} for i, t in enumerate(TEXTS * 2)]
    alone = [drafting(adapter, tokenizer, p).run("infill")[0] for p in jobs]
    together = run_together(adapter, tokenizer, jobs, BatchEngine(adapter.logits, max_batch=8, start=False))
    assert [t[0] for t in together] == alone


class Exploding:
    """A processor that fails on its third call: a job whose constraint code breaks mid-run."""

    def __init__(self):
        self.calls = 0

    def __call__(self, logits, x, free, rows, offset=0):
        self.calls += 1
        if self.calls == 3:
            raise ConstraintError("this job's constraint broke")
        return logits


def test_one_jobs_failure_or_cancellation_never_fails_the_others(tiny_adapter, tiny_model):
    info, tokenizer = tiny_model
    engine = BatchEngine(tiny_adapter.logits, max_batch=8)
    jobs = [{"text": TEXTS[2], "steps": 10, "seed": i, "temperature": 0.9} for i in range(4)]
    alone = [drafting(tiny_adapter, tokenizer, p).run("infill")[0] for p in jobs]
    outcomes: dict[int, object] = {}

    def good(i):
        outcomes[i] = drafting(tiny_adapter, tokenizer, jobs[i], engine).run("infill")[0]

    def failing():
        d = drafting(tiny_adapter, tokenizer, jobs[0], engine)
        d.processors = lambda: [Exploding()]
        try:
            d.run("infill")
        except ConstraintError as exc:
            outcomes["failed"] = exc

    def cancelled():
        d = drafting(tiny_adapter, tokenizer, jobs[0], engine)
        def stop(records):  # the job's thread learns of a cancellation when it writes its first steps
            raise JobCancelled("cancelled by the client")

        d.sink.records = stop
        try:
            d.run("infill")
        except JobCancelled as exc:
            outcomes["cancelled"] = exc

    threads = [threading.Thread(target=good, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=failing), threading.Thread(target=cancelled)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert isinstance(outcomes["failed"], ConstraintError)
    assert isinstance(outcomes["cancelled"], JobCancelled)
    assert [outcomes[i] for i in range(4)] == alone


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.sampled_from([0.01, 0.3, 0.7, 0.9, 1.0]),
       block=st.sampled_from([None, 4, 16]), text=st.sampled_from(TEXTS), temperature=st.sampled_from([0.0, 1.0]))
def test_threshold_decoding_commits_what_is_confident_and_finishes(any_adapter, seed, threshold, block, text,
                                                                  temperature):
    from redraft.families import load_tokenizer

    info = any_adapter.info
    tokenizer = load_tokenizer(info.path)
    canvas = compile_infill(parse_text(text, 16, 256), tokenizer, info)
    x, fixed = torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed])
    cfg = SamplerConfig(steps=1, block_size=block, temperature=temperature, threshold=threshold)
    out = denoise(any_adapter.logits, x, fixed, info.mask_id, cfg, [torch.Generator().manual_seed(seed)],
                  [ForbidTokens(special_ids(info), info.vocab_size)])
    assert not (out.tokens == info.mask_id).any() and torch.equal(out.tokens[fixed], x[fixed])
    for rec in out.history[0]:
        assert rec.positions, "every step commits at least one token"
        if len(rec.positions) > 1:
            assert min(rec.confidences) >= threshold - 1e-6


def test_a_low_threshold_commits_several_tokens_per_step_on_the_shipped_model():
    from redraft.families import load_tokenizer
    from redraft.settings import DEFAULT_MODEL_DIR
    from redraft.workers.adapters import get_adapter

    adapter = get_adapter("redraft-tiny", DEFAULT_MODEL_DIR, "cpu")
    info, tokenizer = adapter.info, load_tokenizer(DEFAULT_MODEL_DIR)
    canvas = compile_infill(parse_text(TEXTS[0], 16, 256), tokenizer, info)
    x, fixed = torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed])
    steps = {}
    for threshold in (None, 0.1):
        cfg = SamplerConfig(steps=int((~fixed).sum()), threshold=threshold)
        out = denoise(adapter.logits, x, fixed, info.mask_id, cfg, [torch.Generator().manual_seed(0)],
                      [ForbidTokens(special_ids(info), info.vocab_size)])
        steps[threshold] = len(out.history[0])
    assert steps[None] == int((~fixed).sum()) and steps[0.1] < steps[None]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.sampled_from([0.05, 0.5, 0.9]))
def test_threshold_decoding_respects_structure_targets(tiny_adapter, tiny_model, seed, threshold):
    from redraft.workers.processors.slot_targets import SlotTargets, constrained_slots

    info, tokenizer = tiny_model
    pieces = ["Invoice date: ", prompt_slot({"regex": r"20[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]"}, 12, 0, 64),
              ". Total: ", prompt_slot({"choices": ["paid", "unpaid", "overdue"]}, 4, 0, 64)]
    canvas = compile_generate(pieces, tokenizer, info)
    special = special_ids(info)
    slots = constrained_slots(canvas, tokenizer, info, special)
    procs = [ForbidTokens(special, 8192), SlotTargets({0: slots}, info.empty_id)]
    cfg = SamplerConfig(steps=1, temperature=1.0, threshold=threshold)
    out = denoise(tiny_adapter.logits, torch.tensor([canvas.token_ids]), torch.tensor([canvas.fixed]), info.mask_id,
                  cfg, [torch.Generator().manual_seed(seed)], procs)
    tokens = out.tokens[0].tolist()
    for slot in slots:
        ids = [tokens[p] for p in slot.positions if tokens[p] != info.empty_id]
        assert accepts(slot.automaton, ids)


def test_threshold_is_validated():
    with pytest.raises(Exception, match="threshold"):
        SamplerConfig(steps=1, threshold=0.0)
    with pytest.raises(Exception, match="threshold"):
        SamplerConfig(steps=1, threshold=1.5)


def test_rows_beyond_the_batch_size_wait_their_turn_and_finish(tiny_adapter, tiny_model):
    _, tokenizer = tiny_model
    jobs = [{"text": TEXTS[3], "steps": 3, "seed": i} for i in range(5)]
    alone = [drafting(tiny_adapter, tokenizer, p).run("infill")[0] for p in jobs]
    engine = BatchEngine(tiny_adapter.logits, max_batch=2, start=False)
    together = run_together(tiny_adapter, tokenizer, jobs, engine)
    assert [t[0] for t in together] == alone


class BatchedPassFails:
    """A real adapter whose forward pass fails whenever it is asked for more than one row on every other call (a GPU
    that runs out of memory at the batch's size, say): the engine then runs that step's rows one at a time."""

    def __init__(self, adapter):
        self.adapter, self.info, self.calls, self.failed = adapter, adapter.info, 0, 0

    def forward_groups(self, rows):
        self.calls += 1
        if len(rows) > 1 and self.calls % 2:
            self.failed += 1
            raise RuntimeError("CUDA out of memory (as if)")
        return self.adapter.forward_groups(rows)


def test_rows_retried_one_by_one_after_a_failed_pass_read_their_own_logits():
    """A masked adapter hands a step's logits out of buffers it reuses from call to call (``MaskedLMAdapter``): rows
    retried one at a time must each be advanced on their own pass's logits, not the last one's. (The shipped model:
    the tiny random one's logits barely depend on the context, and its texts came out the same either way.)"""
    from redraft.families import load_tokenizer
    from redraft.settings import DEFAULT_MODEL_DIR
    from redraft.workers.adapters import get_adapter

    adapter = get_adapter("redraft-tiny", DEFAULT_MODEL_DIR, "cpu")
    tokenizer = load_tokenizer(adapter.info.path)
    jobs = [{"text": t, "steps": 6, "seed": i, "temperature": 0.8} for i, t in enumerate(TEXTS)]
    alone = [drafting(adapter, tokenizer, p).run("infill")[0] for p in jobs]
    failing = BatchedPassFails(adapter)
    together = run_together(adapter, tokenizer, jobs, BatchEngine(failing, max_batch=len(jobs), start=False))
    assert failing.failed > 0, "batched passes did fail and were retried"
    assert [t[0] for t in together] == alone
