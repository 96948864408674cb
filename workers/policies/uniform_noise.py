"""Uniform-state block diffusion (DiffusionGemma): undecided positions hold random tokens, renoised every step.

The canvas is denoised in **windows** of ``canvas_length`` tokens, left to right; the model reads one window
per step, with everything to its left already in the model's context (the adapter encodes it into the
encoder's KV cache before the window's first step). A window starts at the first undecided position and
holds what follows it: fixed text inside it is clamped (never renoised) and visible to the decoder in both
directions. A gap that would straddle the window's end starts the next window instead (so it sees as much
right context as fits); text beyond the window is not seen until a later window. A window that runs past the
end of the canvas is filled up with *overflow* positions (free, never recorded, dropped), so the decoder
always sees a whole canvas, as in training.

Each step (transformers' ``EntropyBoundSampler`` and ``StableAndConfidentStoppingCriteria``, re-decided
every step): a denoiser sample for every undecided position; the acceptance rule keeps some of them (by
default the lowest-entropy ones under the entropy bound); every other undecided position gets a fresh random
token. The window ends when its argmax canvas is stable for ``stability`` steps and its mean entropy is
below ``confidence_stop``, or after ``steps`` steps; then its argmax tokens are committed, through the
processors' ``admissible`` checks (a refused position stays undecided and later steps decide it greedily).
An EOS the model writes in a slot ends that slot: the rest of the slot becomes the empty token, written with
the EOS as one commit that the ``admissible`` checks judge with the slot ended there.

The rows of one decoder pass step together (``step_group``): batched tensor ops over their candidates, each
row's random draws from its own generator in the reference's order, two host reads per step; a window's
final commit runs per row, once per window.

The canonical canvas ``row.x`` keeps the mask sentinel at every undecided position until the window commits,
so processors, guards and the step history never mistake noise for text; the random tokens live only in the
window's model input. Step records show accepted tokens as committed and renoised ones as re-masked, and the
window's last record commits every final token that differs from what was shown: the history replays to the
final canvas exactly.
"""

from __future__ import annotations

from collections import deque

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


