"""The sampler's invariants, as properties over random canvases."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.errors import ConstraintError, InvalidRequest
from redraft.families import special_ids
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.sampler import SamplerConfig, denoise

MASK = 1


@st.composite
def canvases(draw, max_len=48):
    """A (1, L) canvas of random tokens with a random set of free (masked) positions."""
    length = draw(st.integers(4, max_len))
    tokens = draw(st.lists(st.integers(5, 8191), min_size=length, max_size=length))
    fixed = draw(st.lists(st.booleans(), min_size=length, max_size=length))
    x = torch.tensor([[MASK if not f else t for t, f in zip(tokens, fixed)]])
    return x, torch.tensor([fixed])


configs = st.builds(
    SamplerConfig,
    steps=st.integers(1, 12),
    block_size=st.one_of(st.none(), st.integers(1, 16)),
    temperature=st.sampled_from([0.0, 0.7, 1.5]),
    remasking=st.sampled_from(["low_confidence", "random"]),
)


def run(adapter, x, fixed, cfg, seed):
    procs = [ForbidTokens(special_ids(adapter.info), adapter.info.vocab_size)]
    gens = [torch.Generator().manual_seed(seed + i) for i in range(x.shape[0])]
    return denoise(adapter.logits, x, fixed, MASK, cfg, gens, procs)


@settings(max_examples=40, deadline=None)
@given(canvas=canvases(), cfg=configs, seed=st.integers(0, 2**31))
def test_fixed_never_changes_and_no_mask_is_left(tiny_adapter, canvas, cfg, seed):
    x, fixed = canvas
    out = run(tiny_adapter, x, fixed, cfg, seed)
    assert torch.equal(out.tokens[fixed], x[fixed])
    assert not (out.tokens == MASK).any()
    # every free position was committed exactly once in the history
    committed = sorted(p for rec in out.history[0] for p in rec.positions)
    assert committed == (~fixed[0]).nonzero().squeeze(1).tolist()
    assert x[0, ~fixed[0]].eq(MASK).all(), "the caller's canvas must not be mutated"


@settings(max_examples=15, deadline=None)
@given(canvas=canvases(), cfg=configs, seed=st.integers(0, 2**31))
def test_same_seed_same_output(tiny_adapter, canvas, cfg, seed):
    x, fixed = canvas
    assert torch.equal(run(tiny_adapter, x, fixed, cfg, seed).tokens, run(tiny_adapter, x, fixed, cfg, seed).tokens)


def test_row_output_does_not_depend_on_batch_mates(tiny_adapter):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, 8000, (3, 24), generator=g)
    fixed = torch.rand(3, 24, generator=g) > 0.5
    x = torch.where(fixed, x, MASK)
    cfg = SamplerConfig(steps=6, temperature=1.0)
    batched = run(tiny_adapter, x, fixed, cfg, seed=7).tokens
    for i in range(3):
        alone = denoise(tiny_adapter.logits, x[i : i + 1], fixed[i : i + 1], MASK, cfg,
                        [torch.Generator().manual_seed(7 + i)],
                        [ForbidTokens(special_ids(tiny_adapter.info), 8192)]).tokens
        assert torch.equal(alone[0], batched[i])


def test_special_tokens_are_never_written(tiny_adapter):
    x = torch.full((1, 32), MASK)
    out = run(tiny_adapter, x, torch.zeros(1, 32, dtype=torch.bool), SamplerConfig(steps=4, temperature=2.0), 3)
    banned = set(special_ids(tiny_adapter.info))
    assert banned >= {0, 1, 2, 3} and 4 not in banned  # [EMPTY] stays writable
    assert not set(out.tokens[0].tolist()) & banned


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"steps": 4, "block_size": 0}, {"steps": 4, "temperature": -1},
                                    {"steps": 4, "remasking": "best"},
                                    {"steps": 4, "remask_budget": -1}, {"steps": 4, "remask_below": 0}])
def test_bad_config_is_a_clear_error(kwargs):
    with pytest.raises(InvalidRequest):
        SamplerConfig(**kwargs)


@settings(max_examples=30, deadline=None)
@given(canvas=canvases(), cfg=configs, seed=st.integers(0, 2**31), budget=st.integers(1, 12),
       below=st.sampled_from([0.05, 0.5, 1.0]))
def test_self_correction_rewrites_only_free_positions_within_budget(tiny_adapter, canvas, cfg, seed, budget, below):
    x, fixed = canvas
    cfg = SamplerConfig(cfg.steps, cfg.block_size, cfg.temperature, cfg.remasking, remask_budget=budget,
                        remask_below=below)
    out = run(tiny_adapter, x, fixed, cfg, seed)
    assert torch.equal(out.tokens[fixed], x[fixed])
    assert not (out.tokens == MASK).any()
    holding: dict[int, int] = {}  # replay the history: position -> token it holds now
    n_remasked = 0
    for rec in out.history[0]:
        for p, t in zip(rec.positions, rec.tokens):
            assert p not in holding, "a position is only written while it is masked"
            holding[p] = t
        for p, t in rec.remasked:
            assert not fixed[0, p] and holding.pop(p) == t and p not in rec.positions
            n_remasked += 1
    assert n_remasked <= budget
    assert holding == {p: int(out.tokens[0, p]) for p in (~fixed[0]).nonzero().squeeze(1).tolist()}
    assert all(c < below for rec in out.history[0] for p, _ in rec.remasked
               for c in [_commit_conf(out.history[0], p, rec.step)])


def _commit_conf(history, position, before_step):
    """The confidence ``position`` was last committed with before ``before_step``."""
    conf = None
    for rec in history:
        if rec.step > before_step:
            break
        for p, c in zip(rec.positions, rec.confidences):
            if p == position:
                conf = c
    return conf


class NoTwoNeighbours:
    """A checker in the shape of the safety guards: refuses a commit next to one made in the same step,
    and forbids token 100 everywhere through the logits."""

    def __init__(self):
        self.this_step: set[int] = set()
        self.neighbours_refused = 0

    def __call__(self, logits, x, free, rows, offset=0):
        self.this_step = set()
        logits[..., 100] = float("-inf")
        return logits

    def admissible(self, row, x_row, position, token):
        if position - 1 in self.this_step or position + 1 in self.this_step:
            self.neighbours_refused += 1
            return False
        self.this_step.add(position)
        return True


@settings(max_examples=20, deadline=None)
@given(canvas=canvases(), cfg=configs, seed=st.integers(0, 2**31))
def test_refused_commits_wait_for_a_later_step(tiny_adapter, canvas, cfg, seed):
    x, fixed = canvas
    checker = NoTwoNeighbours()
    procs = [ForbidTokens(special_ids(tiny_adapter.info), tiny_adapter.info.vocab_size), checker]
    out = denoise(tiny_adapter.logits, x, fixed, MASK, cfg, [torch.Generator().manual_seed(seed)], procs)
    assert not (out.tokens == MASK).any() and torch.equal(out.tokens[fixed], x[fixed])
    for rec in out.history[0]:
        assert not any(p + 1 in rec.positions for p in rec.positions)
    assert 100 not in out.tokens[0, ~fixed[0]].tolist()


def test_a_position_with_no_allowed_token_is_a_clear_error(tiny_adapter):
    def forbid_everything_at_3(logits, x, free, rows, offset=0):
        logits[:, 3] = float("-inf")
        return logits

    x = torch.full((1, 8), MASK)
    with pytest.raises(ConstraintError, match="no admissible token"):
        denoise(tiny_adapter.logits, x, torch.zeros(1, 8, dtype=torch.bool), MASK, SamplerConfig(steps=4),
                [torch.Generator().manual_seed(0)], [forbid_everything_at_3])


@settings(max_examples=20, deadline=None)
@given(canvas=canvases(), seed=st.integers(0, 2**31), tiny=st.sampled_from([5e-324, 1e-300, 1e-45, 1e-12, 1e-7]),
       rule=st.sampled_from([{}, {"entropy_bound": 0.5}, {"threshold": 0.9}]), schedule=st.booleans())
def test_a_vanishing_temperature_is_greedy_not_a_failure(tiny_adapter, canvas, seed, tiny, rule, schedule):
    """A temperature too small to divide logits by (they would overflow to inf, the probabilities to NaN) samples
    the argmax anyway: the job writes greedy's text instead of failing with "no admissible token"."""
    x, fixed = canvas
    temps = {"t_max": tiny, "t_min": tiny} if schedule else {"temperature": tiny}
    out = run(tiny_adapter, x, fixed, SamplerConfig(steps=6, **temps, **rule), seed)
    greedy = run(tiny_adapter, x, fixed, SamplerConfig(steps=6, temperature=0.0, **rule), seed)
    assert not (out.tokens == MASK).any()
    assert torch.equal(out.tokens, greedy.tokens)
