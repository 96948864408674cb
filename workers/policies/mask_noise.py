"""Absorbing (masked) diffusion: an undecided position holds ``[MASK]`` until a step commits it.

The model reads the whole canvas every step. Candidates are the masked positions of the row's current
block (LLaDA's semi-autoregressive blocks, left to right; one block when ``block_size`` is None); the
acceptance rule picks how many of the proposals to commit, in its order, skipping any a processor's
``admissible`` refuses; what is not committed stays masked for a later step. ReMDM-style self-correction
may send a few low-confidence earlier commits of the block back to ``[MASK]``.
"""

from __future__ import annotations

import numpy as np
import torch

from redraft.errors import ConstraintError
from redraft.workers.policies.group import (
    Candidates,
    acceptance_keys,
    apply_processors,
    keep_own,
    own_distribution,
    own_logit,
    ranks,
    to_host,
)


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
        self.left: int | None = None  # masks left in the current block, as the last step counted them

    # ------------------------------------------------------------------ what the model reads

    @property
    def active(self) -> bool:
        """Whether the row still has masks to write (moves past finished blocks)."""
        while self.block < len(self.blocks):
            left = self.left if self.left is not None else int(self._block_masks().sum())
            if left:
                break
            self.block, self.step_in_block, self.left = self.block + 1, 0, None
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


