"""What the DiffusionGemma adapter assembles before each decoder pass, timed without a model (not a test).

1. **The self-conditioning input.** ``DiffusionGemmaAdapter._self_conditioning`` turns the rows' fed-back logits
   (each row's previous step, a (W, V) view of that step's pass) into the decoder's (b, W, V) input in the
   embeddings' dtype, for the three layouts a worker sees: a group that steps on as it was (the rows of one earlier
   pass, in order: every step of a window but its first), a group a new row joined (no feedback for it), and rows of
   one pass in another order. Beside it, ``torch.stack`` of the rows cast one by one: what each step did before
   2026-12-03 (a fresh (b, W, V) tensor a step, and a fresh (W, V) one a row when casting).
2. **The group's encoder cache.** ``DiffusionGemmaAdapter._group_cache`` stacks the rows' key/value caches along
   the batch once a window and serves the same stack at the window's later steps; beside it, ``stack_caches`` of
   the rows, what every step did before 2026-12-03. Caches at the released configuration's attention shapes (30
   layers, sliding window 512, per-layer heads and head sizes from ``DiffusionGemmaConfig``), T context tokens a row.

Median of 7 after one warm-up call.

    python benchmarks/decoder_inputs.py [--shape 8x256x32768] [--context 8x1024] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
from datetime import date
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def median_ms(fn, device: str, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def main() -> int:
    from redraft.workers.adapters import DiffusionGemmaAdapter

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="8x256x32768", help="rows x window x vocabulary")
    parser.add_argument("--context", default="8x1024", help="rows x context tokens a row")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b, width, vocab = (int(v) for v in args.shape.split("x"))
    device = torch.device(args.device)
    adapter = DiffusionGemmaAdapter.__new__(DiffusionGemmaAdapter)  # the method needs no model: its config's V
    adapter._local, adapter.device = threading.local(), device
    adapter.model = SimpleNamespace(config=SimpleNamespace(text_config=SimpleNamespace(vocab_size=vocab)))
    raw = torch.randn(b, width, vocab, device=device)  # float32: the sampler's processed logits

    def stacked(feedback, dtype):
        return torch.stack([f.to(dtype) if f is not None else torch.zeros(width, vocab, dtype=dtype, device=device)
                            for f in feedback])

    print(f"# What the DiffusionGemma adapter assembles before a decoder pass — {date.today()} — {platform.machine()} "
          f"{platform.processor() or ''} — torch {torch.__version__}, {args.threads} threads, {args.device}")
    print(f"# command: python benchmarks/decoder_inputs.py {' '.join(sys.argv[1:])}\n")
    print(f"| layout ({b} x {width} x {vocab}) | dtype | _self_conditioning ms | a stack of the rows ms |")
    print("|---|---|---|---|")
    layouts = [("steps on (one pass, in order)", [raw[j] for j in range(b)]),
               ("a row joined (one without feedback)", [raw[j] for j in range(b - 1)] + [None]),
               ("one pass, rows reordered", [raw[j] for j in reversed(range(b))])]
    for name, feedback in layouts:
        for dtype in (torch.float32, torch.bfloat16):
            ours = median_ms(partial(adapter._self_conditioning, feedback, width, dtype), args.device)
            stack = median_ms(partial(stacked, feedback, dtype), args.device)
            print(f"| {name} | {str(dtype).removeprefix('torch.')} | {ours:.1f} | {stack:.1f} |")
    del raw, layouts
    context_table(adapter, args.context, device)
    return 0


def context_table(adapter, shape: str, device: torch.device) -> None:
    from transformers import DiffusionGemmaConfig, DynamicCache

    from redraft.workers.adapters import EncoderContext, stack_caches

    b, tokens = (int(v) for v in shape.split("x"))
    config = DiffusionGemmaConfig().get_text_config(decoder=True)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    contexts = []
    for _ in range(b):
        cache = DynamicCache(config=config)
        for i, layer in enumerate(cache.layers):
            layer_config = config.per_layer_config[i]
            kv = (1, layer_config.num_key_value_heads, tokens, layer_config.head_dim)
            layer.update(torch.randn(kv, dtype=dtype, device=device), torch.randn(kv, dtype=dtype, device=device))
        contexts.append(EncoderContext(cache, tokens))
    nbytes = sum(t.numel() * t.element_size() for c in contexts for lay in c.cache.layers for t in (lay.keys, lay.values))
    first = median_ms(lambda: stack_caches([c.cache for c in contexts]), device.type)
    adapter._group_cache(contexts)  # the window's first step: stacked, the rows' caches now views of it
    later = median_ms(partial(adapter._group_cache, contexts), device.type)
    print(f"\n| encoder caches ({b} rows x {tokens} tokens, {str(dtype).removeprefix('torch.')}) | ms a step |")
    print("|---|---|")
    print(f"| stacked every step (`stack_caches`, {nbytes / 2**20:,.0f} MiB copied) | {first:.1f} |")
    print(f"| `_group_cache` at a window's later steps | {later:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
