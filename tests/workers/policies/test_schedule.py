"""LLaDA's acceptance (``schedule.py``): a block's masks are spread evenly over its planned steps (what each step takes
sums to the masked count, never more than remain), most confident first or in a random order drawn from the row's
generator alone; deciding rows at once takes what each row alone takes."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.workers.policies.group import ranks
from redraft.workers.policies.schedule import Schedule

SEEDS = st.integers(0, 2**31)


@settings(max_examples=100, deadline=None)
@given(random_order=st.booleans(), data=st.data(), seed=SEEDS)
def test_rows_at_once_take_what_each_row_alone_takes(rows_take_what_each_row_alone_takes, random_order, data, seed):
    rows_take_what_each_row_alone_takes(Schedule(random_order), data, seed)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), seed=SEEDS)
def test_rows_in_random_and_confidence_order_together_take_what_each_alone_takes(
    rows_take_what_each_row_alone_takes, data, seed
):
    rows_take_what_each_row_alone_takes(st.builds(Schedule, st.booleans()), data, seed)


@settings(max_examples=100, deadline=None)
@given(masked=st.integers(0, 48), steps=st.integers(1, 48), random_order=st.booleans(), seed=SEEDS)
def test_a_blocks_masks_are_spread_evenly_over_its_planned_steps(masked, steps, random_order, seed):
    rule, generator = Schedule(random_order), torch.Generator().manual_seed(seed)
    left, taken = masked, []
    for step in range(steps):
        order, k = rule.choose(torch.rand(left, generator=generator), None, steps - step, generator)
        assert sorted(order.tolist()) == list(range(left))  # every undecided position, once
        assert 0 <= k <= left and (k > 0 or left == 0)  # never more than remain; a step with masks left takes one
        taken.append(k)
        left -= k
    assert sum(taken) == masked and left == 0  # the block is complete on its last planned step
    assert taken == sorted(taken, reverse=True) and max(taken) - min(taken) <= 1  # evenly: ceil first


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 32), steps_left=st.integers(-3, 1), random_order=st.booleans(), seed=SEEDS)
def test_a_step_at_or_past_the_last_planned_one_takes_everything_left(n, steps_left, random_order, seed):
    generator = torch.Generator().manual_seed(seed)
    _, k = Schedule(random_order).choose(torch.rand(n, generator=generator), None, steps_left, generator)
    assert k == n


@settings(max_examples=100, deadline=None)
@given(conf=st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), min_size=1, max_size=24))
def test_most_confident_first_ties_leftmost_first(conf):
    order, _ = Schedule().choose(torch.tensor(conf), None, 1, torch.Generator().manual_seed(0))
    assert order.tolist() == sorted(range(len(conf)), key=lambda i: (-conf[i], i))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 24), seed=SEEDS, data=st.data())
def test_a_random_order_comes_from_the_generator_not_the_confidences(n, seed, data):
    unit = st.floats(0.0, 1.0, allow_nan=False)
    a = torch.tensor(data.draw(st.lists(unit, min_size=n, max_size=n)))
    b = torch.tensor(data.draw(st.lists(unit, min_size=n, max_size=n)))
    rule = Schedule(random_order=True)
    first, _ = rule.choose(a, None, 2, torch.Generator().manual_seed(seed))
    again, _ = rule.choose(b, None, 2, torch.Generator().manual_seed(seed))
    assert first.tolist() == again.tolist()  # the same seed, the same order, whatever the model's confidences
    assert sorted(first.tolist()) == list(range(n))


@st.composite
def blocks(draw):
    """Rows of one group: each row's block of ``width`` positions with its own masks and planned steps."""
    m, width = draw(st.integers(1, 4)), draw(st.integers(1, 16))
    cand = torch.tensor(draw(st.lists(st.booleans(), min_size=m * width, max_size=m * width))).view(m, width)
    steps = draw(st.lists(st.integers(1, 10), min_size=m, max_size=m))
    return cand, steps, draw(st.lists(st.booleans(), min_size=m, max_size=m))


@settings(max_examples=100, deadline=None)
@given(block=blocks(), seed=SEEDS)
def test_rows_at_once_decide_each_blocks_masks_over_its_planned_steps(block, seed):
    """The group steps' loop: each step takes the ``k`` best-ranked candidates of each row (``choose_rows``); every
    row's masks are decided by its last planned step, never more per step than remain, and ``conf`` is left as it
    was (a random row's key is a copy)."""
    cand, steps, random_order = block
    m, width = cand.shape
    masked = cand.sum(1).tolist()
    rules = [Schedule(r) for r in random_order]
    generators = [torch.Generator().manual_seed(seed + j) for j in range(m)]
    conf_generator = torch.Generator().manual_seed(seed)
    undecided, decided = cand.clone(), [0] * m
    for step in range(max(steps)):
        conf = torch.where(undecided, torch.rand(m, width, generator=conf_generator), -1.0)
        before = conf.clone()
        steps_left = torch.tensor([s - step for s in steps])
        key, k = Schedule.choose_rows(rules, conf, None, undecided, steps_left, generators, undecided.sum(1).tolist())
        assert torch.equal(conf, before)
        take = undecided & (ranks(torch.where(undecided, key, float("-inf"))) < k.unsqueeze(1))
        for j in range(m):
            assert int(k[j]) <= int(undecided[j].sum())  # never more than remain
            rest = conf[j][undecided[j] & ~take[j]]
            if not random_order[j] and take[j].any() and rest.numel():  # most confident first
                assert conf[j][take[j]].min() >= rest.max()
            decided[j] += int(take[j].sum())
            if step == steps[j] - 1:
                assert not (undecided[j] & ~take[j]).any()  # complete on its last planned step
        undecided &= ~take
    assert decided == masked
