"""The canvas: what every job kind compiles to, and the only thing the sampler knows.

A canvas is a token sequence with a ``fixed`` flag per position (clamped: never changes) and a slot
index per free position. The output text is rebuilt from the *original* fixed strings and the decoded
slot tokens, never by decoding fixed tokens, so fixed text is byte-identical by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tokenizers import Tokenizer

from redraft.errors import InvalidRequest
from redraft.families import ModelInfo


@dataclass(frozen=True)
class Slot:
    name: str
    max_tokens: int  # positions on the canvas; unused ones resolve to the empty token
    min_tokens: int = 0  # real (non-empty) tokens the slot must hold
    target: tuple[str, str] | None = None  # ("regex" | "json_schema" | "choices", spec): a hard target
    vocab: str | None = None  # a simple per-position vocabulary ("digits", "no_newline", ...; constraints/vocab.py)


@dataclass
class Canvas:
    token_ids: list[int]  # (L,) mask id at every free position
    fixed: list[bool]  # (L,) True: clamped
    slot_of: list[int]  # (L,) slot index, -1 on fixed positions
    slots: list[Slot]
    pieces: list[str | int] = field(default_factory=list)  # fixed text (str) and slot refs (int), in order

    @property
    def length(self) -> int:
        return len(self.token_ids)

    def to_json(self) -> dict[str, Any]:
        return {
            "token_ids": self.token_ids,
            "fixed": self.fixed,
            "slot_of": self.slot_of,
            "slots": [asdict(s) for s in self.slots],
            "pieces": self.pieces,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Canvas:
        return cls(
            token_ids=list(data["token_ids"]),
            fixed=list(data["fixed"]),
            slot_of=list(data["slot_of"]),
            slots=[Slot(**{**s, "target": tuple(s["target"]) if s.get("target") else None}) for s in data["slots"]],
            pieces=list(data["pieces"]),
        )

    def slot_positions(self, index: int) -> list[int]:
        return [i for i, s in enumerate(self.slot_of) if s == index]

    def render(self, token_ids: list[int], tokenizer: Tokenizer, info: ModelInfo) -> tuple[str, list[str]]:
        """Final text and each slot's value from a fully denoised token sequence."""
        text, values, _ = self.render_layout(token_ids, [1.0] * len(token_ids), tokenizer, info)
        return text, values

    def render_layout(self, token_ids: list[int], confidence: list[float], tokenizer: Tokenizer,
                      info: ModelInfo) -> tuple[str, list[str], dict[str, Any]]:
        """Text, slot values, and the layout a revision needs: each piece's span in the text, and for
        every written (non-empty) token its character span, commit-time confidence and canvas position.

        Byte-level models attach a word's space to the word (" cat"); after fixed text that already
        ends in whitespace that space would double, so one is dropped. Fixed text is never touched.
        """
        spans: dict[int, list[tuple[int, int, int]]] = {}  # slot -> [(start, end, position)] within its value
        values = []
        for index in range(len(self.slots)):
            value, offsets = self._slot_tokens(token_ids, index, tokenizer, info)
            values.append(value)
            spans[index] = offsets
        text_parts: list[str] = []
        piece_spans: list[list[int]] = []
        written: list[list[float | int]] = []
        slots: list[dict[str, Any]] = []
        at = 0
        for k, piece in enumerate(self.pieces):
            if isinstance(piece, str):
                text_parts.append(piece)
                piece_spans.append([at, at + len(piece)])
                at += len(piece)
                continue
            value, drop = values[piece], 0
            if k > 0 and isinstance(self.pieces[k - 1], str) and self.pieces[k - 1][-1:].isspace() \
                    and value.startswith(" "):
                value, drop = value[1:], 1
            values[piece] = value
            for start, end, position in spans[piece]:
                start, end = max(0, start - drop), max(0, end - drop)
                if end > start:
                    written.append([at + start, at + end, round(float(confidence[position]), 6), position])
            text_parts.append(value)
            piece_spans.append([at, at + len(value)])
            slots.append({"name": self.slots[piece].name, "start": at, "end": at + len(value)})
            at += len(value)
        layout = {"pieces": piece_spans, "written": written, "slots": slots}
        return "".join(text_parts), values, layout

    def _slot_tokens(self, token_ids: list[int], index: int, tokenizer: Tokenizer,
                     info: ModelInfo) -> tuple[str, list[tuple[int, int, int]]]:
        """A slot's value and each non-empty token's (start, end, canvas position) in it.

        Offsets come from decoding growing prefixes, which holds for any tokenizer; a token that ends
        inside a multi-byte character owns the (replacement) character it starts.
        """
        kept = [(p, token_ids[p]) for p in self.slot_positions(index)
                if token_ids[p] not in (info.empty_id, info.mask_id)]
        ids = [t for _, t in kept]
        value = tokenizer.decode(ids, skip_special_tokens=True)
        offsets, prev = [], 0
        for n, (position, _) in enumerate(kept):
            end = len(tokenizer.decode(ids[: n + 1], skip_special_tokens=True)) if n + 1 < len(kept) else len(value)
            end = min(max(end, prev), len(value))
            offsets.append((prev, end, position))
            prev = end
        return value, offsets


