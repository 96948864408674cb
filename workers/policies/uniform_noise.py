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

The canonical canvas ``row.x`` keeps the mask sentinel at every undecided position until the window commits,
so processors, guards and the step history never mistake noise for text; the random tokens live only in the
window's model input. Step records show accepted tokens as committed and renoised ones as re-masked, and the
window's last record commits every final token that differs from what was shown: the history replays to the
final canvas exactly.
"""

from __future__ import annotations

from collections import deque

import torch

from redraft.errors import ConstraintError


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

    def candidates(self) -> torch.Tensor:
        free = ~self.fixed
        if self.finishing:
            free = free & self.in_canvas  # overflow needs no final token
        return free.nonzero().squeeze(1)  # (n,) window-relative

    def schedule_position(self) -> tuple[int, int]:
        return self.steps_here, self.row.cfg.steps

    def draw(self, scaled: torch.Tensor | None, processed: torch.Tensor) -> torch.Tensor:
        """The denoiser sample: one multinomial draw per candidate from softmax(processed / temperature), as
        the reference draws it (float32 probabilities, the row's generator); argmax when greedy or finishing."""
        if scaled is None or self.finishing:
            at = [i for i, j in enumerate(self.candidates().tolist()) if self.lo + j in self.no_eos]
            if at:  # ending the slot there was refused: the model's best other token
                processed = processed.clone()
                rows = torch.tensor(at, device=processed.device).unsqueeze(1)  # (a, 1)
                eos = torch.tensor(self.row.cfg.eos_ids, device=processed.device).unsqueeze(0)  # (1, e)
                processed[rows, eos] = float("-inf")
            return processed.argmax(-1)  # (n,)
        probs = torch.softmax(scaled, dim=-1, dtype=torch.float32)  # (n, V)
        blocked = ~torch.isfinite(probs).all(-1)  # (n,) everything forbidden: a placeholder draw, never taken
        probs[blocked] = 1.0
        return torch.multinomial(probs, num_samples=1, generator=self.row.generator).squeeze(-1)  # (n,)

    # ------------------------------------------------------------------ accept, renoise, stop, commit

    def take(self, cand: torch.Tensor, proposal: torch.Tensor, allowed: torch.Tensor, conf: torch.Tensor,
             entropy: torch.Tensor | None, processed: torch.Tensor):
        row, cfg = self.row, self.row.cfg
        shown_before = self.shown.clone()
        if self.finishing:
            return self._commit(cand, proposal, allowed, conf, shown_before)
        order, k = row.accept.choose(conf, entropy, cfg.steps - self.steps_here, row.generator)
        chosen = order[:k]
        chosen = chosen[allowed[chosen]]  # (a,) a proposal every token of which is forbidden is never accepted
        accepted = torch.zeros(cand.numel(), dtype=torch.bool, device=cand.device)  # (n,)
        accepted[chosen] = True
        # Renoise: every candidate not accepted gets a fresh random token (drawn for the whole window, as the
        # reference draws it, before the stop check so the next window's draws line up).
        noise = torch.randint(0, cfg.vocab_size, (self.canvas.numel(),), generator=row.generator).to(cand.device)
        self.canvas[cand] = torch.where(accepted, proposal, noise[cand])
        self.shown[cand] = torch.where(accepted, proposal, -1)
        self.steps_here += 1
        greedy = processed.argmax(-1)  # (n,) the argmax canvas
        stable = len(self.argmaxes) == self.argmaxes.maxlen and all(torch.equal(a, greedy) for a in self.argmaxes)
        if cfg.stability == 0:
            stable = True
        self.argmaxes.append(greedy)
        confident = entropy is not None and float(entropy.mean()) < cfg.confidence_stop
        if (stable and confident) or self.steps_here >= cfg.steps:
            self.finishing = True
            return self._commit(cand, greedy, allowed.new_ones(greedy.shape) & torch.isfinite(
                processed.gather(-1, greedy.unsqueeze(-1)).squeeze(-1)), self._conf_of(greedy), shown_before)
        return self._record(shown_before, {})

    def _conf_of(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.row.last_own_probability(tokens)  # (n,) the model's probability of each token

    def _commit(self, cand, tokens, allowed, conf, shown_before):
        """Write the window's final tokens into ``x``: the EOS that end slots first (``_end_slots``), then the rest
        through the ``admissible`` checks, most confident first."""
        row = self.row
        inside = self.in_canvas[cand]  # (n,)
        refused = len(self.no_eos)
        final, done = self._end_slots(cand, tokens, allowed & inside, conf)
        refused = len(self.no_eos) > refused  # a refused EOS: the next step proposes another token there
        rest = inside & ~done  # (n,)
        order = torch.where(rest, conf, -1.0).argsort(descending=True, stable=True)
        pos_out, tok_out, conf_out = row.commit(order, int(rest.sum()), cand + self.lo, tokens, allowed & rest, conf)
        final.update({p: (t, c) for p, t, c in zip(pos_out, tok_out, conf_out)})
        for p in final:
            if self.lo <= p < self.hi:
                j = p - self.lo
                self.fixed[j] = True
                self.canvas[j] = row.x[p]
                self.shown[j] = -1  # committed: shown as written from now on
        if bool(((~self.fixed) & self.in_canvas).any()):
            if not final and not refused:
                raise ConstraintError(
                    f"no admissible token for positions {(cand + self.lo).tolist()[:8]} under the job's targets; "
                    f"loosen the targets or give the slot more room")
            return self._record(shown_before, final)
        self.open = False
        return self._record(shown_before, final)

    def _end_slots(self, cand, tokens, allowed, conf) -> tuple[dict[int, tuple[int, float]], torch.Tensor]:
        """An EOS written in a slot ends it: the EOS and the empty token at every later position of the slot (here
        and in later windows) are written as one, before the window's other tokens, and only if every
        ``admissible`` check takes the EOS with the slot ended there, so a safety guard judges the text the slot
        will have. A refused EOS is not proposed at its position again in this window. Returns the writes and
        the candidates (n,) bool they settled (refused EOS included: they stay undecided)."""
        row = self.row
        out: dict[int, tuple[int, float]] = {}
        eos, positions = set(row.cfg.eos_ids), (cand + self.lo).tolist()
        done = [False] * len(positions)
        toks, ok = tokens.tolist(), allowed.tolist()
        for i in sorted((i for i in range(len(positions)) if ok[i] and toks[i] in eos), key=positions.__getitem__):
            if done[i]:
                continue  # an earlier EOS ended this slot
            done[i] = True
            p = positions[i]
            b = next(end for start, end in self.runs if start <= p < end)
            tail = row.x[p + 1:b].tolist()  # the rest of the slot
            trial = row.x.clone()  # (L,) the slot ended at p
            trial[p + 1:b] = row.empty_id
            if any(t not in (row.mask_id, row.empty_id) for t in tail) or \
                    not all(c.admissible(row.proc_index, trial, p, toks[i]) for c in row.checkers):
                self.no_eos.add(p)  # it would erase text already written, or a checker refuses the ending
                continue
            out[p] = (toks[i], float(conf[i]))
            out.update({q: (row.empty_id, 1.0) for q, t in zip(range(p + 1, b), tail) if t != row.empty_id})
            row.x[p], row.confidence[p] = toks[i], float(conf[i])
            row.x[p + 1:b], row.confidence[p + 1:b] = row.empty_id, 1.0
            done = [d or p < q < b for d, q in zip(done, positions)]
        return out, torch.tensor(done, dtype=torch.bool, device=cand.device)

    def _record(self, shown_before: torch.Tensor, final: dict[int, tuple[int, float]]):
        """Display changes of this step in x positions: accepted tokens as commits, renoised ones as re-masks,
        then the window's final tokens (where they differ from what was shown)."""
        width = self.hi - self.lo
        before, after = shown_before[:width].tolist(), self.shown[:width].tolist()
        commits: dict[int, tuple[int, float]] = {}
        remasked: list[tuple[int, int]] = []
        conf = self.row.step_conf  # window-relative -> confidence of this step's proposals
        for j, (b, a) in enumerate(zip(before, after)):
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
