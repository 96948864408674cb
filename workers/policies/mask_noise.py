"""Absorbing (masked) diffusion: an undecided position holds ``[MASK]`` until a step commits it.

The model reads the whole canvas every step. Candidates are the masked positions of the row's current
block (LLaDA's semi-autoregressive blocks, left to right; one block when ``block_size`` is None); the
acceptance rule picks how many of the proposals to commit, in its order, skipping any a processor's
``admissible`` refuses; what is not committed stays masked for a later step. ReMDM-style self-correction
may send a few low-confidence earlier commits of the block back to ``[MASK]``.
"""

from __future__ import annotations

import torch

from redraft.errors import ConstraintError


def plan(free: list[int], steps: int, block_size: int | None) -> list[tuple[int, int, int]]:
    """A row's schedule: for each block, left to right, (block start, block end, steps for it).

    Steps are shared across blocks in proportion to their masks (a block of a long gap gets more
    steps than a block with one mask); within a block each step commits ``ceil(masks left / steps
    left)``, so the masks are spread evenly (LLaDA's linear schedule) and anything a step could not
    commit (a refused or blocked proposal, a re-masked token) is picked up by the steps after it.
    """
    if not free:
        return []
    if block_size is None:
        blocks = {0: len(free)}
        bounds = {0: (0, free[-1] + 1)}
    else:
        blocks: dict[int, int] = {}
        for p in free:
            blocks[p // block_size] = blocks.get(p // block_size, 0) + 1
        bounds = {b: (b * block_size, (b + 1) * block_size) for b in blocks}
    total = len(free)
    return [(*bounds[b], min(blocks[b], max(1, round(steps * blocks[b] / total)))) for b in sorted(blocks)]


class MaskNoise:
    feedback = False  # the model takes no logits back

    def __init__(self, row) -> None:
        self.row = row
        self.blocks = plan(row.free.nonzero().squeeze(1).tolist(), row.cfg.steps, row.cfg.block_size)
        self.block, self.step_in_block, self.remask_left = 0, 0, row.cfg.remask_budget

    # ------------------------------------------------------------------ what the model reads

    @property
    def active(self) -> bool:
        """Whether the row still has masks to write (moves past finished blocks)."""
        while self.block < len(self.blocks) and not self._block_masks().any():
            self.block, self.step_in_block = self.block + 1, 0
        return self.block < len(self.blocks)

    def window(self) -> tuple[int, int]:
        return 0, self.row.x.numel()  # the whole canvas, every step

    def model_input(self) -> torch.Tensor:
        return self.row.x  # (L,) masks included: the model was trained on them

    def _in_block(self) -> torch.Tensor:
        lo, hi, _ = self.blocks[self.block]
        return (self.row.positions >= lo) & (self.row.positions < hi)  # (L,)

    def _block_masks(self) -> torch.Tensor:
        row = self.row
        return (row.x == row.mask_id) & row.free & self._in_block()  # (L,)

    def candidates(self) -> torch.Tensor:
        return self._block_masks().nonzero().squeeze(1)  # (n,) canvas positions (the window starts at 0)

    def schedule_position(self) -> tuple[int, int]:
        return self.row.step, self.row.cfg.steps

    def draw(self, scaled: torch.Tensor | None, processed: torch.Tensor) -> torch.Tensor:
        """A proposal per candidate from its processed logits (n, V): argmax, or a categorical sample at
        the temperature by inverting the CDF with one uniform per position from the row's own generator
        (``right=True`` never lands on a zero-probability token). ``scaled`` is processed / temperature."""
        if scaled is None:
            return processed.argmax(-1)  # (n,)
        probs = scaled.softmax(-1)  # (n, V)
        blocked = ~torch.isfinite(processed.max(-1).values)  # (n,) nothing allowed at all: never sampled
        probs[blocked] = 1.0
        cdf = probs.cumsum(-1)  # (n, V)
        u = torch.rand(cdf.shape[0], 1, generator=self.row.generator).to(cdf.device) * cdf[:, -1:]  # (n, 1)
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(cdf.shape[-1] - 1)  # (n,)

    # ------------------------------------------------------------------ choose, commit, correct

    def take(self, cand: torch.Tensor, proposal: torch.Tensor, allowed: torch.Tensor, conf: torch.Tensor,
             entropy: torch.Tensor | None, processed: torch.Tensor):
        row = self.row
        block_steps = self.blocks[self.block][2]
        order, k = row.accept.choose(conf, entropy, block_steps - self.step_in_block, row.generator)
        last_planned = row.accept.planned and self.step_in_block >= block_steps - 1
        in_block = self._in_block()
        pos_out, tok_out, conf_out = row.commit(order, k, cand, proposal, allowed, conf)
        if not pos_out and (last_planned or not row.accept.planned):
            raise ConstraintError(
                f"no admissible token for positions {cand.tolist()[:8]} under the job's targets; "
                f"loosen the targets or give the slot more room"
            )
        remasked: list[tuple[int, int]] = []
        if not last_planned and bool(self._block_masks().any()):
            remasked = self.self_correct(in_block, pos_out)
        self.step_in_block += 1
        return pos_out, tok_out, conf_out, remasked

    def self_correct(self, in_block: torch.Tensor, just_committed: list[int]) -> list[tuple[int, int]]:
        """ReMDM-style remasking: send the least confident earlier commits of this block back to [MASK].

        At most half as many as this step committed (so the canvas keeps moving) and never more than the
        run's remaining budget; never a fixed position, never a token committed in this very step, never
        on a block's last planned step (so the block still finishes on schedule).
        """
        row = self.row
        n = min(self.remask_left, (len(just_committed) + 1) // 2)
        if n <= 0:
            return []
        eligible = row.free & in_block & (row.x != row.mask_id) & (row.confidence < row.cfg.remask_below)  # (L,)
        eligible[just_committed] = False
        where = eligible.nonzero().squeeze(1)
        if where.numel() == 0:
            return []
        lowest = where[row.confidence[where].argsort(stable=True)[:n]]
        out = [(int(p), int(row.x[p])) for p in lowest]
        row.x[lowest] = row.mask_id
        row.confidence[lowest] = 0.0
        self.remask_left -= len(out)
        return out
