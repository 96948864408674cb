"""Never write the special tokens (mask, pad, BOS, EOS, ...) at a free position: the one processor every job has."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ForbidTokens:
    """Hard mask: never write these ids at a free position (mask, pad, BOS, EOS, ...)."""

    masks_only = True

    def __init__(self, token_ids: Sequence[int], vocab_size: int) -> None:
        self.ids = torch.tensor(sorted({int(t) for t in token_ids if 0 <= t < vocab_size}), dtype=torch.long)  # (k,)

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int],
                 offset: int = 0) -> torch.Tensor:
        # k columns of the (b, W, V) logits, not a V-wide mask: a handful of special ids.
        logits.index_fill_(-1, self.ids.to(logits.device), float("-inf"))
        return logits
