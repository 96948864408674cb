"""What both group steps share (``group.py``): a group's candidates listed row after row, per-row values spread
over them and laid back out, and each position's place in its row's order."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.workers.policies.group import Candidates, ranks


@st.composite
def masks(draw):
    b, width = draw(st.integers(1, 5)), draw(st.integers(1, 16))
    return torch.tensor(draw(st.lists(st.booleans(), min_size=b * width, max_size=b * width))).view(b, width)


@settings(max_examples=100, deadline=None)
@given(cand=masks(), vocab=st.sampled_from([3, 1000, 300_000]))
def test_candidates_are_the_mask_row_after_row(cand, vocab):
    b, width = cand.shape
    raw = torch.empty((b, width, vocab), dtype=torch.float32)
    c = Candidates.of(cand, raw)
    rows, pos = cand.nonzero(as_tuple=True)
    assert c.rows.tolist() == rows.tolist() and c.pos_h == pos.tolist() and c.n == int(cand.sum())
    assert c.counts == cand.sum(1).tolist() and c.flat.tolist() == (rows * width + pos).tolist()
    for j in range(b):
        assert c.pos_h[c.mine(j)] == cand[j].nonzero().squeeze(1).tolist()
    spread = c.spread([float(j) for j in range(b)])  # (N,) each candidate carries its row's value
    assert spread.tolist() == [float(r) for r in rows.tolist()]
    laid = c.padded(spread, -1.0, b)
    assert torch.equal(laid, torch.where(cand, torch.arange(b, dtype=torch.float32).unsqueeze(1), -1.0))
    chunks = list(c.chunks())
    assert [a for a, _ in chunks] == list(range(0, c.n, c.chunk)) and (not chunks or chunks[-1][1] == c.n)
    assert c.chunk * vocab * 4 <= max(2 * 1024 * 1024, vocab * 4)  # a CPU pass stays within its chunk bytes


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.lists(st.integers(-5, 5), min_size=6, max_size=6), min_size=1, max_size=4))
def test_ranks_are_places_in_descending_order_ties_left_first(values):
    ranked = torch.tensor(values, dtype=torch.float32)
    place = ranks(ranked)
    for row, places in zip(values, place.tolist()):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))
        assert [places[i] for i in order] == list(range(len(row)))
