"""How many torch operations the slot decoder issues for a group's slots (not a test).

On a GPU each top-level torch operation is at least one kernel launch (and, for a read to the host, a wait), so a
decoder whose work is small per position is bound by how many it issues. This counts them with
``torch.profiler`` on the CPU for one ``best_paths`` call over B slots of one JSON-schema target (a length group's
rows, as ``SlotTargets`` decodes them) against B calls of one slot each, at three shares of committed positions.

    python benchmarks/decoder_ops.py [--slots 16] [--positions 128]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from redraft.constraints.automaton import compile_json_schema
from redraft.families import load_model_info, load_tokenizer, special_ids
from redraft.settings import DEFAULT_MODEL_DIR
from redraft.workers.slot_decoder import best_path, best_paths

SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 20}, "year": {"type": "integer"}},
          "required": ["title", "year"]}


def top_level_ops(fn) -> int:
    fn()  # warm: the automaton's tensors are cached per device
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.name.startswith("aten::")
               and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--positions", type=int, default=128)
    args = parser.parse_args()
    info = load_model_info("bench", DEFAULT_MODEL_DIR)
    tokenizer = load_tokenizer(DEFAULT_MODEL_DIR)
    a = compile_json_schema(SCHEMA, tokenizer, info.eos_id, set(special_ids(info)))
    rng, n = random.Random(0), args.positions
    print(f"| committed | one call for {args.slots} slots: torch ops | {args.slots} calls of one slot |")
    print("|---|---|---|")
    for share in (0.0, 0.5, 0.9):
        queries = []
        for _ in range(args.slots):
            first = best_path(a, 3 * torch.randn(n, info.vocab_size), [None] * n, info.empty_id)
            committed = [t if rng.random() < share else None for t in first]
            queries.append((a, 3 * torch.randn(n, info.vocab_size), committed, info.empty_id, 0))
        together = top_level_ops(lambda: best_paths(queries))
        apart = top_level_ops(lambda: [best_paths([q]) for q in queries])
        print(f"| {share:.0%} | {together:,} | {apart:,} |")


if __name__ == "__main__":
    main()
