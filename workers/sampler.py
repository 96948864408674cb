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

from redraft.errors import InvalidRequest


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
        self.banned = torch.zeros(vocab_size, dtype=torch.bool)  # (V,)
        self.banned[list(token_ids)] = True

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int]) -> torch.Tensor:
        banned = self.banned.to(logits.device)
        logits[..., : banned.numel()].masked_fill_(banned, float("-inf"))
        return logits


REMASKING = ("low_confidence", "random")


@dataclass(frozen=True)
class SamplerConfig:
    steps: int  # forward passes for the whole canvas (fewer if there are fewer masks than steps)
    block_size: int | None = None  # semi-autoregressive blocks of this many positions, left to right
    temperature: float = 0.0  # 0: argmax; > 0: Gumbel-max sampling at this temperature
    remasking: str = "low_confidence"  # which proposals to commit first: most confident, or random

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InvalidRequest(f"steps must be at least 1; got {self.steps}")
        if self.block_size is not None and self.block_size < 1:
            raise InvalidRequest(f"block_size must be at least 1 (or omitted for one block); got {self.block_size}")
        if self.temperature < 0:
            raise InvalidRequest(f"temperature must be 0 (greedy) or positive; got {self.temperature}")
        if self.remasking not in REMASKING:
            raise InvalidRequest(f"remasking must be one of {', '.join(REMASKING)}; got {self.remasking!r}")


@dataclass
class StepRecord:
    step: int  # 0-based index of this row's denoising step
    positions: list[int]  # committed at this step
    tokens: list[int]
    confidences: list[float]  # probability of the committed token when it was committed


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, L)
    confidence: torch.Tensor  # (B, L) commit-time confidence; 1.0 on fixed positions
    history: list[list[StepRecord]] = field(default_factory=list)  # per row


def plan(free: list[int], steps: int, block_size: int | None) -> list[tuple[int, int, int]]:
    """A row's schedule: for each step, (block start, block end, tokens to commit).

    Steps are shared across blocks in proportion to their masks (a block of a long gap gets more
    steps than a block with one mask) and each block commits its masks evenly over its steps.
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
    schedule = []
    for b in sorted(blocks):
        m = blocks[b]
        s = min(m, max(1, round(steps * m / total)))
        base, extra = divmod(m, s)
        lo, hi = bounds[b]
        schedule += [(lo, hi, base + (1 if i < extra else 0)) for i in range(s)]
    return schedule


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
    """
    x = x.clone()  # (B, L); never mutate the caller's canvas
    b, length = x.shape
    if len(generators) != b:
        raise ValueError(f"need one generator per row: {b} rows, {len(generators)} generators")
    free = (x == mask_id) & ~fixed  # (B, L) positions still to write
    plans = [plan(free[i].nonzero().squeeze(1).tolist(), cfg.steps, cfg.block_size) for i in range(b)]
    confidence = torch.where(fixed, 1.0, 0.0).to(torch.float32)  # (B, L)
    history: list[list[StepRecord]] = [[] for _ in range(b)]
    positions = torch.arange(length, device=x.device)  # (L,)
    for step in range(max((len(p) for p in plans), default=0)):
        rows = [i for i in range(b) if step < len(plans[i])]
        idx = torch.tensor(rows, device=x.device)
        still = (x[idx] == mask_id) & ~fixed[idx]  # (b, L)
        raw = logits_fn(x[idx], None if attention_mask is None else attention_mask[idx])  # (b, L, V)
        logits = raw.clone() if processors else raw
        for proc in processors:
            logits = proc(logits, x[idx], still, rows)
        records: list[StepRecord | None] = [None] * b
        for j, i in enumerate(rows):
            lo, hi, k = plans[i][step]
            cand = (still[j] & (positions >= lo) & (positions < hi)).nonzero().squeeze(1)  # (n,)
            if cand.numel() == 0:
                continue
            row_logits = logits[j, cand].double()  # (n, V) float64: Gumbel noise on float32 ties too often
            probs = raw[j, cand].double().softmax(-1)  # (n, V) the model's own distribution ranks the commits
            if cfg.temperature > 0:
                u = torch.rand(row_logits.shape, generator=generators[i], dtype=torch.float64).to(x.device)
                gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
                proposal = (row_logits / cfg.temperature + gumbel).argmax(-1)  # (n,)
            else:
                proposal = row_logits.argmax(-1)  # (n,)
            conf = probs.gather(-1, proposal.unsqueeze(-1)).squeeze(-1)  # (n,)
            if cfg.remasking == "random":
                order = torch.rand(cand.numel(), generator=generators[i]).to(x.device)
            else:
                order = conf
            chosen = order.topk(min(k, cand.numel())).indices  # (k,)
            pos = cand[chosen]
            x[i, pos] = proposal[chosen]
            confidence[i, pos] = conf[chosen].float()
            rec = StepRecord(step, pos.tolist(), proposal[chosen].tolist(), conf[chosen].float().tolist())
            history[i].append(rec)
            records[i] = rec
        if on_step is not None:
            on_step(step, records)
    return SampleResult(tokens=x, confidence=confidence, history=history)
