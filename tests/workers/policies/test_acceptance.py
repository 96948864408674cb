"""The acceptance rules (``schedule.py``, ``threshold.py``, ``entropy_bound.py``): for every rule, deciding rows at
once (``choose_rows``, what the group steps call) takes the same proposals, as many and in the same order, as
deciding each row alone (``choose``), random orders included."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.workers.policies.entropy_bound import EntropyBound
from redraft.workers.policies.group import ranks
from redraft.workers.policies.schedule import Schedule
from redraft.workers.policies.threshold import Threshold

RULES = st.one_of(st.builds(Schedule, st.booleans()), st.builds(Threshold, st.floats(0.01, 1.0)),
                  st.builds(EntropyBound, st.floats(0.01, 5.0)))


@st.composite
def groups(draw):
    """(m, L) confidences and entropies (distinct values: no ties to break), candidate masks, steps left."""
    m, length = draw(st.integers(1, 4)), draw(st.integers(1, 24))
    values = draw(st.lists(st.integers(0, 10**6), min_size=2 * m * length, max_size=2 * m * length, unique=True))
    v = torch.tensor(values, dtype=torch.float32).view(2, m, length) / 10**6
    cand = torch.tensor(draw(st.lists(st.booleans(), min_size=m * length, max_size=m * length))).view(m, length)
    steps_left = torch.tensor(draw(st.lists(st.integers(1, 12), min_size=m, max_size=m)))
    return v[0], v[1] * 3, cand, steps_left


@settings(max_examples=150, deadline=None)
@given(rule=RULES, group=groups(), seed=st.integers(0, 2**31))
def test_rows_at_once_take_what_each_row_alone_takes(rule, group, seed):
    conf, entropy, cand, steps_left = group
    m = conf.shape[0]
    counts = cand.sum(1).tolist()
    at_once = [torch.Generator().manual_seed(seed + j) for j in range(m)]
    key, k = type(rule).choose_rows([rule] * m, torch.where(cand, conf, -1.0), torch.where(cand, entropy, float("inf")),
                                    cand, steps_left, at_once, counts)
    place = ranks(torch.where(cand, key, float("-inf")))  # (m, L)
    for j in range(m):
        if not counts[j]:
            continue
        positions = cand[j].nonzero().squeeze(1)
        order, n = rule.choose(conf[j, positions], entropy[j, positions], int(steps_left[j]),
                               torch.Generator().manual_seed(seed + j))
        assert int(k[j]) == n
        alone = positions[order].tolist()  # the row's candidates in its own order
        assert sorted(positions.tolist(), key=lambda p: int(place[j, p])) == alone
