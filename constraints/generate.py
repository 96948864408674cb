"""``generate`` jobs: a Jinja2 template with slots, or a prompt followed by one constrained answer slot."""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer

from redraft.constraints.automaton import compile_target, discard, require_fits
from redraft.constraints.canvas import Canvas, CanvasBuilder
from redraft.constraints.templates import SlotSpec, make_slot
from redraft.errors import ConstraintError, InvalidRequest
from redraft.families import ModelInfo, special_ids

ANY_TEXT = r"(?s:.)*"  # a min_tokens slot without a target: any text, at least that many tokens


def prompt_slot(target: dict[str, Any] | None, max_tokens: int, min_tokens: int, limit: int) -> SlotSpec:
    """The prompt form's one slot, ``answer``; free text when there is no target."""
    if target is None:
        return make_slot("answer", max_tokens, min_tokens, limit=limit)
    keys = [k for k in ("regex", "json_schema", "choices") if k in target]
    if len(keys) != 1 or len(target) != 1:
        raise InvalidRequest('target must be exactly one of {"regex": ...}, {"json_schema": {...}}, {"choices": [...]}')
    return make_slot("answer", max_tokens, min_tokens, limit=limit, **{keys[0]: target[keys[0]]})


def compile_generate(pieces: list[str | SlotSpec], tokenizer: Tokenizer, info: ModelInfo,
                     require_slot: bool = True) -> Canvas:
    """Build the canvas and check every hard target can be met in its slot (422 otherwise)."""
    builder = CanvasBuilder(tokenizer, info)
    special = set(special_ids(info))
    for piece in pieces:
        if isinstance(piece, str):
            builder.text(piece)
            continue
        target = piece.target or (("regex", ANY_TEXT) if piece.min_tokens else None)
        if target is not None:
            if piece.min_tokens > piece.max_tokens:
                raise InvalidRequest(f"slot {piece.name!r}: min_tokens exceeds max_tokens")
            automaton = compile_target(target, tokenizer, info.eos_id, special)
            try:
                require_fits(automaton, piece.max_tokens, piece.min_tokens)
            except ConstraintError:
                discard(automaton)  # a refused request leaves nothing behind in the cache
                raise
        builder.slot(piece.name, piece.max_tokens, piece.min_tokens, target, piece.vocab)
    return builder.build(require_slot)


def slot_values(canvas: Canvas, values: list[str]) -> dict[str, str]:
    return {slot.name: value for slot, value in zip(canvas.slots, values)}
