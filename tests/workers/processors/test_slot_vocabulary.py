"""``slot_vocabulary.py`` (the apply side of ``constraints/vocab.py``): at a slot with a ``vocab``, only that
vocabulary and EMPTY keep their logits, in the window the logits are for; other positions are untouched."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.api.schemas import GenerateJobCreate
from redraft.api.submit import compile_request
from redraft.families import load_model_info, load_tokenizer, special_ids
from redraft.settings import DEFAULT_MODEL_DIR, Settings
from redraft.workers.processors.slot_vocabulary import SlotVocabulary


@settings(max_examples=20, deadline=None)
@given(vocab=st.sampled_from(["digits", "letters", "no_newline", "ascii"]), offset=st.integers(0, 6))
def test_a_vocab_slot_keeps_only_its_vocabulary(vocab, offset):
    info = load_model_info("redraft-tiny", DEFAULT_MODEL_DIR)
    tokenizer = load_tokenizer(DEFAULT_MODEL_DIR)
    template = f'Code: {{{{ slot("code", max_tokens=4, vocab="{vocab}") }}}} done.'
    canvas = compile_request(GenerateJobCreate(kind="generate", template=template), info, Settings())
    proc = SlotVocabulary.for_canvas(canvas, tokenizer, info, special_ids(info))
    ((positions, allowed),) = proc.masks_per_row[0]
    assert positions == canvas.slot_positions(0) and bool(allowed[info.empty_id])
    width = canvas.length - offset
    logits = torch.randn(1, width, info.vocab_size, generator=torch.Generator().manual_seed(offset))
    before = logits.clone()
    x = torch.tensor([canvas.token_ids])
    out = proc(logits, x, x == info.mask_id, [0], offset=offset)
    for i in range(width):
        if offset + i in positions:
            assert torch.isneginf(out[0, i, ~allowed]).all() and torch.equal(out[0, i, allowed], before[0, i, allowed])
        else:
            assert torch.equal(out[0, i], before[0, i])
