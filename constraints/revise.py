"""``revise`` jobs: which characters of a text to write again, and the canvas that rewrites them in context.

A revision is a text plus *regions* (character ranges) to re-mask. Everything outside the regions
becomes fixed pieces of a canvas, so it is kept byte for byte by construction (``Canvas.render``
rebuilds the text from the original strings); each region becomes a slot that the model writes
again with the whole document as context. Regions come from:

* ``spans``: character ranges the client names, each with an optional new ``max_tokens``;
* ``auto``: the tokens the model was least sure of when it wrote the draft (their commit-time
  confidences are in the draft's layout, recorded from the step history);
* ``targets``: a regex / JSON schema / choices target on a span or a named slot that the current
  text does not satisfy; the region is rewritten under that target as a hard constraint;
* ``safety``: banned phrases and PII found in the text (``redraft.constraints.safety.find_violations``),
  widened to whole words; the safety guard then keeps them out while the region is rewritten.

Torch-free: the API compiles revisions at submission; the worker re-compiles when the ``avoid``
scorer adds regions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from tokenizers import Tokenizer

from redraft.constraints.automaton import accepts, compile_target, min_length_tokens
from redraft.constraints.canvas import Canvas
from redraft.constraints.generate import compile_generate
from redraft.constraints.templates import SlotSpec, make_slot
from redraft.errors import ConstraintError, InvalidRequest
from redraft.families import ModelInfo, special_ids

WORD = re.compile(r"\w")


@dataclass(frozen=True)
class Region:
    start: int  # character offsets into the source text; start == end inserts
    end: int
    max_tokens: int  # slot size for the rewrite
    reason: str  # "span" | "auto" | "target" | "banned" | "email" | ... ; joined with "+" when merged
    target: tuple[str, str] | None = None  # a hard structure target for the rewrite


def token_count(text: str, tokenizer: Tokenizer) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def span_regions(text: str, spans: list[dict[str, Any]], tokenizer: Tokenizer, default_tokens: int,
                 limit: int) -> list[Region]:
    """Client-named ranges; ``max_tokens`` defaults to the range's current length in tokens (an empty
    range, an insertion point, to the server's gap size)."""
    out = []
    for i, span in enumerate(spans):
        start, end = span["start"], span["end"]
        if not 0 <= start <= end <= len(text):
            raise InvalidRequest(
                f"spans[{i}] = [{start}, {end}) is outside the text (0..{len(text)} characters); "
                f"give 0 <= start <= end <= {len(text)}"
            )
        n = span.get("max_tokens") or (token_count(text[start:end], tokenizer) if end > start else default_tokens)
        out.append(Region(start, end, _room(max(1, n), limit, f"spans[{i}]"), "span"))
    return out


def auto_regions(layout: dict[str, Any] | None, auto: dict[str, Any]) -> list[Region]:
    """The written tokens below ``confidence_below``, or the ``least_confident`` k of them; touching
    tokens form one region, sized to exactly the tokens it replaces."""
    if not layout or not layout.get("written"):
        raise InvalidRequest(
            "`auto` needs confidences, which exist only for text Redraft wrote: revise a draft_id from a "
            "job (not `text`), or name what to rewrite with `spans` or `targets`"
        )
    written = sorted(layout["written"], key=lambda w: w[0])
    if auto.get("confidence_below") is not None:
        chosen = [w for w in written if w[2] < auto["confidence_below"]]
    else:
        chosen = sorted(sorted(written, key=lambda w: (w[2], w[0]))[: auto["least_confident"]], key=lambda w: w[0])
    regions: list[Region] = []
    for start, end, *_ in chosen:
        if regions and regions[-1].end == start:
            last = regions[-1]
            regions[-1] = replace(last, end=end, max_tokens=last.max_tokens + 1)
        else:
            regions.append(Region(start, end, 1, "auto"))
    return regions


def target_regions(text: str, layout: dict[str, Any] | None, targets: list[dict[str, Any]], tokenizer: Tokenizer,
                   info: ModelInfo, default_tokens: int, limit: int) -> list[Region]:
    """Each target names a span or a slot of the draft; where the current text there does not satisfy
    it, the whole range is rewritten under it."""
    special = set(special_ids(info))
    slots = {s["name"]: s for s in (layout or {}).get("slots", [])}
    out = []
    for i, t in enumerate(targets):
        if t.get("slot") is not None:
            if t["slot"] not in slots:
                known = ", ".join(sorted(slots)) or "none (this text has no slots)"
                raise InvalidRequest(f"targets[{i}]: the draft has no slot {t['slot']!r}; its slots: {known}")
            start, end = slots[t["slot"]]["start"], slots[t["slot"]]["end"]
        else:
            start, end = t["span"]["start"], t["span"]["end"]
            if not 0 <= start <= end <= len(text):
                raise InvalidRequest(f"targets[{i}].span = [{start}, {end}) is outside the text (0..{len(text)})")
        spec = make_slot(f"target{i}", 1, regex=t.get("regex"), choices=t.get("choices"),
                         json_schema=t.get("json_schema"), limit=limit)
        if spec.target is None:
            raise InvalidRequest(f"targets[{i}]: give one of regex, choices, json_schema")
        automaton = compile_target(spec.target, tokenizer, info.eos_id, special)
        if accepts(automaton, tokenizer.encode(text[start:end], add_special_tokens=False).ids):
            continue  # already satisfied: nothing to rewrite there
        n = t.get("max_tokens") or max(token_count(text[start:end], tokenizer), min_length_tokens(automaton),
                                        default_tokens)
        out.append(Region(start, end, _room(n, limit, f"targets[{i}]"), "target", spec.target))
    return out


