"""What the acceptance rules' tests share (``test_schedule.py``, ``test_threshold.py``, ``test_entropy_bound.py``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import strategies as st

from redraft.workers.policies.group import ranks


@st.composite
def groups(draw):
    """(m, L) confidences and entropies (distinct values: no ties to break), candidate masks, steps left."""
    m, length = draw(st.integers(1, 4)), draw(st.integers(1, 24))
    values = draw(st.lists(st.integers(0, 10**6), min_size=2 * m * length, max_size=2 * m * length, unique=True))
    v = torch.tensor(values, dtype=torch.float32).view(2, m, length) / 10**6
    cand = torch.tensor(draw(st.lists(st.booleans(), min_size=m * length, max_size=m * length))).view(m, length)
    steps_left = torch.tensor(draw(st.lists(st.integers(1, 12), min_size=m, max_size=m)))
    return v[0], v[1] * 3, cand, steps_left


def _rows_at_once_take_what_each_row_alone_takes(rule, data, seed: int) -> None:
    """For a rule, deciding rows at once (``choose_rows``, what the group steps call) takes the same proposals, as
    many and in the same order, as deciding each row alone (``choose``), random orders included. ``rule`` is one
    rule for every row, or a strategy of rules of one kind drawn for each row (rows of one group differ)."""
    conf, entropy, cand, steps_left = data.draw(groups())
    m = conf.shape[0]
    rules = [data.draw(rule) for _ in range(m)] if isinstance(rule, st.SearchStrategy) else [rule] * m
    counts = cand.sum(1).tolist()
    at_once = [torch.Generator().manual_seed(seed + j) for j in range(m)]
    key, k = type(rules[0]).choose_rows(
        rules,
        torch.where(cand, conf, -1.0),
        torch.where(cand, entropy, float("inf")),
        cand,
        steps_left,
        at_once,
        counts,
    )
    place = ranks(torch.where(cand, key, float("-inf")))  # (m, L)
    for j in range(m):
        if not counts[j]:
            continue
        positions = cand[j].nonzero().squeeze(1)
        order, n = rules[j].choose(
            conf[j, positions], entropy[j, positions], int(steps_left[j]), torch.Generator().manual_seed(seed + j)
        )
        assert int(k[j]) == n
        alone = positions[order].tolist()  # the row's candidates in its own order
        assert sorted(positions.tolist(), key=lambda p: int(place[j, p])) == alone


@pytest.fixture(scope="session")
def rows_take_what_each_row_alone_takes():
    """``check(rule, data, seed)``: draws a group from hypothesis' ``data`` and asserts that ``choose_rows`` over
    its rows agrees with ``choose`` on each row alone (``rule``: a rule, or a strategy drawing one per row)."""
    return _rows_at_once_take_what_each_row_alone_takes
