"""Fast-dLLM's acceptance: every proposal whose confidence is at least the threshold (at least one)."""

from __future__ import annotations

import torch

from redraft.errors import InvalidRequest


class Threshold:
    planned = False  # no planned end: a step that can take nothing is an error

    def __init__(self, threshold: float) -> None:
        if not 0.0 < threshold <= 1.0:
            raise InvalidRequest(f"threshold must be a confidence in (0, 1] (or omitted); got {threshold}")
        self.threshold = threshold

    def choose(self, conf: torch.Tensor, entropy: torch.Tensor | None, steps_left: int,
               generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """``conf`` (n,) -> (most confident first (n,), the number at or above the threshold, at least 1)."""
        return conf.argsort(descending=True, stable=True), max(1, int((conf >= self.threshold).sum()))

    @staticmethod
    def choose_rows(policies: list[Threshold], conf: torch.Tensor, entropy: torch.Tensor | None, cand: torch.Tensor,
                    steps_left: torch.Tensor, generators: list[torch.Generator], counts: list[int]):
        """For rows at once: ``conf`` (m, L) -> (key: the confidence, k (m,): how many reach the row's threshold)."""
        threshold = torch.tensor([p.threshold for p in policies], device=conf.device).unsqueeze(1)  # (m, 1)
        return conf, ((conf >= threshold) & cand).sum(1).clamp_min(1)