def violation_regions(text: str, violations: list[Any], tokenizer: Tokenizer, limit: int) -> list[Region]:
    """Safety violations (objects with start, end, kind), widened to whole words, sized to their text."""
    out = []
    for v in violations:
        start, end = v.start, v.end
        while start > 0 and WORD.match(text[start - 1]):
            start -= 1
        while end < len(text) and WORD.match(text[end]):
            end += 1
        out.append(Region(start, end, _room(token_count(text[start:end], tokenizer) + 1, limit, v.kind), v.kind))
    return out


def merge(regions: list[Region]) -> list[Region]:
    """Overlapping regions become one, as large as the largest part or the merged text needs."""
    out: list[Region] = []
    for r in sorted(regions, key=lambda r: (r.start, r.end)):
        if out and r.start < out[-1].end:
            last = out[-1]
            if last.target and r.target and last.target != r.target:
                raise ConstraintError(
                    f"two different targets overlap at characters {r.start}..{min(r.end, last.end)}; "
                    f"give each target its own span"
                )
            out[-1] = Region(last.start, max(last.end, r.end), max(last.max_tokens, r.max_tokens),
                             "+".join(dict.fromkeys(last.reason.split("+") + r.reason.split("+"))),
                             last.target or r.target)
        else:
            out.append(r)
    return out


def compile_revision(text: str, regions: list[Region], tokenizer: Tokenizer, info: ModelInfo,
                     allow_empty: bool = False) -> tuple[Canvas, list[list[int]], list[Region]]:
    """The canvas that rewrites ``regions`` of ``text``, the source range of each fixed piece, and the
    merged regions (slot ``edit{i}`` rewrites region i). ``allow_empty``: no regions gives an all-fixed
    canvas (a revision that changes nothing)."""
    regions = merge(regions)
    if not regions and not allow_empty:
        raise InvalidRequest("nothing to revise", code="nothing_to_revise")
    pieces: list[str | SlotSpec] = []
    kept: list[list[int]] = []
    at = 0
    for i, r in enumerate(regions):
        if r.start > at:
            pieces.append(text[at : r.start])
            kept.append([at, r.start])
        pieces.append(SlotSpec(f"edit{i}", r.max_tokens, target=r.target))
        at = r.end
    if at < len(text):
        pieces.append(text[at:])
        kept.append([at, len(text)])
    return compile_generate(pieces, tokenizer, info, require_slot=bool(regions)), kept, regions


def carry_layout(source: dict[str, Any] | None, kept: list[list[int]], canvas: Canvas,
                 rendered: dict[str, Any]) -> dict[str, Any]:
    """The new draft's layout: its freshly written tokens, plus the source's written tokens that lie
    wholly in kept text (moved to their new offsets), so a later ``auto`` revision still sees them."""
    written = [w[:3] for w in rendered["written"]]
    fixed_spans = [span for piece, span in zip(canvas.pieces, rendered["pieces"]) if isinstance(piece, str)]
    for (ks, ke), (ns, _) in zip(kept, fixed_spans):
        for s, e, conf, *_ in (source or {}).get("written", []):
            if ks <= s and e <= ke:
                written.append([ns + s - ks, ns + e - ks, conf])
    return {"written": sorted(written), "slots": rendered["slots"]}


def revision_edits(source: str, regions: list[Region], values: list[str]) -> list[dict[str, Any]]:
    """A revise job's ``edits``: each region the rewrite really changed, in order, with its old and new text.

    A region written again as the text it had is left out, so an empty list says that the revision changed
    nothing (the new draft's text is its parent's)."""
    return [{"start": r.start, "end": r.end, "old": source[r.start:r.end], "new": new, "reason": r.reason}
            for r, new in zip(regions, values) if new != source[r.start:r.end]]


def _room(n: int, limit: int, what: str) -> int:
    if n > limit:
        raise InvalidRequest(f"{what} needs {n} tokens but a slot holds at most {limit}; use a smaller range")
    return n