class UniformNoise:
    feedback = True  # the decoder takes the previous step's logits back (self-conditioning)

    def __init__(self, row) -> None:
        self.row = row
        cfg = row.cfg
        if cfg.canvas_length is None or cfg.vocab_size is None:
            raise ValueError("uniform noise needs the model's canvas_length and vocab_size in the config")
        self.length = row.x.numel()
        self.lo = self.hi = self.extra = 0  # window [lo, hi) of x, plus `extra` overflow positions after it
        self.open = False
        self.logits: torch.Tensor | None = None  # (W, V) the previous step's processed logits, for the decoder
        self.windows = 0  # windows opened so far
        runs = []  # maximal runs of free positions: where gaps are
        for p in row.free.nonzero().squeeze(1).tolist():
            if runs and runs[-1][1] == p:
                runs[-1][1] = p + 1
            else:
                runs.append([p, p + 1])
        self.runs = [tuple(r) for r in runs]

    # ------------------------------------------------------------------ windows

    def _undecided(self) -> torch.Tensor:
        row = self.row
        return (row.x == row.mask_id) & row.free  # (L,)

    @property
    def active(self) -> bool:
        if self.open:
            return True
        left = self._undecided().nonzero()
        if left.numel() == 0:
            return False
        self._open(int(left[0, 0]))
        return True

    def _open(self, start: int) -> None:
        row, size = self.row, self.row.cfg.canvas_length
        end = start + size
        if end < self.length:
            for a, b in self.runs:  # a gap that straddles the end and fits in a window starts the next one
                if start < a < end < b and b - a <= size:
                    end = a
                    break
        self.lo, self.hi = start, min(end, self.length)
        self.extra = max(0, start + size - self.length)
        width = self.hi - self.lo + self.extra
        self.in_canvas = torch.zeros(width, dtype=torch.bool, device=row.x.device)  # (W,) not overflow
        self.in_canvas[: self.hi - self.lo] = True
        self.fixed = torch.zeros(width, dtype=torch.bool, device=row.x.device)  # (W,) clamped or decided
        self.fixed[: self.hi - self.lo] = ~self._undecided()[self.lo:self.hi]
        # The reference's initial canvas: uniformly random tokens (one draw per position, the row's generator).
        noise = torch.randint(0, row.cfg.vocab_size, (width,), generator=row.generator).to(row.x.device)  # (W,)
        self.canvas = torch.where(self.fixed, self._x_window(width), noise)  # (W,) the model's input
        self.shown = torch.full((width,), -1, dtype=torch.long, device=row.x.device)  # (W,) accepted token or -1
        self.steps_here, self.finishing, self.logits = 0, False, None
        self.no_eos: set[int] = set()  # x positions where an EOS may not end the slot (refused this window)
        self.argmaxes: deque[torch.Tensor] = deque(maxlen=max(1, row.cfg.stability))
        self.open = True
        self.windows += 1

    def _x_window(self, width: int) -> torch.Tensor:
        out = torch.zeros(width, dtype=torch.long, device=self.row.x.device)
        out[: self.hi - self.lo] = self.row.x[self.lo:self.hi]
        return out

    def window(self) -> tuple[int, int]:
        """The x positions ``raw[0]`` and past-the-end of what the model reads (overflow beyond ``hi``)."""
        return self.lo, self.hi

    def model_input(self) -> torch.Tensor:
        return self.canvas  # (W,)

    # ------------------------------------------------------------------ commit and record (host lists)

    def _commit(self, cand: list[int], tokens: list[int], allowed: list[bool], conf: list[float],
                before: list[int], after: list[int], step_conf: dict[int, float]):
        """Write the window's final tokens into ``x``: the EOS that end slots first (``_end_slots``), then the rest
        through the ``admissible`` checks, most confident first. ``cand`` are window-relative candidates with
        their ``tokens``, ``allowed`` flags and confidences; ``before``/``after`` what the window showed before and
        after this step, ``step_conf`` the confidence of this step's proposals. Returns the step's record."""
        row, width = self.row, self.hi - self.lo
        inside = [j < width for j in cand]  # overflow needs no final token
        refused = len(self.no_eos)
        final, done = self._end_slots(cand, tokens, [a and i for a, i in zip(allowed, inside)], conf)
        refused = len(self.no_eos) > refused  # a refused EOS: the next step proposes another token there
        rest = [i and not d for i, d in zip(inside, done)]
        order = sorted((i for i in range(len(cand)) if rest[i]), key=lambda i: -conf[i])  # most confident first
        device = row.x.device
        pos_out, tok_out, conf_out = row.commit(
            torch.tensor(order, dtype=torch.long), len(order), torch.tensor([self.lo + j for j in cand], dtype=torch.long),
            torch.tensor(tokens, dtype=torch.long), torch.tensor([a and r for a, r in zip(allowed, rest)]),
            torch.tensor(conf))
        final.update({p: (t, c) for p, t, c in zip(pos_out, tok_out, conf_out)})
        written = [p - self.lo for p in final if self.lo <= p < self.hi]
        if written:
            at = torch.tensor(written, device=device)
            self.fixed[at] = True
            self.canvas[at] = row.x[at + self.lo]
            self.shown[at] = -1  # committed: shown as written from now on
            after = list(after)
            for j in written:
                after[j] = -1
        left = [j for j, i in zip(cand, inside) if i and self.lo + j not in final]  # still undecided in the window
        if left:
            if not final and not refused:
                raise ConstraintError(
                    f"no admissible token for positions {[self.lo + j for j in cand][:8]} under the job's targets; "
                    f"loosen the targets or give the slot more room")
            return self._record(before, after, final, step_conf)
        self.open = False
        if not bool(self._undecided().any()):  # the row's last window: its encoder cache (and so its hold on a
            self.row.context = None            # group's stacked cache, ``adapters._group_cache``) goes now
        return self._record(before, after, final, step_conf)

    def _end_slots(self, cand: list[int], tokens: list[int], allowed: list[bool],
                   conf: list[float]) -> tuple[dict[int, tuple[int, float]], list[bool]]:
        """An EOS written in a slot ends it: the EOS and the empty token at every later position of the slot (here
        and in later windows) are written as one, before the window's other tokens, and only if every
        ``admissible`` check takes the EOS with the slot ended there, so a safety guard judges the text the slot
        will have. A refused EOS is not proposed at its position again in this window. Returns the writes and
        which candidates they settled (refused EOS included: they stay undecided)."""
        row = self.row
        out: dict[int, tuple[int, float]] = {}
        eos, positions = set(row.cfg.eos_ids), [self.lo + j for j in cand]
        done = [False] * len(positions)
        for i in sorted((i for i in range(len(positions)) if allowed[i] and tokens[i] in eos), key=positions.__getitem__):
            if done[i]:
                continue  # an earlier EOS ended this slot
            done[i] = True
            p = positions[i]
            b = next(end for start, end in self.runs if start <= p < end)
            tail = row.x[p + 1:b].tolist()  # the rest of the slot
            trial = row.x.clone()  # (L,) the slot ended at p
            trial[p + 1:b] = row.empty_id
            if any(t not in (row.mask_id, row.empty_id) for t in tail) or \
                    not all(c.admissible(row.proc_index, trial, p, tokens[i]) for c in row.checkers):
                self.no_eos.add(p)  # it would erase text already written, or a checker refuses the ending
                continue
            out[p] = (tokens[i], float(conf[i]))
            out.update({q: (row.empty_id, 1.0) for q, t in zip(range(p + 1, b), tail) if t != row.empty_id})
            row.x[p], row.confidence[p] = tokens[i], float(conf[i])
            row.x[p + 1:b], row.confidence[p + 1:b] = row.empty_id, 1.0
            done = [d or p < q < b for d, q in zip(done, positions)]
        return out, done

    def _record(self, before: list[int], after: list[int], final: dict[int, tuple[int, float]],
                conf: dict[int, float]):
        """Display changes of this step in x positions: accepted tokens as commits (with ``conf`` of their
        window-relative position), renoised ones as re-masks, then the window's final tokens (where they differ
        from what was shown)."""
        width = self.hi - self.lo
        commits: dict[int, tuple[int, float]] = {}
        remasked: list[tuple[int, int]] = []
        for j, (b, a) in enumerate(zip(before[:width], after[:width])):
            p = self.lo + j
            if p in final:
                if final[p][0] != b:
                    commits[p] = final[p]
            elif a != b:
                if a >= 0:
                    commits[p] = (a, conf.get(j, 0.0))
                else:
                    remasked.append((p, b))
        for p, tc in final.items():  # outside the window: slots emptied after an EOS
            if not self.lo <= p < self.hi:
                commits[p] = tc
        pos = sorted(commits)
        return pos, [commits[p][0] for p in pos], [commits[p][1] for p in pos], remasked


