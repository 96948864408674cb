"""DiffusionGemma's acceptance (``entropy_bound.py``): a step takes the longest run of lowest-entropy proposals whose
entropy sum less its largest stays within the bound (at least one), the positions transformers' ``EntropyBoundSampler``
accepts; a larger bound never takes fewer; only candidates count; deciding rows at once takes what each row alone
takes, each row with its own bound."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    EntropyBoundSampler,
    EntropyBoundSamplerConfig,
)

from redraft.errors import InvalidRequest
from redraft.workers.policies.entropy_bound import EntropyBound

SEEDS = st.integers(0, 2**31)
BOUNDS = st.floats(0.01, 5.0)
# Entropies and bounds in eighths: their sums are exact in float32, so "within the bound" has one answer.
EIGHTHS = st.integers(0, 40).map(lambda i: i / 8)
POSITIVE_EIGHTHS = st.integers(1, 40).map(lambda i: i / 8)


def longest_within(entropies: list[float], bound: float) -> int:
    """How many of the lowest entropies the rule takes: the longest sorted prefix with sum - max <= bound."""
    ordered, k = sorted(entropies), 0
    while k < len(ordered) and sum(ordered[: k + 1]) - ordered[k] <= bound:
        k += 1
    return k


@settings(max_examples=100, deadline=None)
@given(bound=BOUNDS, data=st.data(), seed=SEEDS)
def test_rows_at_once_take_what_each_row_alone_takes(rows_take_what_each_row_alone_takes, bound, data, seed):
    rows_take_what_each_row_alone_takes(EntropyBound(bound), data, seed)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), seed=SEEDS)
def test_rows_with_their_own_bounds_take_what_each_alone_takes(rows_take_what_each_row_alone_takes, data, seed):
    rows_take_what_each_row_alone_takes(st.builds(EntropyBound, BOUNDS), data, seed)


@pytest.mark.parametrize("bound", [0.0, -1.0, -math.inf, math.nan])
def test_the_bound_must_be_positive(bound):
    with pytest.raises(InvalidRequest, match="entropy_bound must be positive"):
        EntropyBound(bound)


@settings(max_examples=100, deadline=None)
@given(entropy=st.lists(EIGHTHS, min_size=1, max_size=24), bound=POSITIVE_EIGHTHS)
def test_a_step_takes_the_longest_lowest_entropy_run_within_the_bound(entropy, bound):
    order, k = EntropyBound(bound).choose(torch.zeros(len(entropy)), torch.tensor(entropy), 1, torch.Generator())
    assert sorted(order.tolist()) == list(range(len(entropy)))
    ranked = [entropy[i] for i in order.tolist()]
    assert ranked == sorted(entropy)  # lowest entropy first
    assert 1 <= k <= len(entropy)  # the lowest always qualifies: its left side is 0
    assert sum(ranked[:k]) - max(ranked[:k]) <= bound  # the bound is respected
    if k < len(entropy):  # and no longer run respects it
        assert sum(ranked[: k + 1]) - max(ranked[: k + 1]) > bound
    assert k == longest_within(entropy, bound)


@settings(max_examples=100, deadline=None)
@given(entropy=st.lists(st.floats(0.0, 8.0), min_size=1, max_size=24), a=BOUNDS, b=BOUNDS)
def test_a_larger_bound_never_takes_fewer(entropy, a, b):
    e = torch.tensor(entropy)
    low, high = EntropyBound(min(a, b)), EntropyBound(max(a, b))
    assert low.choose(e, e, 1, torch.Generator())[1] <= high.choose(e, e, 1, torch.Generator())[1]
    cand, n = torch.ones(1, len(entropy), dtype=torch.bool), [len(entropy)]
    k_low = EntropyBound.choose_rows([low], e[None], e[None], cand, torch.ones(1), [torch.Generator()], n)[1]
    k_high = EntropyBound.choose_rows([high], e[None], e[None], cand, torch.ones(1), [torch.Generator()], n)[1]
    assert int(k_low[0]) <= int(k_high[0])


@settings(max_examples=50, deadline=None)
@given(length=st.integers(1, 32), vocab=st.integers(2, 64), scale=st.floats(0.1, 8.0), bound=BOUNDS, seed=SEEDS)
def test_the_positions_taken_are_those_transformers_sampler_accepts(length, vocab, scale, bound, seed):
    logits = torch.randn(1, length, vocab, generator=torch.Generator().manual_seed(seed)) * scale
    sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=bound), length, vocab, 8)
    sampler.accept_canvas(torch.zeros(1, length, dtype=torch.long), torch.ones(1, length, dtype=torch.long), logits, 0)
    entropy = torch.distributions.Categorical(logits=logits[0]).entropy()  # (length,)
    order, k = EntropyBound(bound).choose(torch.zeros(length), entropy, 1, torch.Generator())
    assert sorted(order[:k].tolist()) == sampler.accepted_token_mask[0].nonzero().squeeze(1).tolist()


@settings(max_examples=100, deadline=None)
@given(data=st.data(), bound=POSITIVE_EIGHTHS)
def test_rows_at_once_count_only_their_candidates(data, bound):
    """Positions off the candidates count for nothing, however low their entropy; a row with none takes none."""
    m, width = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 16))
    entropy = torch.tensor(data.draw(st.lists(EIGHTHS, min_size=m * width, max_size=m * width))).view(m, width)
    cand = torch.tensor(data.draw(st.lists(st.booleans(), min_size=m * width, max_size=m * width))).view(m, width)
    rules, generators = [EntropyBound(bound)] * m, [torch.Generator() for _ in range(m)]
    key, k = EntropyBound.choose_rows(
        rules,
        torch.zeros(m, width),
        torch.where(cand, entropy, 0.0),
        cand,
        torch.ones(m),
        generators,
        cand.sum(1).tolist(),
    )
    assert k.tolist() == [longest_within(entropy[j][cand[j]].tolist(), bound) for j in range(m)]
    assert torch.equal(key[cand], -entropy[cand])  # lowest entropy first
