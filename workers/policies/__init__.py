"""The sampler's small policies, one per file (SGLang's ``srt/dllm/algorithm/`` shape).

Two kinds, each chosen per family with per-job overrides (``workers/sampler.py`` holds the one loop):

* **noise** — what an undecided position holds, which positions a step proposes for, and when a row is
  done: ``mask_noise.MaskNoise`` (absorbing diffusion: ``[MASK]`` until committed, LLaDA's blocks,
  ReMDM self-correction) and ``uniform_noise.UniformNoise`` (DiffusionGemma: canvases of random tokens,
  acceptance re-decided every step, the argmax canvas once stable and confident);
* **acceptance** — which proposals a step takes: ``schedule.Schedule`` (LLaDA's linear top-k),
  ``threshold.Threshold`` (Fast-dLLM), ``entropy_bound.EntropyBound`` (DiffusionGemma's rule);

plus the temperature of each step (``temperature.Temperature``: one value or a linear schedule).
"""

from __future__ import annotations

from redraft.workers.policies.entropy_bound import EntropyBound
from redraft.workers.policies.schedule import Schedule
from redraft.workers.policies.threshold import Threshold


def acceptance(cfg):
    """The acceptance rule a config asks for: an entropy bound, a threshold, or the steps schedule."""
    if cfg.entropy_bound is not None:
        return EntropyBound(cfg.entropy_bound)
    if cfg.threshold is not None:
        return Threshold(cfg.threshold)
    return Schedule(random_order=cfg.remasking == "random")
