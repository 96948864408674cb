"""The soft guide of ``safety.avoid`` rounds: the tokens a rewritten span held are down-weighted where they stood,
so the next round writes something else there (the rounds themselves: ``workers/drafting.py``; the topic scorers
that choose the spans: ``workers/scorers.py``)."""

from __future__ import annotations

import torch


class DownWeight:
    """Soft guide: subtract ``penalty`` from chosen tokens at chosen positions (``avoid`` rounds)."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty
        self.tokens: dict[int, set[int]] = {}  # position -> token ids to down-weight there

    @property
    def masks_only(self) -> bool:
        return not self.tokens  # nothing to down-weight: it changes no logit

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, free: torch.Tensor, rows: list[int],
                 offset: int = 0) -> torch.Tensor:
        for position, ids in self.tokens.items():
            if 0 <= position - offset < logits.shape[1]:
                logits[:, position - offset, sorted(ids)] -= self.penalty
        return logits
