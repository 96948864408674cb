"""The opt-in prefix cache (``cache: "prefix"``): its speed-up and its quality cost on held-out text (not a test).

Held-out Wikipedia lead sections of Redraft's corpus (never trained on; ``pip install -e .[train]`` provides
them), cut into canvases of the shipped model's tokens, two tasks:

* ``infill`` — ``--context`` tokens of left context, a ``--span``-token gap, 16 tokens of right context;
* ``continue`` — ``--context`` tokens of prompt, then a ``--span``-token answer with nothing after it.

Each canvas is denoised greedily, one step per masked token, with and without the cache, with one block or
blocks of ``--block`` tokens, in batches of ``--batch`` rows (a worker's batching). Reported per setting:
top-1 accuracy against the held-out tokens, agreement with the uncached run of the same setting, canvas
positions the model read, and wall time.

    python benchmarks/prefix_cache.py                       # redraft-tiny, CPU
    python benchmarks/prefix_cache.py --docs 256 --device cuda
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

RIGHT = 16  # infill: tokens of right context after the gap


def canvases(tokenizer, n_docs: int, context: int, span: int) -> list[list[int]]:
    """Token ids of the first ``n_docs`` held-out Wikipedia documents long enough for the canvas."""
    from redraft.training.corpus import Document, wiki_documents

    need = context + span + RIGHT
    out = []
    for index, text in enumerate(wiki_documents()):
        if not Document("wiki", index, text).held_out:
            continue
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if len(ids) >= need:
            out.append(ids[:need])
        if len(out) == n_docs:
            break
    return out


def run(adapter, docs, task: str, context: int, span: int, cache: str | None, block: int | None, batch: int):
    """(outputs per doc at the span, wall seconds, positions read)."""
    from redraft.families import special_ids
    from redraft.workers.processors.forbid_tokens import ForbidTokens
    from redraft.workers.sampler import SamplerConfig, denoise

    info = adapter.info
    length = context + span + (RIGHT if task == "infill" else 0)
    cfg = SamplerConfig(steps=span, block_size=block, cache=cache)
    procs = [ForbidTokens(special_ids(info), info.vocab_size)]
    outs: list[list[int]] = []
    adapter.positions_read = 0
    t0 = time.perf_counter()
    for b0 in range(0, len(docs), batch):
        chunk = [d[:length] for d in docs[b0:b0 + batch]]
        x = torch.tensor(chunk, device=adapter.device)
        fixed = torch.ones_like(x, dtype=torch.bool)
        fixed[:, context:context + span] = False
        x = torch.where(fixed, x, info.mask_id)
        gens = [torch.Generator().manual_seed(b0 + i) for i in range(len(chunk))]
        out = denoise(adapter, x, fixed, info.mask_id, cfg, gens, procs)
        outs += out.tokens[:, context:context + span].tolist()
    return outs, time.perf_counter() - t0, adapter.positions_read


def same(outs: list[list[int]], other: list[list[int]]) -> float:
    """The share of positions where two runs (or a run and the held-out tokens) hold the same token."""
    pairs = [(a, b) for o, t in zip(outs, other) for a, b in zip(o, t)]
    return sum(a == b for a, b in pairs) / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "redraft-tiny"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--context", type=int, default=96)
    ap.add_argument("--span", type=int, default=32)
    ap.add_argument("--block", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from redraft.families import load_tokenizer
    from redraft.workers.adapters import get_adapter

    adapter = get_adapter("bench", Path(args.model), args.device)
    tokenizer = load_tokenizer(Path(args.model))
    docs = canvases(tokenizer, args.docs, args.context, args.span)
    if not docs:
        sys.exit("no held-out document is long enough; lower --context or --span")
    print(f"# {date.today()} · {platform.machine()} · {torch.get_num_threads()} threads · device {args.device} · "
          f"model {Path(args.model).name} · {len(docs)} held-out wiki documents · context {args.context}, "
          f"span {args.span}, batch {args.batch}")
    print(f"# command: python benchmarks/prefix_cache.py {' '.join(sys.argv[1:])}")
    print()
    print("| task | blocks | cache | top-1 accuracy | agrees with uncached | positions read | wall s | speed-up |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for task in ("infill", "continue"):
        for block in (None, args.block):
            truth = [d[args.context:args.context + args.span] for d in docs]
            base, base_s, base_read = run(adapter, docs, task, args.context, args.span, None, block, args.batch)
            cached, cached_s, cached_read = run(adapter, docs, task, args.context, args.span, "prefix", block,
                                                args.batch)
            blocks = "one" if block is None else str(block)
            print(f"| {task} | {blocks} | off | {same(base, truth):.3f} | 1.000 | {base_read:,} | {base_s:.2f} | 1.00× |")
            print(f"| {task} | {blocks} | prefix | {same(cached, truth):.3f} | {same(cached, base):.3f} | "
                  f"{cached_read:,} | {cached_s:.2f} | {base_s / cached_s:.2f}× |")


if __name__ == "__main__":
    main()
