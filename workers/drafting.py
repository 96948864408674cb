"""One job's drafting: canvas -> rows -> text, with its revisions and ``avoid`` rounds (no database access).

``Drafting`` receives what a job needs (the adapter, the compiled canvas, the job's parameters, a step sink, and
for a revise its parent draft's text and layout) and returns what it made (text, result, layout); the worker's
lifecycle (``workers/runner.py``) reads and writes the database around it. The sampler's config comes from the
job's stored parameters (``sampler_config``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from redraft.constraints.canvas import Canvas
from redraft.constraints.generate import slot_values
from redraft.constraints.revise import Region, carry_layout, compile_revision, revision_edits, token_count
from redraft.constraints.safety import parse_safety
from redraft.families import special_ids
from redraft.jobs import JobParams, SafetyParams
from redraft.settings import Settings
from redraft.workers.engine import BatchEngine
from redraft.workers.processors.down_weight import DownWeight
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.processors.safety_guard import SafetyGuard
from redraft.workers.processors.slot_targets import SlotTargets, constrained_slots
from redraft.workers.processors.slot_vocabulary import SlotVocabulary
from redraft.workers.sampler import Row, SamplerConfig, step
from redraft.workers.scorers import TopicScorer, load_scorer, split_spans
from redraft.workers.steps import StepSink

PAD_TO = 16  # canvases are padded to a multiple of this: the engine's length buckets


@dataclass(frozen=True)
class Source:
    """A revise job's parent draft, as the drafting reads it: its text and layout."""

    text: str
    layout: dict[str, Any] | None


# The job parameters the sampler reads: every JobParams field SamplerConfig also has (not seed, safety, revise).
SAMPLING_FIELDS = tuple(f.name for f in fields(SamplerConfig) if f.name in JobParams.model_fields)


def sampler_config(params: JobParams, info) -> SamplerConfig:
    """The sampler's config from a job's stored (already resolved) parameters and its model's family; a field
    the job leaves None keeps SamplerConfig's own default."""
    given = params.model_dump(include=set(SAMPLING_FIELDS), exclude_none=True)
    uniform = info.noise == "uniform"
    return SamplerConfig(**given, noise=info.noise, canvas_length=info.canvas_length,
                         vocab_size=info.vocab_size if uniform else None,
                         eos_ids=info.eos_ids if info.eos_ends_slot else ())


