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