class CanvasBuilder:
    """Appends fixed text and slots; tokenises each fixed piece on its own (exact for byte-level BPE)."""

    def __init__(self, tokenizer: Tokenizer, info: ModelInfo) -> None:
        self.tokenizer = tokenizer
        self.info = info
        self.canvas = Canvas(token_ids=[], fixed=[], slot_of=[], slots=[], pieces=[])
        if info.bos_id is not None:
            self._fixed_ids([info.bos_id])

    def _fixed_ids(self, ids: list[int]) -> None:
        self.canvas.token_ids += ids
        self.canvas.fixed += [True] * len(ids)
        self.canvas.slot_of += [-1] * len(ids)

    def text(self, text: str) -> None:
        if not text:
            return
        self._fixed_ids(self.tokenizer.encode(text, add_special_tokens=False).ids)
        self.canvas.pieces.append(text)

    def slot(self, name: str, max_tokens: int, min_tokens: int = 0, target: tuple[str, str] | None = None,
             vocab: str | None = None) -> int:
        self._detach_trailing_space()
        index = len(self.canvas.slots)
        self.canvas.slots.append(Slot(name, max_tokens, min_tokens, target, vocab))
        self.canvas.token_ids += [self.info.mask_id] * max_tokens
        self.canvas.fixed += [False] * max_tokens
        self.canvas.slot_of += [index] * max_tokens
        self.canvas.pieces.append(index)
        return index

    def _detach_trailing_space(self) -> None:
        """Byte-level models write a word with its leading space (" Paris"), and never saw a lone space
        token before a word. So a space that ends the fixed text before a slot stays in the text (it is
        still rendered, byte for byte) but not on the canvas: the model sees "is [MASK]", as in training,
        and ``render`` drops the slot value's leading space after it."""
        pieces, ids = self.canvas.pieces, self.canvas.token_ids
        space = self.tokenizer.encode(" ", add_special_tokens=False).ids
        if (pieces and isinstance(pieces[-1], str) and pieces[-1].endswith(" ") and len(space) == 1
                and ids and ids[-1] == space[0] and self.canvas.fixed[-1]):
            del ids[-1], self.canvas.fixed[-1], self.canvas.slot_of[-1]

    def build(self, require_slot: bool = True) -> Canvas:
        if self.info.eos_id is not None and self.info.family == "masked_lm":
            self._fixed_ids([self.info.eos_id])
        if require_slot and not self.canvas.slots:
            raise InvalidRequest("nothing to generate: the request has no gap or slot")
        if self.canvas.length > self.info.context_length:
            raise InvalidRequest(
                f"the canvas is {self.canvas.length} tokens but model {self.info.name!r} takes at most "
                f"{self.info.context_length}; shorten the text or use smaller gaps", code="context_too_long"
            )
        return self.canvas
