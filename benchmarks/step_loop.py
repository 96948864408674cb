"""The sampler's step alone, without a model: milliseconds per group step for b rows over fake logits (not a test).

What a worker spends between forward passes (``redraft.workers.sampler.advance_group``: the policies' group steps), for
both kinds of noise, at the shapes given: uniform noise (DiffusionGemma's rule: entropy bound, t_max -> t_min,
one window of W positions per row, every position undecided) and mask noise (LLaDA's schedule at temperature
0.7, a canvas of W masks after 8 fixed tokens). Random logits (scaled by 3), no processors; a step's logits are
a fresh copy each time, as a forward pass hands them over. The first step of each run is not counted.

    python benchmarks/step_loop.py
    python benchmarks/step_loop.py --shapes 1x256x262144,8x256x262144 --device cuda
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MASK = 3


def rows_for(noise: str, b: int, width: int, vocab: int, steps: int, device: str):
    from redraft.workers.sampler import Row, SamplerConfig

    if noise == "uniform":
        cfg = SamplerConfig(steps=steps, t_max=0.8, t_min=0.4, entropy_bound=0.1, noise="uniform", canvas_length=width,
                            vocab_size=vocab, stability=1, confidence_stop=0.005)
        length = 2 * width  # two windows' worth: the first window never runs out of undecided positions
    else:
        cfg = SamplerConfig(steps=steps, temperature=0.7)
        length = width
    x = torch.tensor([1] * 8 + [MASK] * length, device=device)
    fixed = torch.tensor([True] * 8 + [False] * length, device=device)
    rows = [Row(x, fixed, cfg, torch.Generator().manual_seed(i), MASK) for i in range(b)]
    for r in rows:
        assert r.active
    return rows


def time_steps(noise: str, b: int, width: int, vocab: int, steps: int, device: str) -> float:
    from redraft.workers.sampler import advance_group

    rows = rows_for(noise, b, width, vocab, steps, device)
    model_width = width if noise == "uniform" else width + 8
    logits = torch.randn(b, model_width, vocab, generator=torch.Generator().manual_seed(0)).mul_(3).to(device)
    times = []
    for _ in range(steps - 1):
        raw = logits.clone()
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        errors = advance_group(rows, raw)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        assert all(e is None for e in errors), errors
    times = times[1:] or times
    return 1000 * sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="1x16x8192,16x16x8192,1x256x32768,8x256x32768",
                    help="comma-separated b x W x V")
    ap.add_argument("--noise", default="uniform,mask")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {date.today()} · {platform.machine()} · {args.threads} thread(s) · device {args.device}")
    print(f"# command: python benchmarks/step_loop.py {' '.join(sys.argv[1:])}")
    print()
    print("| noise | rows b | width W | vocabulary V | ms per group step | ms per row |")
    print("|---|---:|---:|---:|---:|---:|")
    for noise in args.noise.split(","):
        for shape in args.shapes.split(","):
            b, width, vocab = (int(v) for v in shape.split("x"))
            ms = time_steps(noise, b, width, vocab, args.steps, args.device)
            print(f"| {noise} | {b} | {width} | {vocab:,} | {ms:.1f} | {ms / b:.1f} |")


if __name__ == "__main__":
    main()
