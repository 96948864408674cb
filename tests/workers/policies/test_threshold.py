"""Fast-dLLM's acceptance (``threshold.py``): a step takes exactly the proposals at or above the threshold, most
confident first, and at least one; a lower threshold never takes fewer; only candidates count; deciding rows at once
takes what each row alone takes, each row with its own threshold."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.errors import InvalidRequest
from redraft.workers.policies.threshold import Threshold

SEEDS = st.integers(0, 2**31)
THRESHOLDS = st.floats(0.01, 1.0)
# Confidences on a grid, so that many sit exactly on a threshold drawn from the same grid (ties and equality).
GRID = st.integers(0, 8).map(lambda i: i / 8)


@settings(max_examples=100, deadline=None)
@given(threshold=THRESHOLDS, data=st.data(), seed=SEEDS)
def test_rows_at_once_take_what_each_row_alone_takes(rows_take_what_each_row_alone_takes, threshold, data, seed):
    rows_take_what_each_row_alone_takes(Threshold(threshold), data, seed)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), seed=SEEDS)
def test_rows_with_their_own_thresholds_take_what_each_alone_takes(rows_take_what_each_row_alone_takes, data, seed):
    rows_take_what_each_row_alone_takes(st.builds(Threshold, THRESHOLDS), data, seed)


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.0000001, 2.0, math.nan, math.inf, -math.inf])
def test_a_threshold_is_a_confidence_in_the_half_open_unit_interval(threshold):
    with pytest.raises(InvalidRequest, match="threshold must be a confidence in"):
        Threshold(threshold)


@given(threshold=st.floats(0.0, 1.0, exclude_min=True))
def test_every_confidence_in_the_interval_is_a_threshold(threshold):
    assert Threshold(threshold).threshold == threshold


@settings(max_examples=100, deadline=None)
@given(conf=st.lists(GRID, min_size=1, max_size=24), threshold=GRID.filter(lambda t: t > 0))
def test_a_step_takes_exactly_the_proposals_at_or_above_the_threshold_and_at_least_one(conf, threshold):
    order, k = Threshold(threshold).choose(torch.tensor(conf), None, 1, torch.Generator())
    assert order.tolist() == sorted(range(len(conf)), key=lambda i: (-conf[i], i))  # most confident first, stably
    reaching = {i for i, c in enumerate(conf) if c >= threshold}
    if reaching:
        assert set(order[:k].tolist()) == reaching
    else:  # none reaches it: the most confident proposal is taken alone
        assert k == 1 and conf[int(order[0])] == max(conf)


@settings(max_examples=100, deadline=None)
@given(conf=st.lists(GRID, min_size=1, max_size=24), a=THRESHOLDS, b=THRESHOLDS)
def test_a_lower_threshold_never_takes_fewer(conf, a, b):
    x, cand = torch.tensor(conf), torch.ones(1, len(conf), dtype=torch.bool)

    def taken(threshold: float) -> tuple[int, int]:
        """How many a step takes: one row alone, and the same row among rows."""
        rule = Threshold(threshold)
        _, alone = rule.choose(x, None, 1, torch.Generator())
        _, k = Threshold.choose_rows([rule], x[None], None, cand, torch.ones(1), [torch.Generator()], [len(conf)])
        return alone, int(k[0])

    low, high = taken(min(a, b)), taken(max(a, b))
    assert low[0] >= high[0] and low[1] >= high[1]


@settings(max_examples=100, deadline=None)
@given(data=st.data(), threshold=GRID.filter(lambda t: t > 0))
def test_rows_at_once_count_only_their_candidates(data, threshold):
    """Positions off the candidates count for nothing, however confident; a row with none still takes one (the
    caller takes only candidates)."""
    m, width = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 16))
    conf = torch.tensor(data.draw(st.lists(GRID, min_size=m * width, max_size=m * width))).view(m, width)
    cand = torch.tensor(data.draw(st.lists(st.booleans(), min_size=m * width, max_size=m * width))).view(m, width)
    rules, generators = [Threshold(threshold)] * m, [torch.Generator() for _ in range(m)]
    key, k = Threshold.choose_rows(
        rules, torch.where(cand, conf, 1.0), None, cand, torch.ones(m), generators, cand.sum(1).tolist()
    )
    expected = [
        max(1, sum(1 for c, on in zip(conf[j].tolist(), cand[j].tolist()) if on and c >= threshold)) for j in range(m)
    ]
    assert k.tolist() == expected
    assert torch.equal(key[cand], conf[cand])  # the key is the confidence
