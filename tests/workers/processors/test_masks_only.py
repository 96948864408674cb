"""A processor that says ``masks_only`` only ever sets logits to -inf: the group step then reads the model's own
logit of an allowed token from the processed logits instead of keeping a copy (workers/policies/mask_noise.py),
so a processor that said it and changed a value would change confidences silently. Checked here on real
canvases, against random logits and random partial canvases."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.constraints.generate import compile_generate
from redraft.constraints.safety import parse_safety
from redraft.constraints.templates import render_template
from redraft.families import special_ids
from redraft.workers.processors.down_weight import DownWeight
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.processors.safety_guard import SafetyGuard
from redraft.workers.processors.slot_targets import SlotTargets, constrained_slots
from redraft.workers.processors.slot_vocabulary import SlotVocabulary

TEMPLATE = ('Code: {{ slot("c", max_tokens=5, vocab="digits") }}. Say {{ slot("s", max_tokens=8) }}. '
            'Pick {{ slot("p", max_tokens=3, choices=["yes", "no"]) }}.')


def processors(canvas, tokenizer, info):
    special = special_ids(info)
    guard = SafetyGuard.for_canvas(canvas, parse_safety({"banned": ["bomb", "the cat"], "pii": True}), tokenizer, info)
    down = DownWeight(3.0)
    return [ForbidTokens(special, info.vocab_size), SlotVocabulary.for_canvas(canvas, tokenizer, info, special), guard,
            down], down, SlotTargets({0: constrained_slots(canvas, tokenizer, info, special)}, info.empty_id)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), decided=st.floats(0.0, 0.9), data=st.data())
def test_processors_that_say_masks_only_change_no_allowed_logit(tiny_model, seed, decided, data):
    info, tokenizer = tiny_model
    canvas = compile_generate(render_template(TEMPLATE, {}, 8, 64), tokenizer, info)
    masks, down, targets = processors(canvas, tokenizer, info)
    g = torch.Generator().manual_seed(seed)
    L = len(canvas.token_ids)
    x = torch.tensor([canvas.token_ids])  # (1, L)
    fixed = torch.tensor(canvas.fixed)
    in_text_slot = torch.tensor([canvas.slots[k].name == "s" if k >= 0 else False for k in canvas.slot_of])  # (L,)
    written = in_text_slot & (torch.rand(L, generator=g) < decided)  # some free-text positions hold a token already
    x[0, written] = torch.randint(10, 200, (int(written.sum()),), generator=g)
    free = (x == info.mask_id) & ~fixed  # (1, L)
    for proc in [*masks, targets]:
        raw = 3 * torch.randn(1, L, info.vocab_size, generator=g)
        out = proc(raw.clone(), x, free, [0], offset=0)
        changed = out != raw
        if getattr(proc, "masks_only", False):
            assert bool((out[changed] == float("-inf")).all()), type(proc).__name__
        else:  # the structure target writes the forced token's logit: it must not claim masks_only
            assert isinstance(proc, SlotTargets), type(proc).__name__
            assert bool((changed & (out > float("-inf"))).any())
    # A down-weight with tokens to lower changes values, and says so.
    down.tokens[int((~fixed).nonzero()[0])] = {42}
    assert not down.masks_only
