"""Hard structure targets during denoising: every constrained slot commits only tokens that lie on
its best accepted path, so the canvas always stays completable (no dead ends, no retries).

At each step, for each constrained slot still holding masks, ``best_path`` runs dynamic programming
over (slot position, automaton state) on the current log-probabilities, keeping the tokens already
committed; each free position is then allowed exactly its path token. The sampler ranks commits by
the model's own probability of those tokens, so the most certain parts of the path land first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from tokenizers import Tokenizer

from redraft.constraints.automaton import TokenAutomaton, compile_target
from redraft.constraints.canvas import Canvas
from redraft.errors import ConstraintError
from redraft.families import ModelInfo
from redraft.workers.slot_decoder import Deferred, best_paths


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


def _window_copy(logits: torch.Tensor, j: int, n: int, inside: list[int], columns: list[int]) -> torch.Tensor:
    """A slot's (n, V) scores from row ``j`` of the logits where they are in the window, 0 ("any token") elsewhere."""
    logp = torch.zeros(n, logits.shape[-1], device=logits.device)
    if inside:
        logp[inside] = logits[j, columns].float()
    return logp


class SlotTargets:
    """Logits processor: at free positions of constrained slots, allow only the best path's token."""

    def __init__(self, slots_per_row: dict[int, list[ConstrainedSlot]], empty_id: int) -> None:
        self.slots_per_row = slots_per_row  # batch row -> its constrained slots
        self.empty_id = empty_id

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int],
                 offset: int = 0) -> torch.Tensor:
        width, device = logits.shape[1], logits.device
        entries = [(j, slot) for j, row in enumerate(rows) for slot in self.slots_per_row.get(row, ())]
        if not entries:
            return logits
        # Every slot position's state and token, read to the host in one copy for the whole group.
        js = torch.tensor([j for j, slot in entries for _ in slot.positions], dtype=torch.long, device=device)
        ps = torch.tensor([p for _, slot in entries for p in slot.positions], dtype=torch.long, device=device)
        states = torch.stack([free[js, ps].long(), x[js, ps].long()]).tolist()  # (2, sum n): free?, token
        work = []  # (row, slot, positions decided here, query): the group's slots are decoded together
        at = 0
        for j, slot in entries:
            n = len(slot.positions)
            slot_free, tokens = states[0][at:at + n], states[1][at:at + n]
            at += n
            seen = [offset <= p < offset + width for p in slot.positions]  # positions these logits are for
            here = [(k, p) for k, (p, f, s) in enumerate(zip(slot.positions, slot_free, seen)) if f and s]
            if not here:
                continue
            # The DP scores a path by the logits themselves: each position adds exactly one term, so the
            # per-position normaliser of a log-softmax would not change the best path (and costs n x V).
            # Positions of the slot outside the window (a later canvas of a block-diffusion model) have no
            # logits yet: they count as "any token" (score 0), so the path stays completable.
            first = slot.positions[0] - offset
            if all(seen) and slot.positions[-1] - slot.positions[0] == n - 1:
                logp = logits[j, first:first + n]  # (n, V) the whole slot is in the window: a view
            else:  # a copy, made when the decoder reaches this slot's chunk (counted against its budget)
                inside = [k for k, s in enumerate(seen) if s]
                columns = [slot.positions[k] - offset for k in inside]
                logp = Deferred(partial(_window_copy, logits, j, n, inside, columns), 4 * n * logits.shape[-1],
                                device)
            committed = [None if f else t for f, t in zip(slot_free, tokens)]
            work.append((j, slot, here, (slot.automaton, logp, committed, self.empty_id, slot.min_tokens)))
        if not work:
            return logits
        # The paths are computed before any logits are changed: a slot's logp may be a view of them.
        paths = best_paths([w[-1] for w in work])
        rows_at, cols_at, forced = [], [], []  # every decided position of every slot: (row, column, path token)
        for (j, slot, here, _), path in zip(work, paths):
            if path is None:  # cannot happen from a canvas the API accepted; fail loudly if it does
                raise ConstraintError(f"slot {slot.name!r} can no longer satisfy {slot.automaton.pattern!r}")
            for k, p in here:
                rows_at.append(j)
                cols_at.append(p - offset)
                forced.append(path[k])
        r, c, t = (torch.tensor(v, device=device) for v in (rows_at, cols_at, forced))
        # A path token another hard mask forbids here (a safety guard) stays forbidden: the
        # position waits, and the next step's path goes around it.
        keep = torch.isfinite(logits[r, c, t])  # (f,)
        logits[r, c] = float("-inf")
        logits[r, c, t] = torch.where(keep, 0.0, float("-inf"))
        return logits
