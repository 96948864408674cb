"""Does the DP memory budget bound what the slot decoder really allocates? A device check, not a test.

``redraft.constraints.budget.dp_step_bytes`` is what the API refuses by (REDRAFT_MAX_DP_BYTES). This runs
``redraft.workers.slot_decoder.best_path`` on CUDA for a few automata and compares the allocator's peak with the
formula: the bound must hold (peak <= bound) and be close (bound <= 2 x peak). CUDA's allocator counts every
allocation; on CPU the resident-set high-water mark reads low on a busy machine, so there is no CPU mode.

    python benchmarks/dp_memory.py          # needs a GPU; exits 1 if the bound fails
"""

from __future__ import annotations

import sys

import torch

from redraft.constraints import budget
from redraft.constraints.automaton import compile_json_schema, compile_regex
from redraft.workers.slot_decoder import best_path, pairs
from tests.constraints.test_automaton import EOS, INFO, SPECIALS, TOKENIZER, V


def main() -> int:
    if not torch.cuda.is_available():
        print("needs CUDA to read the allocator's peak", file=sys.stderr)
        return 2
    schema = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 20}}, "required": ["title"]}
    ok = True
    for a, n in [(compile_regex("[a-z ]{1,200}", TOKENIZER, EOS, SPECIALS), 64),
                 (compile_json_schema(schema, TOKENIZER, EOS, SPECIALS), 32),
                 (compile_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", TOKENIZER, EOS, SPECIALS), 16)]:
        logp = torch.randn(n, V, device="cuda").log_softmax(-1)  # (n, V)
        pairs(a, "cuda")  # the per-automaton cache, counted by the compile cache
        first = best_path(a, logp, [None] * n, INFO.empty_id)
        assert first is not None
        peaks = []
        # every position free (each its move scores), then every other one committed (their pairs as indices)
        for committed in ([None] * n, [t if i % 2 else None for i, t in enumerate(first)]):
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            assert best_path(a, logp, committed, INFO.empty_id) is not None
            peaks.append(torch.cuda.max_memory_allocated() - base)
        peak = max(peaks)
        c = a.classes
        bound = budget.dp_step_bytes(n, c.n_class_tokens, c.n_pairs, a.n_states, a.max_committed_moves)
        holds = peak <= bound + 2**20 and bound <= 2 * peak + 2**20  # + the allocator's rounding of small blocks
        ok &= holds
        print(f"{a.pattern[:40]!r:44} n={n:4} class tokens={c.n_class_tokens:9,} pairs={c.n_pairs:7,} "
              f"peak free / half committed={peaks[0] / 2**20:8.1f} / {peaks[1] / 2**20:8.1f} MiB "
              f"bound={bound / 2**20:8.1f} MiB {'ok' if holds else 'FAILS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
