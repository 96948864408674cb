"""Absorbing (masked) diffusion (``mask_noise.py``): a row's block plan, and the group step's per-row failures (the
sampler's invariants on this noise are properties in tests/workers/test_sampler.py)."""

from __future__ import annotations

import torch

from redraft.workers.policies.mask_noise import plan, step_group
from redraft.workers.sampler import Row, SamplerConfig

MASK = 1


def test_plan_shares_the_step_budget_between_blocks():
    schedule = plan(list(range(10)) + list(range(40, 50)), steps=8, block_size=16)
    assert schedule == [(0, 16, 4), (32, 48, 3), (48, 64, 1)]  # 10, 8 and 2 masks
    assert plan([3, 4, 5], steps=10, block_size=None) == [(0, 6, 3)]  # never more steps than masks


class Broken:
    masks_only = True

    def __call__(self, logits, x, free, rows, offset=0):
        raise RuntimeError("this processor is broken")


def test_one_rows_failing_processor_fails_that_row_only():
    """In one group step, the row whose processor raises gets its error back and is left as it was; the others
    commit as usual."""
    x = torch.tensor([5, MASK, MASK, 6, MASK, MASK])
    fixed = x != MASK
    cfg = SamplerConfig(steps=2)
    rows = [Row(x, fixed, cfg, torch.Generator().manual_seed(i), MASK, processors=[Broken()] if i == 1 else [])
            for i in range(3)]
    for r in rows:
        assert r.active
    raw = torch.randn(3, 6, 50, generator=torch.Generator().manual_seed(0))
    errors = step_group(rows, raw)
    assert errors[0] is None and errors[2] is None and "broken" in str(errors[1])
    assert torch.equal(rows[1].x, x) and rows[1].step == 0 and rows[1].history == []
    for r in (rows[0], rows[2]):
        assert r.step == 1 and len(r.history[0].positions) == 2  # ceil(4 masks / 2 steps)
        assert torch.equal(r.x[fixed], x[fixed]) and int((r.x == MASK).sum()) == 2
