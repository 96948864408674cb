"""Per-slot vocabularies during denoising: free positions of a slot with a ``vocab`` may use only that vocabulary
(and EMPTY). The apply side of ``constraints/vocab.py`` (which names the vocabularies and builds their token sets)."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer

from redraft.constraints.canvas import Canvas
from redraft.constraints.vocab import allowed_ids
from redraft.families import ModelInfo


class SlotVocabulary:
    """Logits processor: free positions of a slot with a ``vocab`` may use only that vocabulary (and EMPTY)."""

    masks_only = True

    def __init__(self, masks_per_row: dict[int, list[tuple[list[int], torch.Tensor]]]) -> None:
        self.masks_per_row = masks_per_row  # batch row -> [(positions, allowed (V,) bool)]

    @classmethod
    def for_canvas(cls, canvas: Canvas, tokenizer: Tokenizer, info: ModelInfo, special: list[int]) -> SlotVocabulary | None:
        masks = []
        for index, slot in enumerate(canvas.slots):
            if slot.vocab is None:
                continue
            allowed = torch.zeros(info.vocab_size, dtype=torch.bool)  # (V,)
            allowed[list(allowed_ids(slot.vocab, tokenizer, frozenset(special)))] = True
            allowed[info.empty_id] = True
            masks.append((canvas.slot_positions(index), allowed))
        return cls({0: masks}) if masks else None

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int],
                 offset: int = 0) -> torch.Tensor:
        for j, row in enumerate(rows):
            for positions, allowed in self.masks_per_row.get(row, ()):
                pos = torch.tensor([p - offset for p in positions if 0 <= p - offset < logits.shape[1]],
                                   dtype=torch.long, device=logits.device)  # (n,) rows of the window's logits
                block = logits[j, pos]  # (n, V)
                block[:, ~allowed.to(logits.device)] = float("-inf")
                logits[j, pos] = block
        return logits
