"""Hard structure targets during denoising: every constrained slot commits only tokens that lie on
its best accepted path, so the canvas always stays completable (no dead ends, no retries).

At each step, for each constrained slot still holding masks, ``best_path`` runs dynamic programming
over (slot position, automaton state) on the current log-probabilities, keeping the tokens already
committed; each free position is then allowed exactly its path token. The sampler ranks commits by
the model's own probability of those tokens, so the most certain parts of the path land first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

from redraft.constraints.automaton import TokenAutomaton, compile_target
from redraft.constraints.canvas import Canvas
from redraft.errors import ConstraintError
from redraft.families import ModelInfo
from redraft.workers.slot_decoder import best_paths


@dataclass(frozen=True)
class ConstrainedSlot:
    name: str
    positions: list[int]  # contiguous canvas positions of the slot
    automaton: TokenAutomaton
    min_tokens: int


def constrained_slots(canvas: Canvas, tokenizer: Tokenizer, info: ModelInfo, special: list[int]) -> list[ConstrainedSlot]:
    """Compile (cached) the automaton of every slot that has a hard target."""
    out = []
    for index, slot in enumerate(canvas.slots):
        if slot.target is None:
            continue
        automaton = compile_target(slot.target, tokenizer, info.eos_id, set(special))
        out.append(ConstrainedSlot(slot.name, canvas.slot_positions(index), automaton, slot.min_tokens))
    return out


class SlotTargets:
    """Logits processor: at free positions of constrained slots, allow only the best path's token."""

    def __init__(self, slots_per_row: dict[int, list[ConstrainedSlot]], empty_id: int) -> None:
        self.slots_per_row = slots_per_row  # batch row -> its constrained slots
        self.empty_id = empty_id

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int],
                 offset: int = 0) -> torch.Tensor:
        width = logits.shape[1]
        work = []  # (row, slot, positions, free here, in the window, query): the group's slots are decoded together
        for j, row in enumerate(rows):
            for slot in self.slots_per_row.get(row, ()):
                pos = torch.tensor(slot.positions, device=logits.device)  # (n,)
                slot_free = free[j, pos]  # (n,)
                seen = (pos >= offset) & (pos < offset + width)  # (n,) positions these logits are for
                if not bool((slot_free & seen).any()):
                    continue
                # The DP scores a path by the logits themselves: each position adds exactly one term, so the
                # per-position normaliser of a log-softmax would not change the best path (and costs n x V).
                # Positions of the slot outside the window (a later canvas of a block-diffusion model) have no
                # logits yet: they count as "any token" (score 0), so the path stays completable.
                first = slot.positions[0] - offset
                if bool(seen.all()) and slot.positions[-1] - slot.positions[0] == len(slot.positions) - 1:
                    logp = logits[j, first:first + pos.numel()]  # (n, V) the whole slot is in the window: a view
                else:
                    logp = torch.zeros(pos.numel(), logits.shape[-1], device=logits.device)  # (n, V)
                    logp[seen] = logits[j, pos[seen] - offset].float()  # the rest of the slot: later windows
                committed = [None if f else int(t) for f, t in zip(slot_free.tolist(), x[j, pos].tolist())]
                work.append((j, slot, pos, slot_free, seen,
                             (slot.automaton, logp, committed, self.empty_id, slot.min_tokens)))
        # The paths are computed before any logits are changed: a slot's logp may be a view of them.
        paths = best_paths([w[-1] for w in work])
        for (j, slot, pos, slot_free, seen, _), path in zip(work, paths):
            if path is None:  # cannot happen from a canvas the API accepted; fail loudly if it does
                raise ConstraintError(f"slot {slot.name!r} can no longer satisfy {slot.automaton.pattern!r}")
            here = slot_free & seen  # (n,)
            forced = torch.tensor(path, device=logits.device)[here]  # (f,)
            at = pos[here] - offset  # (f,)
            # A path token another hard mask forbids here (a safety guard) stays forbidden: the
            # position waits, and the next step's path goes around it.
            keep = torch.isfinite(logits[j, at, forced])  # (f,)
            logits[j, at] = float("-inf")
            logits[j, at, forced] = torch.where(keep, 0.0, float("-inf"))
        return logits
