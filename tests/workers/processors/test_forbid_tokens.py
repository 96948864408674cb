"""``forbid_tokens.py``: the special ids' columns are -inf at every position of the window and nothing else moves."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.workers.processors.forbid_tokens import ForbidTokens


@settings(max_examples=50, deadline=None)
@given(ids=st.lists(st.integers(-3, 40), max_size=6), b=st.integers(1, 3), width=st.integers(1, 8))
def test_only_the_listed_columns_are_forbidden(ids, b, width):
    vocab = 32
    logits = torch.randn(b, width, vocab, generator=torch.Generator().manual_seed(len(ids)))
    before = logits.clone()
    out = ForbidTokens(ids, vocab)(logits, torch.zeros(b, width, dtype=torch.long), torch.ones(b, width, dtype=torch.bool),
                                   list(range(b)))
    listed = sorted({i for i in ids if 0 <= i < vocab})  # ids outside the vocabulary are ignored
    assert torch.isneginf(out[..., listed]).all()
    others = [i for i in range(vocab) if i not in listed]
    assert torch.equal(out[..., others], before[..., others])
