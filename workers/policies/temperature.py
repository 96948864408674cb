"""The temperature of each step: one value for every step, or DiffusionGemma's linear schedule.

The schedule counts steps down as the reference does (``LinearTemperatureScheduleLogitsProcessor``): at step
``i`` (0-based) of ``N`` the temperature is ``t_min + (t_max - t_min) * (N - i) / N``, so the first step runs at
``t_max`` and the last one just above ``t_min``. It is computed as the reference computes it (a float32 tensor
from an int32 step count), so dividing the logits by it gives the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# A temperature below this samples the argmax anyway (at 1e-6 a logit gap of 1e-4 is a factor e^100), and
# dividing logits by a much smaller one overflows float32 to inf and the probabilities to NaN: it is greedy.
GREEDY_BELOW = 1e-6


@dataclass(frozen=True)
class Temperature:
    value: float | None = None  # one temperature for every step (0: greedy)
    t_max: float | None = None  # or a linear schedule from t_max ...
    t_min: float | None = None  # ... to t_min

    def at(self, step: int, steps: int) -> float | torch.Tensor:
        """The temperature of step ``step`` (0-based) of ``steps``: a float (0 means greedy) or a 0-dim tensor."""
        if self.t_max is None:
            return self.value if self.value and self.value >= GREEDY_BELOW else 0.0
        remaining = torch.tensor(max(steps - step, 1), dtype=torch.int32)
        t = self.t_min + ((self.t_max - self.t_min) * (remaining / steps))
        return t if float(t) >= GREEDY_BELOW else 0.0
