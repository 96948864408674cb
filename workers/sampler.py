"""The one sampler: denoising a batch of canvases, for both kinds of diffusion (pure torch; no Celery, no DB).

Each step, for each row: the model reads the row's window (the whole canvas for masked models, one canvas
of ``canvas_length`` tokens for block diffusion), then **propose** (a token for every undecided position of
the window: argmax, or a sample at the step's temperature), **choose** (the acceptance rule: LLaDA's
schedule, a confidence threshold, or DiffusionGemma's entropy bound), **commit** (through the processors'
``admissible`` checks) and **correct** (masked models may re-mask a few weak earlier commits; uniform noise
renoises whatever was not accepted). What an undecided position holds and when a row is done is the row's
noise policy (``workers/policies/``), chosen by the model family; nothing else differs.

Invariants (property-tested in tests/workers/test_sampler.py and tests/workers/policies/test_uniform_noise.py):
  * a fixed position never changes;
  * no free position is left undecided at the end;
  * the same seed gives the same output, whatever else is in the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, get_args

import torch

from redraft.errors import InvalidRequest
from redraft.jobs import Cache, Remasking, job_default
from redraft.workers.policies import acceptance
from redraft.workers.policies.mask_noise import MaskNoise, plan, step_group  # noqa: F401  (plan: part of the sampler's API)
from redraft.workers.policies.temperature import Temperature
from redraft.workers.policies.uniform_noise import UniformNoise
from redraft.workers.policies.uniform_noise import step_group as uniform_step_group


class LogitsProcessor(Protocol):
    """A plug-in that edits logits before tokens are chosen.

    ``__call__(logits (b, W, V) float32, x (b, L) long, free (b, L) bool, rows: list[int], offset: int)
    -> (b, W, V)`` where ``logits[:, i]`` is for canvas position ``offset + i`` (the row's window: the
    whole canvas for masked models, ``offset`` 0; one canvas of a block-diffusion model otherwise; positions
    at or past ``L`` are overflow no processor constrains), ``x`` is the canvas with the mask id at every
    undecided position, ``free`` marks the positions this step may write, and ``rows[j]`` is the batch row
    ``logits[j]`` belongs to. It may edit ``logits`` in place and return it. Hard constraints set forbidden
    tokens to ``-inf``; the sampler still ranks commits by the model's own probability of the chosen token,
    so a constraint decides *what* is written, not *when*. A processor that only ever sets logits to ``-inf``
    says so with ``masks_only = True``: the sampler then reads the model's own logit of an allowed token from the
    processed logits instead of keeping a copy of them.
    """

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int],
                 offset: int = 0) -> torch.Tensor: ...


REMASKING = get_args(Remasking)  # the values, from the one definition
CACHES = get_args(Cache)
NOISE = ("mask", "uniform")


class Admissible(Protocol):
    """Optional second hook of a processor: a final check of one commit in the light of the commits
    made earlier in the same step (the logits mask saw the canvas before any of them).

    ``admissible(row, x_row (L,), position, token) -> bool``; a refused commit stays undecided for a
    later step. Safety guards use it so that two neighbours committed in one step cannot form a
    banned phrase together.
    """

    def admissible(self, row: int, x_row: torch.Tensor, position: int, token: int) -> bool: ...


@dataclass(frozen=True)
class SamplerConfig:
    steps: int  # forward passes for the whole canvas (masked) or at most per canvas (block diffusion)
    block_size: int | None = None  # semi-autoregressive blocks of this many positions, left to right (masked)
    # Defaults shared with a job's parameters come from redraft.jobs.JobParams (written once, there).
    temperature: float = job_default("temperature")  # one for every step: 0 argmax, > 0 sample (unless t_max/t_min)
    remasking: str = job_default("remasking")  # which proposals to commit first: most confident, or random
    # Self-correction (ReMDM-style, masked noise): during a run, up to ``remask_budget`` already committed
    # tokens whose commit-time confidence is below ``remask_below`` go back to [MASK] and are written again
    # later, with more context. Fixed positions are never touched. 0 turns it off.
    remask_budget: int = job_default("remask_budget")
    remask_below: float = job_default("remask_below")
    # Parallel decoding (Fast-dLLM): each step takes every proposal whose confidence is at least this
    # (always at least one), instead of following the ``steps`` schedule.
    threshold: float | None = None
    t_max: float | None = None  # a linear temperature schedule from t_max at the first step ...
    t_min: float | None = None  # ... to t_min at the last (DiffusionGemma's default); overrides temperature
    # DiffusionGemma's acceptance: the lowest-entropy proposals whose summed entropy minus the largest is at
    # most this (always at least one). Takes precedence over ``threshold`` and the schedule.
    entropy_bound: float | None = None
    # What an undecided position holds: "mask" (the mask token) or "uniform" (random tokens, renoised each
    # step, in windows of ``canvas_length`` tokens drawn from ``vocab_size`` ids); set by the model family.
    noise: str = "mask"
    canvas_length: int | None = None
    vocab_size: int | None = None
    stability: int = 1  # uniform: a window ends once its argmax canvas held for this many steps ...
    confidence_stop: float = 0.005  # ... and its mean entropy is below this (or after ``steps`` steps)
    eos_ids: tuple[int, ...] = ()  # uniform: an EOS written in a slot ends the slot
    # "prefix": the model adapter keeps each row's block-wise prefix cache (Fast-dLLM; approximate, ModernBERT
    # masked models only, workers/prefix_cache.py); None reads the whole canvas every step.
    cache: str | None = job_default("cache")

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InvalidRequest(f"steps must be at least 1; got {self.steps}")
        if self.block_size is not None and self.block_size < 1:
            raise InvalidRequest(f"block_size must be at least 1 (or omitted for one block); got {self.block_size}")
        if self.temperature < 0:
            raise InvalidRequest(f"temperature must be 0 (greedy) or positive; got {self.temperature}")
        if (self.t_max is None) != (self.t_min is None) or (self.t_max is not None and not 0 < self.t_min <= self.t_max):
            raise InvalidRequest(f"t_max and t_min: both or neither, 0 < t_min <= t_max; got {self.t_max}, {self.t_min}")
        if self.remasking not in REMASKING:
            raise InvalidRequest(f"remasking must be one of {', '.join(REMASKING)}; got {self.remasking!r}")
        if self.remask_budget < 0:
            raise InvalidRequest(f"remask_budget must be 0 (off) or positive; got {self.remask_budget}")
        if not 0.0 < self.remask_below <= 1.0:
            raise InvalidRequest(f"remask_below must be a confidence in (0, 1]; got {self.remask_below}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise InvalidRequest(f"threshold must be a confidence in (0, 1] (or omitted); got {self.threshold}")
        if self.entropy_bound is not None and not self.entropy_bound > 0:
            raise InvalidRequest(f"entropy_bound must be positive (or omitted); got {self.entropy_bound}")
        if self.noise not in NOISE:
            raise InvalidRequest(f"noise must be one of {', '.join(NOISE)}; got {self.noise!r}")
        if self.cache is not None and (self.cache not in CACHES or self.noise != "mask"):
            raise InvalidRequest(f"cache must be one of {', '.join(CACHES)} (or omitted), for mask noise only; got "
                                 f"{self.cache!r} with {self.noise} noise")

    @property
    def schedule(self) -> Temperature:
        return Temperature(self.temperature, self.t_max, self.t_min)


@dataclass
class StepRecord:
    step: int  # 0-based index of this row's denoising step
    positions: list[int]  # committed at this step
    tokens: list[int]
    confidences: list[float]  # probability of the committed token when it was committed
    remasked: list[tuple[int, int]] = field(default_factory=list)  # (position, token it held) sent back to undecided


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, L)
    confidence: torch.Tensor  # (B, L) commit-time confidence of the final token; 1.0 on fixed positions
    history: list[list[StepRecord]] = field(default_factory=list)  # per row


@dataclass(eq=False)
class Row:
    """One canvas being denoised: its own config, seed, processors and progress.

    Rows are independent: a row's tokens depend only on its own canvas, config, generator and
    processors, never on the rows that shared its forward passes (rows the model reads with equal
    shapes are stacked into one forward pass; ``attention_mask`` marks padding, which must be ``fixed``).
    ``proc_index`` is the batch index the processors know this row by. ``on_step(record)`` is called
    after each of the row's steps; raising from it stops the row (the caller decides what that means).
    ``context`` belongs to the model adapter (DiffusionGemma: the row's encoder cache).
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
    empty_id: int = 0  # the token an EOS-ended slot is filled with (uniform noise)
    context: Any = None

    def __post_init__(self) -> None:
        self.x = self.x.clone()  # never mutate the caller's canvas
        self.free = (self.x == self.mask_id) & ~self.fixed  # (L,) positions this row may write and re-mask
        self.confidence = torch.where(self.fixed, 1.0, 0.0).to(torch.float32)  # (L,)
        self.history: list[StepRecord] = []
        self.positions = torch.arange(self.x.numel(), device=self.x.device)  # (L,)
        self.checkers = [p for p in self.processors if hasattr(p, "admissible")]
        self.accept = acceptance(self.cfg)
        self.noise = UniformNoise(self) if self.cfg.noise == "uniform" else MaskNoise(self)
        self._device_generator: torch.Generator | None = None

    @property
    def active(self) -> bool:
        """Whether the row still has positions to decide (opens the next block or window as it goes)."""
        return self.noise.active

    def window(self) -> tuple[int, int]:
        """The canvas positions the model reads this step: ``raw[0]`` is position ``window()[0]``."""
        return self.noise.window()

    def model_input(self) -> torch.Tensor:
        """What the model reads this step: (L,) with masks, or (W,) the window's tokens and noise."""
        return self.noise.model_input()

    def advance(self, raw: torch.Tensor) -> StepRecord:
        """One step from this row's model logits ``raw`` (W, V) over its window, which it may edit in place:
        propose, choose, commit, correct. (Rows of a forward pass step together: :func:`advance_group`.)"""
        error = advance_group([self], raw.unsqueeze(0))[0]
        if error is not None:
            raise error
        return self.last

    def generator_on(self, device: torch.device) -> torch.Generator:
        """The generator for draws made on ``device``: the row's own on the CPU; on an accelerator (where a CPU
        generator cannot draw) one of that device, seeded once from the row's seed, so the same seed still gives
        the same text there, alone or batched."""
        if device.type == "cpu":
            return self.generator
        if self._device_generator is None:
            self._device_generator = torch.Generator(device=device).manual_seed(self.generator.initial_seed())
        return self._device_generator

    def record(self, positions: list[int], tokens: list[int], confidences: list[float],
               remasked: list[tuple[int, int]]) -> StepRecord:
        """Close the row's step: its record joins the history and goes to ``on_step``."""
        rec = StepRecord(self.step, positions, tokens, [round(c, 6) for c in confidences], remasked)
        self.history.append(rec)
        self.step += 1
        self.last = rec
        if self.on_step is not None:
            self.on_step(rec)
        return rec

    def commit(self, order: torch.Tensor, k: int, cand: torch.Tensor, proposal: torch.Tensor,
               allowed: torch.Tensor, conf: torch.Tensor) -> tuple[list[int], list[int], list[float]]:
        """Write up to ``k`` proposals into ``x``, in ``order``, skipping forbidden ones and any a checker
        refuses (checkers see this step's earlier commits). ``cand`` holds canvas positions."""
        x = self.x
        pos_out, tok_out, conf_out = [], [], []
        # One host copy of each per-candidate vector (a GPU syncs once per step, not once per commit).
        cand_l, prop_l, allowed_l, conf_l = cand.tolist(), proposal.tolist(), allowed.tolist(), conf.tolist()
        for c in order.tolist():
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
        return pos_out, tok_out, conf_out


Groups = list[tuple[list[int], torch.Tensor]]  # (indices into the rows, their logits (b, W, V)) per forward pass
Forward = Callable[[Sequence[Row]], Groups]


def forward_groups(logits_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
                   rows: Sequence[Row]) -> Groups:
    """A masked model's logits for rows, one forward pass per group of rows of equal length."""
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.x.numel(), []).append(i)
    out = []
    for members in groups.values():
        x = torch.stack([rows[i].model_input() for i in members])  # (b, L)
        masks = [rows[i].attention_mask for i in members]
        attn = None if all(m is None for m in masks) else torch.stack(
            [m if m is not None else torch.ones_like(rows[i].x, dtype=torch.bool) for i, m in zip(members, masks)])
        out.append((members, logits_fn(x, attn)))  # (b, L, V)
    return out


