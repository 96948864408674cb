"""What the benchmark scripts share: a callable that records how long each call took, and percentiles."""

from __future__ import annotations

import statistics
import time


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (1..99) of ``values``; the value itself when there is one."""
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def spread(values: list[float], fmt: str = ".2f") -> str:
    """A table cell for repeated readings: the median, and the range in brackets when there are several."""
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


class Timed:
    """Wraps a callable (a model's logits, a processor) and appends each call's seconds to ``sink``. A wrapped
    processor keeps saying whether it only masks (``masks_only``), so the sampler treats it as it would unwrapped."""

    def __init__(self, fn, sink: list[float]) -> None:
        self.fn, self.sink = fn, sink
        self.masks_only = getattr(fn, "masks_only", False)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.sink.append(time.perf_counter() - t0)
        return out
