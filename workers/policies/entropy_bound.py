"""DiffusionGemma's acceptance (EB-sampler, arXiv 2505.24857): take the k lowest-entropy proposals such that

    sum(entropy_1..k) - max(entropy_1..k) <= bound,

an upper bound on the joint mutual information between them, so the tokens taken together are close to
independent. The smallest-entropy proposal always qualifies (its left side is 0), so a step takes one at least.
The same arithmetic as transformers' ``EntropyBoundSampler.accept_canvas`` (same sort, same cumulative sum), so
with nothing clamped the same positions are accepted.
"""

from __future__ import annotations

import torch

from redraft.errors import InvalidRequest


class EntropyBound:
    planned = False
    needs_entropy = True

    def __init__(self, bound: float) -> None:
        if not bound > 0:
            raise InvalidRequest(f"entropy_bound must be positive; got {bound}")
        self.bound = bound

    def choose(self, conf: torch.Tensor, entropy: torch.Tensor | None, steps_left: int,
               generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """``entropy`` (n,) of each position's (temperature-scaled) distribution -> (lowest first, k)."""
        ordered, order = torch.sort(entropy, dim=-1, descending=False)  # (n,), (n,)
        taken = (torch.cumsum(ordered, dim=-1) - ordered) <= self.bound  # (n,) a prefix: ordered is ascending
        return order, int(taken.sum())

    @staticmethod
    def choose_rows(policies: list[EntropyBound], conf: torch.Tensor, entropy: torch.Tensor | None, cand: torch.Tensor,
                    steps_left: torch.Tensor, generators: list[torch.Generator], counts: list[int]):
        """For rows at once: ``entropy`` (m, L) (inf off the candidates) -> (key: lowest entropy first, k (m,))."""
        bound = torch.tensor([p.bound for p in policies], device=entropy.device).unsqueeze(1)  # (m, 1)
        ordered = torch.where(cand, entropy, float("inf")).sort(dim=-1).values  # (m, L) ascending
        taken = ((torch.cumsum(ordered, dim=-1) - ordered) <= bound) & torch.isfinite(ordered)  # (m, L) a prefix
        return -entropy, taken.sum(1)