def per_row(groups: Groups, n: int) -> list[torch.Tensor]:
    """The logits of each of ``n`` rows, (W, V) each, from the groups that computed them."""
    out: list[torch.Tensor | None] = [None] * n
    for members, raw in groups:
        for j, i in enumerate(members):
            out[i] = raw[j]
    return out  # type: ignore[return-value]


def rows_forward(model) -> Forward:
    """How to run the model over rows, as groups of rows that shared a forward pass: an adapter's own
    ``forward_groups`` (DiffusionGemma's keeps an encoder cache per row), or, for a bare ``logits(input_ids,
    attention_mask)`` function of a masked model, :func:`forward_groups`."""
    if hasattr(model, "forward_groups"):
        return model.forward_groups
    return lambda rows: forward_groups(model, rows)


def advance_group(rows: Sequence[Row], raw: torch.Tensor) -> list[BaseException | None]:
    """One step for ``rows`` from the logits (b, W, V) of their shared forward pass, all rows of the group at once
    under their noise policy's ``step_group`` (a forward pass serves one model, so one kind of noise). Returns
    each row's error (None: it stepped); one row's failure is that row's alone."""
    kinds = {type(r.noise) for r in rows}
    if len(kinds) != 1:
        raise ValueError(f"one forward pass, one kind of noise: got {sorted(k.__name__ for k in kinds)}")
    return (step_group if kinds == {MaskNoise} else uniform_step_group)(list(rows), raw)


