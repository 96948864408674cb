"""Constraint cost per denoising step next to the model's forward pass (not a test).

For canvas lengths 64 and 256, runs generate jobs through the sampler with the shipped model:
a prompt and one constrained slot (a date regex, a JSON schema, a choices list). Times every
forward pass and every call of the structure processor (`SlotTargets`, the DP over slot position x
automaton state), and prints p50 / p99 in microseconds.

    python benchmarks/constraint_cost.py [--model-dir models/redraft-tiny] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
from datetime import date
from pathlib import Path

import torch
from timing import Timed, pct  # benchmarks/timing.py

from redraft.constraints.generate import compile_generate, prompt_slot
from redraft.families import load_model_info, load_tokenizer, special_ids
from redraft.settings import DEFAULT_MODEL_DIR
from redraft.workers.adapters import get_adapter
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.processors.slot_targets import SlotTargets, constrained_slots
from redraft.workers.sampler import SamplerConfig, denoise

TARGETS = {
    "date regex": ({"regex": r"[0-9]{4}-[0-9]{2}-[0-9]{2}"}, 12),
    "json schema": ({"json_schema": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                                                       "age": {"type": "integer"}},
                                     "required": ["name", "age"]}}, 32),
    "choices": ({"choices": ["approved", "rejected", "needs more information"]}, 8),
}
WORDS = "The committee met on Tuesday to review the proposal and recorded its decision as follows. "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.model_dir)
    info = load_model_info("bench", path)
    tokenizer = load_tokenizer(path)
    adapter = get_adapter("bench", path, "auto")
    special = special_ids(info)
    print(f"constraint cost per step, {date.today()}, {platform.machine()}, {torch.get_num_threads()} thread(s), "
          f"device {adapter.device}, model {path.name}")
    print(f"{'canvas':>6}  {'target':<12}{'forward p50':>12}{'p99':>9}{'constraint p50':>16}{'p99':>9}{'ratio':>7}")
    for length in (64, 256):
        for name, (target, slot_tokens) in TARGETS.items():
            prompt_tokens = length - slot_tokens - 2
            ids = tokenizer.encode(WORDS * 40, add_special_tokens=False).ids[:prompt_tokens]
            prompt = tokenizer.decode(ids)
            canvas = compile_generate([prompt, prompt_slot(target, slot_tokens, 0, 256)], tokenizer, info)
            fwd, cons = [], []
            procs = [ForbidTokens(special, info.vocab_size),
                     Timed(SlotTargets({0: constrained_slots(canvas, tokenizer, info, special)}, info.empty_id), cons)]
            for r in range(args.repeats):
                denoise(Timed(adapter.logits, fwd), torch.tensor([canvas.token_ids], device=adapter.device),
                        torch.tensor([canvas.fixed], device=adapter.device), info.mask_id,
                        SamplerConfig(steps=slot_tokens, temperature=1.0), [torch.Generator().manual_seed(r)], procs)
            us = lambda xs, q: pct(xs, q) * 1e6  # noqa: E731  (microseconds)
            print(f"{canvas.length:>6}  {name:<12}{us(fwd, 50):>12.0f}{us(fwd, 99):>9.0f}{us(cons, 50):>16.0f}"
                  f"{us(cons, 99):>9.0f}{pct(cons, 50) / pct(fwd, 50):>7.2f}")
    print("(microseconds; forward = one model pass over the canvas; constraint = SlotTargets for the step)")


if __name__ == "__main__":
    main()
