"""LLaDA's acceptance: each step takes ``ceil(undecided left / steps left)`` proposals of the block, most
confident first (or in random order), so a block's masks are spread evenly over its planned steps."""

from __future__ import annotations

import torch


class Schedule:
    planned = True  # a step that takes nothing is an error only on the block's last planned step

    def __init__(self, random_order: bool = False) -> None:
        self.random_order = random_order

    def choose(self, conf: torch.Tensor, entropy: torch.Tensor | None, steps_left: int,
               generator: torch.Generator) -> tuple[torch.Tensor, int]:
        """``conf`` (n,) the model's probability of each proposal -> (order (n,), how many to take)."""
        n = conf.numel()
        k = -(-n // max(1, steps_left))  # ceil: undecided left / steps left
        order = torch.rand(n, generator=generator).to(conf.device) if self.random_order else conf
        return order.argsort(descending=True, stable=True), k

    @staticmethod
    def choose_rows(policies: list[Schedule], conf: torch.Tensor, entropy: torch.Tensor | None, cand: torch.Tensor,
                    steps_left: torch.Tensor, generators: list[torch.Generator], counts: list[int]):
        """For rows at once: ``conf`` (m, L), ``cand`` (m, L) bool, ``steps_left`` (m,) -> (key (m, L), k (m,)).
        A row in random order draws its key from its generator, one uniform per candidate, as ``choose`` does."""
        k = -(-cand.sum(1) // steps_left.clamp_min(1))  # (m,) ceil: undecided left / steps left
        key = conf.clone()
        for j, policy in enumerate(policies):
            if policy.random_order and counts[j]:
                key[j, cand[j]] = torch.rand(counts[j], generator=generators[j]).to(conf.device)
        return key, k