@torch.no_grad()
def step(model, rows: Sequence[Row]) -> list[Row]:
    """One denoising step for every active row (one forward pass per shape); returns the rows that
    took it. A row whose step fails is not retried here: the first error propagates."""
    active = [r for r in rows if r.active]
    for r in rows:
        r.last = None
    for members, raw in rows_forward(model)(active):
        for error in advance_group([active[i] for i in members], raw):
            if error is not None:
                raise error
    return active


@torch.no_grad()
def denoise(
    model,
    x: torch.Tensor,
    fixed: torch.Tensor,
    mask_id: int,
    cfg: SamplerConfig,
    generators: Sequence[torch.Generator],
    processors: Sequence[LogitsProcessor] = (),
    attention_mask: torch.Tensor | None = None,
    on_step: Callable[[int, list[StepRecord | None]], None] | None = None,
    empty_id: int = 0,
) -> SampleResult:
    """Denoise ``x`` (B, L) until no free position holds ``mask_id``.

    ``model`` is a model adapter, or a masked model's ``logits(input_ids (b, L), attention_mask (b, L) |
    None) -> (b, L, V)``. ``generators[i]`` seeds row ``i`` alone, so a row's output does not depend
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
                None if attention_mask is None else attention_mask[i], proc_index=i, empty_id=empty_id)
            for i in range(b)]
    n = 0
    while step(model, rows):
        if on_step is not None:
            on_step(n, [r.last for r in rows])
        n += 1
    return SampleResult(tokens=torch.stack([r.x for r in rows]), confidence=torch.stack([r.confidence for r in rows]),
                        history=[r.history for r in rows])