class Drafting:
    """One job's denoising: processors, the sampler, ``avoid`` rounds, and the resulting draft."""

    def __init__(self, adapter, canvas: Canvas, params: JobParams | dict[str, Any], sink: StepSink,
                 settings: Settings, scorer: TopicScorer | None = None, engine: BatchEngine | None = None,
                 on_canvas: Callable[[Canvas], None] | None = None) -> None:
        """``params``: the job's JobParams, or its stored JSON form (``jobs.params``). ``on_canvas(canvas)`` is
        called when a revise with ``avoid`` rebuilds its canvas, before any step (the worker stores it)."""
        params = params.model_copy() if isinstance(params, JobParams) else JobParams.from_json(params)  # ours to update
        self.adapter, self.info, self.canvas, self.params, self.sink = adapter, adapter.info, canvas, params, sink
        self.settings = settings
        self.tokenizer = sink.tokenizer
        self.cfg = sampler_config(params, self.info)
        self.engine = engine  # None: step alone, in this thread
        self.safety = params.safety or SafetyParams()
        self.gen = torch.Generator().manual_seed(params.seed)
        self.down = DownWeight(settings.avoid_penalty)
        self.tokens: list[int] = []
        self.scorer = scorer  # None: the configured one (settings.safety_scorer), loaded on first use
        self.on_canvas = on_canvas

    def processors(self) -> list:
        special = special_ids(self.info)
        procs: list = [ForbidTokens(special, self.info.vocab_size), self.down]
        vocabularies = SlotVocabulary.for_canvas(self.canvas, self.tokenizer, self.info, special)
        if vocabularies is not None:
            procs.append(vocabularies)
        hard = parse_safety({"banned": self.safety.banned, "pii": self.safety.pii})
        if hard is not None:
            procs.append(SafetyGuard.for_canvas(self.canvas, hard, self.tokenizer, self.info))
        targets = constrained_slots(self.canvas, self.tokenizer, self.info, special)
        if targets:
            procs.append(SlotTargets({0: targets}, self.info.empty_id))
        return procs

    def denoise(self, x: torch.Tensor, confidence: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Write every free masked position of ``x`` (L,); returns (tokens, commit-time confidence).

        The canvas is padded to a multiple of ``PAD_TO`` (padding fixed and not attended), always, so a
        job's forward passes have the same shapes alone and in a batch: its text never depends on which
        other jobs shared the engine.
        """
        device = self.adapter.device
        length = x.numel()
        padded = self.padded_length(length)
        pad = padded - length
        row = Row(
            x=torch.cat([x, torch.full((pad,), self.info.empty_id)]).to(device),
            fixed=torch.cat([torch.tensor(self.canvas.fixed), torch.ones(pad, dtype=torch.bool)]).to(device),
            cfg=self.cfg, generator=self.gen, mask_id=self.info.mask_id, processors=self.processors(),
            empty_id=self.info.empty_id,
            attention_mask=torch.cat([torch.ones(length, dtype=torch.bool), torch.zeros(pad, dtype=torch.bool)]
                                     ).to(device) if pad else None,
        )
        if self.engine is not None:
            self.engine.run(row, self.sink.records)
        else:
            row.on_step = lambda rec: self.sink.records([rec])
            while step(self.adapter, [row]):
                pass
        tokens, conf = row.x[:length].cpu(), row.confidence[:length].cpu()
        if confidence is not None:  # positions written in an earlier round keep their confidence
            conf = torch.where(x == self.info.mask_id, conf, confidence)
        return tokens, conf

    def padded_length(self, length: int) -> int:
        if self.info.family != "masked_lm":  # remote-code families may ignore attention masks: never pad them
            return length
        return max(length, min(self.info.context_length, -(-length // PAD_TO) * PAD_TO))

    def run(self, kind: str, source: Source | None = None) -> tuple[str, dict[str, Any], dict[str, Any], str | None]:
        """Denoise the job's canvas; returns (text, result extra, layout, parent draft id). A revise job needs
        ``source``, its parent draft's text and layout."""
        revise = self.params.revise
        source_layout, kept, regions, rounds = None, [], [], []
        if revise is not None:
            if source is None:
                raise ValueError("a revise job's drafting needs its parent draft's text and layout (source)")
            source_text, source_layout = source.text, source.layout
            kept, regions = revise.kept, [Region(**r) for r in revise.regions]
            if self.safety.avoid:
                regions, rounds = self.avoid_source(source_text, regions)
                kept = self.params.revise.kept  # the rebuilt canvas keeps other ranges of the source
        x = torch.tensor(self.canvas.token_ids)
        tokens, conf = self.denoise(x) if (x == self.info.mask_id).any() else (x, torch.ones(len(x)))
        if self.safety.avoid:
            tokens, conf = self.avoid_rounds(tokens, conf, rounds)
        self.tokens = tokens.tolist()
        text, values, rendered = self.canvas.render_layout(self.tokens, conf.tolist(), self.tokenizer, self.info)
        layout = carry_layout(source_layout, kept, self.canvas, rendered)
        if kind == "infill":
            extra: dict[str, Any] = {"gaps": values}
        elif kind == "generate":
            extra = {"slots": slot_values(self.canvas, values)}
        else:
            extra = {"edits": revision_edits(source_text, regions, values),
                     "parent_draft_id": revise.parent_id}
        if rounds:
            extra["safety_rounds"] = rounds
        return text, extra, layout, revise.parent_id if revise else None

    # ------------------------------------------------------------------------------------------ avoid

    def score(self, text: str, ranges: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        """Spans of ``text`` inside ``ranges``, each one's best topic score and which topic."""
        spans = split_spans(text, ranges)
        if not spans:
            return [], torch.zeros(0), torch.zeros(0, dtype=torch.long)
        if self.scorer is None:
            self.scorer = load_scorer(self.settings.safety_scorer, str(self.adapter.device))
        scores = self.scorer.score([text[a:b] for a, b in spans], list(self.safety.avoid))  # (n, T)
        best, which = scores.max(dim=1)
        return spans, best, which

    def record(self, rounds: list[dict], text: str, spans, best, which, threshold: float) -> list[tuple[int, int]]:
        above = [i for i in range(len(spans)) if float(best[i]) > threshold]
        rounds.append({
            "round": len(rounds),
            "max_score": round(float(best.max()), 4) if len(spans) else 0.0,
            "mean_score": round(float(best.mean()), 4) if len(spans) else 0.0,
            "rewritten": [{"start": spans[i][0], "end": spans[i][1], "text": text[spans[i][0]:spans[i][1]],
                           "topic": self.safety.avoid[int(which[i])], "score": float(best[i])}
                          for i in above],
        })
        return [spans[i] for i in above]

    def avoid_source(self, source: str, regions: list[Region]) -> tuple[list[Region], list[dict]]:
        """Revise + avoid: score the source text first; spans above the threshold join the regions
        (their old tokens down-weighted), and the canvas is rebuilt and stored before any step."""
        threshold = self.safety.avoid_threshold
        rounds: list[dict] = []
        spans, best, which = self.score(source, [(0, len(source))])
        hot = self.record(rounds, source, spans, best, which, threshold)
        if not hot:
            return regions, rounds
        regions = regions + [Region(a, b, token_count(source[a:b], self.tokenizer) + 2, "avoid") for a, b in hot]
        canvas, kept, regions = compile_revision(source, regions, self.tokenizer, self.info)
        for index, r in enumerate(regions):
            if "avoid" in r.reason:
                old = set(self.tokenizer.encode(source[r.start:r.end], add_special_tokens=False).ids)
                for position in canvas.slot_positions(index):
                    self.down.tokens.setdefault(position, set()).update(old)
        self.canvas = canvas
        self.params.revise = self.params.revise.model_copy(update={"kept": kept})
        if self.on_canvas is not None:
            self.on_canvas(canvas)
        return regions, rounds

    def avoid_rounds(self, tokens: torch.Tensor, conf: torch.Tensor, rounds: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Score the written spans; re-mask those above the threshold, down-weight the tokens they held,
        and denoise again; at most ``avoid_rounds`` rewrites, each recorded with its scores."""
        threshold = self.safety.avoid_threshold
        for rewrite in range(self.safety.avoid_rounds + 1):
            text, _, rendered = self.canvas.render_layout(tokens.tolist(), conf.tolist(), self.tokenizer, self.info)
            spans, best, which = self.score(text, [(s["start"], s["end"]) for s in rendered["slots"]])
            hot = self.record(rounds, text, spans, best, which, threshold)
            if not hot or rewrite == self.safety.avoid_rounds:
                break
            positions = self.positions_in(rendered["written"], hot)
            remasked = [[p, int(tokens[p])] for p in positions]
            old = {int(tokens[p]) for p in positions} - {self.info.empty_id}
            for p in positions:
                self.down.tokens.setdefault(p, set()).update(old)
            tokens = tokens.clone()
            tokens[positions] = self.info.mask_id
            self.sink.write([], remasked)  # the round boundary: these positions go back to [MASK]
            tokens, conf = self.denoise(tokens, conf)
        return tokens, conf

    def positions_in(self, written: list[list], spans: list[tuple[int, int]]) -> list[int]:
        """Canvas positions of the written tokens overlapping ``spans``, with the EMPTY positions
        between them in the same slot (so the rewrite has the room the old text had)."""
        hit = sorted({int(w[3]) for w in written for a, b in spans if w[0] < b and w[1] > a})
        slot_of = self.canvas.slot_of
        out: set[int] = set()
        for p in hit:
            out.add(p)
            nxt = [q for q in hit if q > p and slot_of[q] == slot_of[p]]
            if nxt:
                out.update(range(p, min(nxt) + 1))
        return sorted(out)
