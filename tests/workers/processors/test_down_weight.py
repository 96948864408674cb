"""``down_weight.py`` (the ``avoid`` rounds' soft guide): exactly ``penalty`` off the chosen tokens at the chosen
positions inside the window, nothing else; it declares ``masks_only`` only while it has nothing to change."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.workers.processors.down_weight import DownWeight


@settings(max_examples=50, deadline=None)
@given(chosen=st.dictionaries(st.integers(0, 20), st.sets(st.integers(0, 15), min_size=1), max_size=5),
       offset=st.integers(0, 8), penalty=st.floats(0.5, 10.0))
def test_the_penalty_lands_where_it_was_asked_for(chosen, offset, penalty):
    width, vocab = 8, 16
    guide = DownWeight(penalty)
    assert guide.masks_only
    guide.tokens = {p: set(ids) for p, ids in chosen.items()}
    assert guide.masks_only == (not chosen)
    logits = torch.randn(1, width, vocab, generator=torch.Generator().manual_seed(offset))
    expected = logits.clone()
    for p, ids in chosen.items():
        if offset <= p < offset + width:
            expected[0, p - offset, sorted(ids)] -= penalty
    out = guide(logits, torch.zeros(1, 24, dtype=torch.long), torch.ones(1, 24, dtype=torch.bool), [0], offset=offset)
    assert torch.equal(out, expected)