def step_group(rows, raw: torch.Tensor) -> list[BaseException | None]:
    """One denoising step for rows of equal length under mask noise, from their logits ``raw`` (b, L, V), which
    the rows' processors edit in place. Proposal, confidence, acceptance, commit and self-correction run as
    batched tensor ops over the group's candidates, with each row's temperature, acceptance parameters, block
    and schedule position as tensors; each row's random numbers come from its own generator in the same order
    as for the row alone, so its text does not depend on the group. The host reads the step's outcome once,
    to write the step records. Returns each row's error (None: it stepped); a row with an error did not.

    Rows whose processors have an ``admissible`` check commit one proposal after another (a checker sees the
    commits made before it in the same step); every other row commits in one scatter.
    """
    b, L, _ = raw.shape
    device = raw.device
    neg_inf = float("-inf")
    errors: list[BaseException | None] = [None] * b
    mask_id = rows[0].mask_id
    x = torch.stack([r.x for r in rows])  # (b, L)
    free = torch.stack([r.free for r in rows])  # (b, L)
    confidence = torch.stack([r.confidence for r in rows])  # (b, L)
    blocks = [r.noise.blocks[r.noise.block] for r in rows]  # (lo, hi, planned steps) of each row's block
    lo = torch.tensor([blk[0] for blk in blocks], device=device)  # (b,)
    hi = torch.tensor([blk[1] for blk in blocks], device=device)  # (b,)
    positions = torch.arange(L, device=device)  # (L,)
    in_block = (positions >= lo.unsqueeze(1)) & (positions < hi.unsqueeze(1))  # (b, L)
    still = (x == mask_id) & free  # (b, L) every undecided position
    cand = still & in_block  # (b, L) this step proposes for these
    # The host reads the step twice: which positions are candidates (here) and what the step did (at the end).
    c = Candidates.of(cand, raw)
    counts, starts, pi, N = c.counts, c.starts, c.pos, c.n

    # The model's own distribution ranks the proposals; processors then decide what may be written.
    flat_raw = raw.view(b * L, raw.shape[-1])
    temps = [float(r.cfg.schedule.at(r.step, r.cfg.steps)) for r in rows]  # 0: greedy
    per_row = torch.tensor(counts)  # (b,) on the host: spreads a per-row value over the row's candidates
    temp_c = c.spread(temps)  # (N,)
    own_lse, entropy = own_distribution(flat_raw, c, temp_c,
                                        any(getattr(r.accept, "needs_entropy", False) for r in rows))
    kept_at, kept = keep_own(rows, flat_raw, c)
    apply_processors(rows, raw, [x[j:j + 1] for j in range(b)], [still[j:j + 1] for j in range(b)], [0] * b, errors)

    # Proposals: argmax, or a sample at the row's temperature by inverting the CDF of exp((z - max z) / t) with one
    # uniform per candidate from the row's own generator (``right=True`` never lands on a zero-probability token).
    u = [torch.rand(counts[j], generator=r.generator) for j, r in enumerate(rows)
         if temps[j] > 0 and counts[j] and errors[j] is None]
    sampled = torch.tensor([temps[j] > 0 and errors[j] is None for j in range(b)]).repeat_interleave(per_row)  # (N,)
    u_c = torch.zeros(N)
    u_c[sampled] = torch.cat(u) if u else torch.zeros(0)
    u_c, sampled_d = u_c.to(device), sampled.to(device)
    proposal = torch.empty(N, dtype=torch.long, device=device)  # (N,)
    processed_at = torch.empty(N, device=device)  # (N,) the processed logit of each proposal
    for c0, c1 in c.chunks():
        block = flat_raw.index_select(0, c.flat[c0:c1])  # (c, V) processed
        best, prop = block.max(-1)  # (c,), (c,)
        draw = sampled_d[c0:c1]
        if bool(sampled[c0:c1].any()):
            blocked = ~torch.isfinite(best)  # (c,) nothing allowed at all: a placeholder draw, never taken
            t = torch.where(draw, temp_c[c0:c1], 1.0)
            cdf = block.sub(torch.where(blocked, 0.0, best).unsqueeze(1)).div_(t.unsqueeze(1)).exp_()  # (c, V)
            cdf[blocked] = 1.0
            cdf = cdf.cumsum_(-1)  # unnormalised
            drawn = torch.searchsorted(cdf, (u_c[c0:c1] * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
            prop = torch.where(draw, drawn.clamp_max(cdf.shape[-1] - 1), prop)
        proposal[c0:c1] = prop
        processed_at[c0:c1] = block.gather(-1, prop.unsqueeze(1)).squeeze(1)
    allowed = processed_at > neg_inf  # (N,)
    own_at = own_logit(processed_at, proposal, kept_at, kept)  # (N,) the model's own logit of each proposal
    conf = torch.where(allowed, (own_at - own_lse).exp(), 0.0)  # (N,)

    # Acceptance, per row: an ordering key (higher first) and how many to take, as (b, L) and (b,) tensors.
    conf_bl, allowed_bl = c.padded(conf, -1.0, b), c.padded(allowed, False, b)  # (b, L)
    entropy_bl = None if entropy is None else c.padded(entropy, float("inf"), b)
    steps_left = torch.tensor([blk[2] - r.noise.step_in_block for blk, r in zip(blocks, rows)], device=device)  # (b,)
    key, k = acceptance_keys(rows, list(range(b)), conf_bl, entropy_bl, cand, steps_left, counts)
    rank = ranks(torch.where(cand & allowed_bl, key, neg_inf))  # (b, L) refused proposals are never taken
    take = cand & allowed_bl & (rank < k.unsqueeze(1))  # (b, L)
    proposal_bl = c.padded(proposal, 0, b)  # (b, L)

    failed = [j for j in range(b) if errors[j] is not None]
    if failed:
        take[failed] = False
    checked = [j for j, r in enumerate(rows) if r.checkers and errors[j] is None]
    if checked:  # one commit after another, each judged with the step's earlier commits in place
        take[checked] = False
    x = torch.where(take, proposal_bl, x)
    confidence = torch.where(take, conf_bl, confidence)
    for j in checked:
        r = rows[j]
        r.x, r.confidence = x[j].clone(), confidence[j].clone()
        mine = slice(starts[j], starts[j + 1])
        row_order = rank[j, pi[mine]].argsort()  # the row's candidates in its acceptance order
        pos_out, _, _ = r.commit(row_order, int(k[j]), pi[mine], proposal[mine], allowed[mine], conf[mine])
        x[j], confidence[j] = r.x, r.confidence
        if pos_out:
            take[j, torch.tensor(pos_out, device=device)] = True

    # Self-correction (ReMDM): up to half as many earlier commits of the block as this step made, the least
    # confident below ``remask_below``, within the run's budget; never on a block's last planned step.
    n_taken = take.sum(1)  # (b,)
    last_planned = [r.accept.planned and r.noise.step_in_block >= blk[2] - 1 for r, blk in zip(rows, blocks)]
    budget_h = [0 if last_planned[j] else r.noise.remask_left for j, r in enumerate(rows)]
    remask = torch.zeros_like(take)
    if any(budget_h):
        budget = torch.tensor(budget_h, device=device)  # (b,)
        n_remask = torch.minimum(budget, (n_taken + 1) // 2) * (still & in_block & ~take).any(1)  # (b,)
        below = torch.tensor([r.cfg.remask_below for r in rows], device=device).unsqueeze(1)  # (b, 1)
        eligible = free & in_block & (x != mask_id) & (confidence < below) & ~take  # (b, L)
        low = torch.where(eligible, confidence, float("inf")).argsort(dim=1, stable=True)  # (b, L)
        low_rank = torch.empty_like(low).scatter_(1, low, positions.expand(b, L))
        remask = eligible & (low_rank < n_remask.unsqueeze(1))  # (b, L)
    held, held_conf = x, confidence  # what the re-masked positions held
    x = torch.where(remask, mask_id, x)
    confidence = torch.where(remask, 0.0, confidence)

    # The host's second read: the step's outcome as one (7, b, L) block (commits with their tokens, order and
    # confidence; re-masks with what they held; the masks left in each row's block), unpacked on the host.
    left = (x == mask_id) & free & in_block  # (b, L)
    outcome = to_host(torch.stack([take, held, rank, conf_bl, remask, held_conf, left]).double(), "outcome")  # (7, b, L)
    t_rows, t_pos = np.nonzero(outcome[0])
    r_rows, r_pos = np.nonzero(outcome[4])
    commits: list[list[tuple[int, int, int, float]]] = [[] for _ in range(b)]  # (rank, position, token, conf)
    for j, p, t, place, c in zip(t_rows.tolist(), t_pos.tolist(), outcome[1][t_rows, t_pos].astype(np.int64).tolist(),
                                 outcome[2][t_rows, t_pos].astype(np.int64).tolist(),
                                 outcome[3][t_rows, t_pos].astype(np.float32).tolist()):
        commits[j].append((place, p, t, c))
    remasked: list[list[tuple[float, int, int]]] = [[] for _ in range(b)]  # (conf, position, token it held)
    for j, p, t, c in zip(r_rows.tolist(), r_pos.tolist(), outcome[1][r_rows, r_pos].astype(np.int64).tolist(),
                          outcome[5][r_rows, r_pos].astype(np.float32).tolist()):
        remasked[j].append((c, p, t))
    masks_left = outcome[6].sum(1).astype(np.int64).tolist()  # (b,)
    for j, r in enumerate(rows):
        if errors[j] is not None:
            continue
        if not commits[j] and (last_planned[j] or not r.accept.planned):
            errors[j] = ConstraintError(
                f"no admissible token for positions {pi[starts[j]:starts[j + 1]].tolist()[:8]} under the job's "
                f"targets; loosen the targets or give the slot more room")
            continue
        r.x, r.confidence = x[j], confidence[j]
        mine = sorted(commits[j])  # most confident (first accepted) first
        sent_back = [(p, t) for _, p, t in sorted(remasked[j])]  # least confident first
        r.noise.remask_left -= len(sent_back)
        r.noise.step_in_block += 1
        r.noise.left = masks_left[j]  # what ``active`` would read back from the device
        r.record([p for _, p, _, _ in mine], [t for _, _, t, _ in mine], [c for *_, c in mine], sent_back)
    return errors
