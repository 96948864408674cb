"""The one sampler: masked-diffusion denoising of a batch of canvases (pure torch; no Celery, no DB).

Each step runs the model once over the canvas, proposes a token for every still-masked position
(argmax, or Gumbel-max at ``temperature`` > 0), and commits the ``k`` most confident of them inside
the row's current block; the rest stay masked for later steps. ``k`` follows a linear schedule: a
block with ``m`` masks and ``s`` steps commits ``m / s`` per step (LLaDA's schedule), so the number of
forward passes is ``steps`` whatever the canvas length.

Invariants (property-tested in tests/workers/test_sampler.py):
  * a fixed position never changes;
  * no free position is left masked at the end;
  * the same seed gives the same output, whatever else is in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from redraft.errors import ConstraintError, InvalidRequest


class LogitsProcessor(Protocol):
    """A plug-in that edits logits before tokens are chosen.

    ``__call__(logits (b, L, V) float32, x (b, L) long, free (b, L) bool, rows: list[int]) -> (b, L, V)``
    where ``rows[j]`` is the batch row that ``logits[j]`` belongs to (the sampler only passes rows
    that still have work). It may edit ``logits`` in place and return it. Hard constraints set
    forbidden tokens to ``-inf``; the sampler still ranks commits by the model's own probability of
    the chosen token, so a constraint decides *what* is written, not *when*.
    """

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int]) -> torch.Tensor: ...


class ForbidTokens:
    """Hard mask: never write these ids at a free position (mask, pad, BOS, EOS, ...)."""

    def __init__(self, token_ids: Sequence[int], vocab_size: int) -> None:
        self.ids = torch.tensor(sorted({int(t) for t in token_ids if 0 <= t < vocab_size}), dtype=torch.long)  # (k,)

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int]) -> torch.Tensor:
        # k columns of the (b, L, V) logits, not a V-wide mask: a handful of special ids.
        logits.index_fill_(-1, self.ids.to(logits.device), float("-inf"))
        return logits


REMASKING = ("low_confidence", "random")


class Admissible(Protocol):
    """Optional second hook of a processor: a final check of one commit in the light of the commits
    made earlier in the same step (the logits mask saw the canvas before any of them).

    ``admissible(row, x_row (L,), position, token) -> bool``; a refused commit stays masked for a
    later step. Safety guards use it so that two neighbours committed in one step cannot form a
    banned phrase together.
    """

    def admissible(self, row: int, x_row: torch.Tensor, position: int, token: int) -> bool: ...


@dataclass(frozen=True)
class SamplerConfig:
    steps: int  # forward passes for the whole canvas (fewer if there are fewer masks than steps)
    block_size: int | None = None  # semi-autoregressive blocks of this many positions, left to right
    temperature: float = 0.0  # 0: argmax; > 0: Gumbel-max sampling at this temperature
    remasking: str = "low_confidence"  # which proposals to commit first: most confident, or random
    # Self-correction (ReMDM-style): during a run, up to ``remask_budget`` already committed tokens whose
    # commit-time confidence is below ``remask_below`` go back to [MASK] and are written again later, with
    # more context. Fixed positions are never touched. 0 turns it off.
    remask_budget: int = 0
    remask_below: float = 0.5
    # Parallel decoding (Fast-dLLM): each step commits every masked position of the current block whose
    # confidence is at least this (always at least one), instead of following the ``steps`` schedule.
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InvalidRequest(f"steps must be at least 1; got {self.steps}")
        if self.block_size is not None and self.block_size < 1:
            raise InvalidRequest(f"block_size must be at least 1 (or omitted for one block); got {self.block_size}")
        if self.temperature < 0:
            raise InvalidRequest(f"temperature must be 0 (greedy) or positive; got {self.temperature}")
        if self.remasking not in REMASKING:
            raise InvalidRequest(f"remasking must be one of {', '.join(REMASKING)}; got {self.remasking!r}")
        if self.remask_budget < 0:
            raise InvalidRequest(f"remask_budget must be 0 (off) or positive; got {self.remask_budget}")
        if not 0.0 < self.remask_below <= 1.0:
            raise InvalidRequest(f"remask_below must be a confidence in (0, 1]; got {self.remask_below}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise InvalidRequest(f"threshold must be a confidence in (0, 1] (or omitted); got {self.threshold}")


@dataclass
class StepRecord:
    step: int  # 0-based index of this row's denoising step
    positions: list[int]  # committed at this step
    tokens: list[int]
    confidences: list[float]  # probability of the committed token when it was committed
    remasked: list[tuple[int, int]] = field(default_factory=list)  # (position, token it held) sent back to [MASK]


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, L)
    confidence: torch.Tensor  # (B, L) commit-time confidence of the final token; 1.0 on fixed positions
    history: list[list[StepRecord]] = field(default_factory=list)  # per row


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


@dataclass(eq=False)
class Row:
    """One canvas being denoised: its own config, seed, processors and progress.

    Rows are independent: a row's tokens depend only on its own canvas, config, generator and
    processors, never on the rows that shared its forward passes (rows of equal length are stacked
    into one forward pass; ``attention_mask`` marks padding, which must be ``fixed``).
    ``proc_index`` is the batch index the processors know this row by. ``on_step(record)`` is called
    after each of the row's steps; raising from it stops the row (the caller decides what that means).
    """

    x: torch.Tensor  # (L,) token ids, mask_id at positions to write
    fixed: torch.Tensor  # (L,) bool
    cfg: SamplerConfig
    generator: torch.Generator
    mask_id: int
    processors: Sequence[LogitsProcessor] = ()
    attention_mask: torch.Tensor | None = None  # (L,) bool; None: attend everywhere
    on_step: Callable[[StepRecord], None] | None = None
    proc_index: int = 0
    step: int = 0  # steps taken so far
    last: StepRecord | None = None  # the record of the row's latest step (None: it had nothing to do)

    def __post_init__(self) -> None:
        self.x = self.x.clone()  # never mutate the caller's canvas
        self.free = (self.x == self.mask_id) & ~self.fixed  # (L,) positions this row may write and re-mask
        self.blocks = plan(self.free.nonzero().squeeze(1).tolist(), self.cfg.steps, self.cfg.block_size)
        self.block, self.step_in_block, self.remask_left = 0, 0, self.cfg.remask_budget
        self.confidence = torch.where(self.fixed, 1.0, 0.0).to(torch.float32)  # (L,)
        self.history: list[StepRecord] = []
        self.positions = torch.arange(self.x.numel(), device=self.x.device)  # (L,)
        self.checkers = [p for p in self.processors if hasattr(p, "admissible")]

    @property
    def active(self) -> bool:
        """Whether the row still has masks to write (moves past finished blocks)."""
        while self.block < len(self.blocks) and not self._block_masks().any():
            self.block, self.step_in_block = self.block + 1, 0
        return self.block < len(self.blocks)

    def _block_masks(self) -> torch.Tensor:
        lo, hi, _ = self.blocks[self.block]
        return (self.x == self.mask_id) & self.free & (self.positions >= lo) & (self.positions < hi)  # (L,)

    def advance(self, raw: torch.Tensor) -> StepRecord:
        """One step from this row's model logits ``raw`` (L, V), which it may edit in place: choose, commit,
        maybe self-correct."""
        cfg, x = self.cfg, self.x
        still = ((x == self.mask_id) & self.free).unsqueeze(0)  # (1, L)
        lo, hi, block_steps = self.blocks[self.block]
        in_block = (self.positions >= lo) & (self.positions < hi)
        cand = (still[0] & in_block).nonzero().squeeze(1)  # (n,)
        own = raw[cand]  # (n, V) a copy: the model's own distribution, which ranks the commits
        logits = raw.unsqueeze(0)  # (1, L, V) the processors edit the row's logits in place
        for proc in self.processors:
            logits = proc(logits, x.unsqueeze(0), still, [self.proc_index])
        row_logits = logits[0, cand]  # (n, V) after the processors: decides *what* may be written
        if cfg.temperature > 0:
            # Categorical sampling at the temperature by inverting the CDF with one uniform per position
            # from this row's own generator (``right=True`` never lands on a zero-probability token).
            scaled = (row_logits / cfg.temperature).softmax(-1)  # (n, V)
            blocked = ~torch.isfinite(row_logits.max(-1).values)  # (n,) nothing allowed at all: never sampled
            scaled[blocked] = 1.0
            cdf = scaled.cumsum(-1)  # (n, V)
            u = torch.rand(cand.numel(), 1, generator=self.generator).to(x.device) * cdf[:, -1:]  # (n, 1)
            proposal = torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max(cdf.shape[-1] - 1)  # (n,)
        else:
            proposal = row_logits.argmax(-1)  # (n,)
        allowed = row_logits.gather(-1, proposal.unsqueeze(-1)).squeeze(-1) > float("-inf")  # (n,)
        # The model's own probability of each proposal ranks the commits: p = exp(z_t - logsumexp(z)).
        conf = (own.gather(-1, proposal.unsqueeze(-1)).squeeze(-1) - own.logsumexp(-1)).exp()  # (n,)
        if cfg.threshold is not None:
            # Fast-dLLM: every proposal at or above the threshold, at least one; no planned end.
            k = max(1, int((conf >= cfg.threshold).sum()))
            last_planned = False
        else:
            last_planned = self.step_in_block >= block_steps - 1
            k = -(-cand.numel() // max(1, block_steps - self.step_in_block))  # ceil: masks left / steps left
        order = torch.rand(cand.numel(), generator=self.generator).to(x.device) if cfg.remasking == "random" else conf
        pos_out, tok_out, conf_out = [], [], []
        # One host copy of each per-candidate vector (a GPU syncs once per step, not once per commit).
        cand_l, prop_l, allowed_l, conf_l = cand.tolist(), proposal.tolist(), allowed.tolist(), conf.tolist()
        for c in order.argsort(descending=True, stable=True).tolist():
            if len(pos_out) == k:
                break
            p, t = cand_l[c], prop_l[c]
            if not allowed_l[c] or not all(chk.admissible(self.proc_index, x, p, t) for chk in self.checkers):
                continue
            if self.checkers:  # they must see this step's earlier commits
                x[p] = t
            pos_out.append(p), tok_out.append(t), conf_out.append(conf_l[c])
        if pos_out:
            at = torch.tensor(pos_out, device=x.device)
            x[at] = torch.tensor(tok_out, device=x.device)
            self.confidence[at] = torch.tensor(conf_out, dtype=torch.float32, device=x.device)
        if not pos_out and (last_planned or cfg.threshold is not None):
            raise ConstraintError(
                f"no admissible token for positions {cand.tolist()[:8]} under the job's targets; "
                f"loosen the targets or give the slot more room"
            )
        remasked: list[tuple[int, int]] = []
        if not last_planned and bool(self._block_masks().any()):
            remasked = self_correct(x, self.free, self.confidence, in_block, pos_out, self, cfg, self.mask_id)
        rec = StepRecord(self.step, pos_out, tok_out, [round(c, 6) for c in conf_out], remasked)
        self.history.append(rec)
        self.step_in_block += 1
        self.step += 1
        self.last = rec
        if self.on_step is not None:
            self.on_step(rec)
        return rec


def forward_rows(logits_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                 rows: Sequence[Row]) -> list[torch.Tensor]:
    """Model logits for each row, one forward pass per group of rows of equal length."""
    out: list[torch.Tensor | None] = [None] * len(rows)
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.x.numel(), []).append(i)
    for members in groups.values():
        x = torch.stack([rows[i].x for i in members])  # (b, L)
        masks = [rows[i].attention_mask for i in members]
        attn = None if all(m is None for m in masks) else torch.stack(
            [m if m is not None else torch.ones_like(rows[i].x, dtype=torch.bool) for i, m in zip(members, masks)])
        raw = logits_fn(x, attn)  # (b, L, V)
        for j, i in enumerate(members):
            out[i] = raw[j]
    return out  # type: ignore[return-value]


@torch.no_grad()
def step(logits_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], rows: Sequence[Row]) -> list[Row]:
    """One denoising step for every active row (one forward pass per length); returns the rows that
    took it. A row whose ``advance`` raises is not retried here: the exception propagates."""
    active = [r for r in rows if r.active]
    for r in rows:
        r.last = None
    for row, raw in zip(active, forward_rows(logits_fn, active)):
        row.advance(raw)
    return active


@torch.no_grad()
def denoise(
    logits_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    x: torch.Tensor,
    fixed: torch.Tensor,
    mask_id: int,
    cfg: SamplerConfig,
    generators: Sequence[torch.Generator],
    processors: Sequence[LogitsProcessor] = (),
    attention_mask: torch.Tensor | None = None,
    on_step: Callable[[int, list[StepRecord | None]], None] | None = None,
) -> SampleResult:
    """Denoise ``x`` (B, L) until no free position holds ``mask_id``.

    ``logits_fn(input_ids (b, L), attention_mask (b, L) | None) -> (b, L, V)`` is the model
    adapter's ``logits``. ``generators[i]`` seeds row ``i`` alone, so a row's output does not depend
    on its batch-mates. ``on_step(step, records)`` is called after every step with one record per
    row (None for rows that had nothing to do); raising from it stops the run (cancellation).

    A proposal whose processed logit is ``-inf`` (every token forbidden there, for now) is not
    committed; nor is one a processor's ``admissible`` refuses. Such positions wait for a later step;
    when a block's planned steps are spent, extra steps follow until it is complete, and a step that
    can commit nothing at all raises ``ConstraintError`` rather than loop or write a forbidden token.
    """
    b = x.shape[0]
    if len(generators) != b:
        raise ValueError(f"need one generator per row: {b} rows, {len(generators)} generators")
    rows = [Row(x[i], fixed[i], cfg, generators[i], mask_id, processors,
                None if attention_mask is None else attention_mask[i], proc_index=i) for i in range(b)]
    n = 0
    while step(logits_fn, rows):
        if on_step is not None:
            on_step(n, [r.last for r in rows])
        n += 1
    return SampleResult(tokens=torch.stack([r.x for r in rows]), confidence=torch.stack([r.confidence for r in rows]),
                        history=[r.history for r in rows])


def self_correct(x_row: torch.Tensor, free_row: torch.Tensor, conf_row: torch.Tensor, in_block: torch.Tensor,
                 just_committed: list[int], st: Row, cfg: SamplerConfig, mask_id: int) -> list[tuple[int, int]]:
    """ReMDM-style remasking: send the least confident earlier commits of this block back to [MASK].

    At most half as many as this step committed (so the canvas keeps moving) and never more than the
    run's remaining budget; never a fixed position, never a token committed in this very step, never
    on a block's last planned step (so the block still finishes on schedule).
    """
    n = min(st.remask_left, (len(just_committed) + 1) // 2)
    if n <= 0:
        return []
    eligible = free_row & in_block & (x_row != mask_id) & (conf_row < cfg.remask_below)  # (L,)
    eligible[just_committed] = False
    where = eligible.nonzero().squeeze(1)
    if where.numel() == 0:
        return []
    lowest = where[conf_row[where].argsort(stable=True)[:n]]
    out = [(int(p), int(x_row[p])) for p in lowest]
    x_row[lowest] = mask_id
    conf_row[lowest] = 0.0
    st.remask_left -= len(out)
    return out