def step_group(rows, raw: torch.Tensor) -> list[BaseException | None]:
    """One step for rows under uniform noise whose windows shared one decoder pass, from its logits ``raw``
    (b, W, V), which the rows' processors edit in place and which then become the rows' self-conditioning input.

    The V-wide work runs as batched tensor ops over the group's candidates: the model's own normaliser and entropy
    at each row's temperature, the argmax canvas, the processed logit of each proposal and the feedback logits;
    the acceptance rules run once per kind over (b, W) tensors, and the stop rule (argmax canvas stable for
    ``stability`` steps, mean entropy below ``confidence_stop``) for every row at once. What needs a row's own
    generator is drawn per row in the reference's order (the denoiser sample, then the renoising tokens), so a
    row's text does not depend on the group. The host reads the step twice: its candidates and its outcome.
    A window's final commit (``_commit``) runs per row, once per window. Returns each row's error (None: it
    stepped); a row with an error did not.
    """
    b, width, vocab = raw.shape
    device = raw.device
    neg_inf = float("-inf")
    errors: list[BaseException | None] = [None] * b
    noises = [r.noise for r in rows]
    fixed = torch.stack([n.fixed for n in noises])  # (b, W) clamped or decided
    finishing = [n.finishing for n in noises]
    in_canvas = torch.stack([n.in_canvas for n in noises])  # (b, W)
    cand = ~fixed & (in_canvas | ~torch.tensor(finishing, device=device).unsqueeze(1))  # (b, W) overflow: not when finishing
    c = Candidates.of(cand, raw)
    flat_raw = raw.view(b * width, vocab)

    # The model's own distribution (before the processors) gives the confidences and the entropies.
    temps = [r.cfg.schedule.at(n.steps_here, r.cfg.steps) for r, n in zip(rows, noises)]
    greedy = [not isinstance(t, torch.Tensor) and t <= 0 for t in temps]
    temp_c = c.spread([0.0 if g else float(t) for g, t in zip(greedy, temps)])  # (N,) float32, exactly the schedule's
    own_lse, entropy = own_distribution(flat_raw, c, temp_c, needs_entropy=True)
    kept_at, kept = keep_own(rows, flat_raw, c)
    apply_processors(rows, raw, [r.x.unsqueeze(0) for r in rows], [((r.x == r.mask_id) & r.free).unsqueeze(0) for r in rows],
                     [n.lo for n in noises], errors)

    # The argmax canvas of the processed logits, and the denoiser sample: argmax when greedy or finishing, else one
    # multinomial draw per candidate from softmax(processed / t) with the row's generator, as the reference draws.
    best = torch.empty(c.n, device=device)
    arg = torch.empty(c.n, dtype=torch.long, device=device)
    for c0, c1 in c.chunks():
        best[c0:c1], arg[c0:c1] = flat_raw.index_select(0, c.flat[c0:c1]).max(-1)
    proposal = arg.clone()  # (N,)
    for j, (r, n) in enumerate(zip(rows, noises)):
        if errors[j] is not None or not c.counts[j]:
            continue
        mine = c.mine(j)
        if finishing[j] or greedy[j]:
            at = [i for i, p in enumerate(c.pos_h[mine]) if n.lo + p in n.no_eos]
            if at:  # ending the slot there was refused: the model's best other token
                at_t = torch.tensor(at, device=device) + c.starts[j]
                block = flat_raw.index_select(0, c.flat[at_t])  # (a, V)
                block[:, list(r.cfg.eos_ids)] = neg_inf
                proposal[at_t] = block.argmax(-1)
            continue
        probs = torch.softmax(flat_raw.index_select(0, c.flat[mine]) / temp_c[mine].unsqueeze(1), dim=-1,
                              dtype=torch.float32)  # (n, V)
        probs[~torch.isfinite(best[mine])] = 1.0  # everything forbidden there: a placeholder draw, never taken
        proposal[mine] = torch.multinomial(probs, num_samples=1, generator=r.generator_on(device)).squeeze(-1)
    processed_at = flat_raw[c.flat, proposal]  # (N,)
    allowed = processed_at > neg_inf  # (N,)
    conf = torch.where(allowed, (own_logit(processed_at, proposal, kept_at, kept) - own_lse).exp(), 0.0)  # (N,)
    best_ok = torch.isfinite(best)  # (N,) the argmax canvas's token may be written
    best_conf = torch.where(best_ok, (own_logit(best, arg, kept_at, kept) - own_lse).exp(), 0.0)  # (N,)

    # Self-conditioning: the processed logits at the step's temperature, clamped and decided positions certain
    # of their token, positions where nothing is allowed with no signal rather than NaN (in place: ``raw``).
    if not all(greedy):
        raw.div_(torch.tensor([1.0 if g else float(t) for g, t in zip(greedy, temps)], device=device).view(b, 1, 1))
    canvas = torch.stack([n.canvas for n in noises])  # (b, W) the model's input this step
    raw.masked_fill_(fixed.unsqueeze(-1), neg_inf)
    held = raw.gather(-1, canvas.unsqueeze(-1)).squeeze(-1)  # (b, W)
    raw.scatter_(-1, canvas.unsqueeze(-1), torch.where(fixed, 0.0, held).unsqueeze(-1))
    raw.masked_fill_(~torch.isfinite(raw.amax(-1)).unsqueeze(-1), 0.0)

    # Acceptance for the rows still denoising (not finishing): each kind's rule over (b, W), a proposal every token
    # of which is forbidden is never accepted; the rest of the candidates are renoised with fresh random tokens.
    stepping = [j for j in range(b) if not finishing[j] and errors[j] is None]
    conf_bl, entropy_bl = c.padded(conf, -1.0, b), c.padded(entropy, float("inf"), b)  # (b, W)
    steps_left = torch.tensor([r.cfg.steps - n.steps_here for r, n in zip(rows, noises)], device=device)  # (b,)
    key, k = acceptance_keys(rows, stepping, conf_bl, entropy_bl, cand, steps_left, c.counts)
    rank = ranks(torch.where(cand, key, neg_inf))  # (b, W)
    proposal_bl, allowed_bl = c.padded(proposal, 0, b), c.padded(allowed, False, b)  # (b, W)
    moving = cand & torch.tensor([j in stepping for j in range(b)], device=device).unsqueeze(1)  # (b, W)
    accepted = moving & (rank < k.unsqueeze(1)) & allowed_bl  # (b, W)
    fresh = torch.stack([torch.randint(0, r.cfg.vocab_size, (width,), generator=r.generator) if j in stepping
                         else torch.zeros(width, dtype=torch.long) for j, r in enumerate(rows)]).to(device)  # (b, W)
    shown = torch.stack([n.shown for n in noises])  # (b, W)
    new_canvas = torch.where(moving, torch.where(accepted, proposal_bl, fresh), canvas)
    new_shown = torch.where(moving, torch.where(accepted, proposal_bl, -1), shown)

    # The stop rule, for every row at once: the argmax canvas held for ``stability`` steps and is confident.
    greedy_bl = c.padded(arg, -1, b)  # (b, W) the argmax canvas at the candidates
    stable = torch.zeros(b, dtype=torch.bool, device=device)
    by_length: dict[int, list[int]] = {}
    for j in stepping:
        n = noises[j]
        if rows[j].cfg.stability == 0:
            stable[j] = True
        elif len(n.argmaxes) == n.argmaxes.maxlen:
            by_length.setdefault(n.argmaxes.maxlen, []).append(j)
    for js in by_length.values():
        held_for = torch.stack([torch.stack(list(noises[j].argmaxes)) for j in js])  # (m, s, W)
        idx = torch.tensor(js, device=device)
        stable[idx] = (held_for == greedy_bl[idx].unsqueeze(1)).flatten(1).all(1)
    counts = torch.tensor(c.counts, device=device).clamp_min(1)
    mean_entropy = torch.where(cand, entropy_bl, 0.0).sum(1) / counts  # (b,)
    stop_below = torch.tensor([r.cfg.confidence_stop for r in rows], device=device)
    confident = mean_entropy < stop_below  # (b,)

    # The host's second read: the step's outcome, unpacked per row.
    outcome = torch.stack([shown, new_shown, conf_bl, proposal_bl, allowed_bl, greedy_bl, c.padded(best_ok, False, b),
                           c.padded(best_conf, 0.0, b), (stable & confident).unsqueeze(1).expand(b, width)]
                          ).double()
    outcome = to_host(outcome, "outcome")  # (9, b, W)
    for j, (r, n) in enumerate(zip(rows, noises)):
        if errors[j] is not None:
            continue
        cj = c.pos_h[c.mine(j)]  # window-relative candidates
        before, after = outcome[0][j].astype(np.int64).tolist(), outcome[1][j].astype(np.int64).tolist()
        step_conf = {p: float(outcome[2][j][p]) for p in cj}
        try:
            if finishing[j]:
                rec = n._commit(cj, outcome[3][j][cj].astype(np.int64).tolist(), outcome[4][j][cj].astype(bool).tolist(),
                                outcome[2][j][cj].tolist(), before, after, step_conf)
            else:
                n.canvas, n.shown = new_canvas[j], new_shown[j]
                n.steps_here += 1
                n.argmaxes.append(greedy_bl[j])
                if bool(outcome[8][j][0]) or n.steps_here >= r.cfg.steps:
                    n.finishing = True
                    rec = n._commit(cj, outcome[5][j][cj].astype(np.int64).tolist(),
                                    outcome[6][j][cj].astype(bool).tolist(), outcome[7][j][cj].tolist(), before, after,
                                    step_conf)
                else:
                    rec = n._record(before, after, {}, step_conf)
        except Exception as exc:  # noqa: BLE001 - this row's failure is this row's alone
            errors[j] = exc
            continue
        n.logits = raw[j]
        r.record(*rec)
    return errors
