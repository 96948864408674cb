"""The batching engine at a real masked-model shape: throughput against the bare-forward ceiling (not a test).

Builds a ModernBERT masked LM with random weights directly on the device (nothing is downloaded, nothing is
loaded from disk) and runs N concurrent jobs through ``redraft.workers.engine.BatchEngine`` as a worker does (one thread
per job, one engine thread stepping every row; the group step of ``workers/policies/mask_noise.py``), for each N
of ``--batches``; then the same number of bare forward passes of the same shape, with nothing around them. With
``--json`` every job's answer is under a JSON-schema target instead (``SlotTargets``, the slot decoder's DP).

Shapes:

* ``--shape tiny``: 2 layers, width 64 (a CPU smoke run of the script);
* ``--shape llada8b``: LLaDA-8B's width and depth (hidden 4096, 32 layers, 32 heads, MLP 12,288), bf16, with
  Redraft's 8,192-token tokenizer and output layer (LLaDA's is 126,464 tokens: the forward pass here is lighter
  by its output projection, ~1 GFLOP a token), for one H200.

Reported per N: jobs/s batched, the ceiling's jobs/s, their ratio, tokens/s, the engine's split between forward
passes and the group step, and (``--json``) the structure processor's share of the step.

    python benchmarks/masked_shapes.py --shape tiny --device cpu --batches 1,4
    python benchmarks/masked_shapes.py --shape llada8b --device cuda --batches 1,8,16,32 [--json]   # < 12 min
        [--torch-compile reduce-overhead]   # the engine's passes under torch.compile with CUDA graphs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import get_args

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from redraft.settings import CompileMode

SHAPES = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4},
    "llada8b": {"hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 32, "num_attention_heads": 32},
}
SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 20}, "year": {"type": "integer"}},
          "required": ["title", "year"]}
WORDS = "The committee met on Tuesday to review the proposal and recorded its decision as follows. "


def build(shape: str, device: str, context: int, workdir: Path, torch_compile: str = "off"):
    """(adapter, info, tokenizer): a random ModernBERT of ``shape`` on ``device`` with Redraft's tokenizer."""
    from transformers import AutoConfig, ModernBertForMaskedLM

    from redraft.families import load_model_info, load_tokenizer
    from redraft.workers.adapters import MaskedLMAdapter
    from tests.utils.models import make_tiny_random_model

    path = make_tiny_random_model(workdir / shape, context_length=context)
    config = json.loads((path / "config.json").read_text())
    config.update(SHAPES[shape], layer_types=["full_attention"] * SHAPES[shape]["num_hidden_layers"])
    (path / "config.json").write_text(json.dumps(config))
    info = load_model_info(shape, path)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = ModernBertForMaskedLM(AutoConfig.from_pretrained(path, local_files_only=True)).to(dtype)
    return MaskedLMAdapter(info, model, torch.device(device), torch_compile), info, load_tokenizer(path)


def make_rows(n: int, adapter, info, tokenizer, canvas_tokens: int, answer: int, steps: int, with_json: bool,
              timings: list[float]):
    """n rows of one shape: a prompt filling the canvas, then an answer slot (free text, or under SCHEMA)."""
    from timing import Timed  # benchmarks/timing.py

    from redraft.constraints.generate import compile_generate, prompt_slot
    from redraft.families import special_ids
    from redraft.workers.processors.forbid_tokens import ForbidTokens
    from redraft.workers.processors.slot_targets import SlotTargets, constrained_slots
    from redraft.workers.sampler import Row, SamplerConfig

    special = special_ids(info)
    ids = tokenizer.encode(WORDS * (canvas_tokens // 8), add_special_tokens=False).ids[:canvas_tokens - answer - 2]
    pieces = [tokenizer.decode(ids), prompt_slot({"json_schema": SCHEMA} if with_json else None, answer, 0, 4096)]
    canvas = compile_generate(pieces, tokenizer, info, require_slot=True)
    rows = []
    for i in range(n):
        procs = [ForbidTokens(special, info.vocab_size)]
        if with_json:
            procs.append(Timed(SlotTargets({0: constrained_slots(canvas, tokenizer, info, special)}, info.empty_id),
                               timings))
        rows.append(Row(torch.tensor(canvas.token_ids, device=adapter.device),
                        torch.tensor(canvas.fixed, device=adapter.device), SamplerConfig(steps=steps, temperature=0.7),
                        torch.Generator().manual_seed(i), info.mask_id, procs))
    return rows, canvas.length


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,8,16,32")
    parser.add_argument("--canvas", type=int, default=256, help="canvas tokens")
    parser.add_argument("--answer", type=int, default=64, help="answer tokens (the slot)")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="a JSON-schema target on every answer")
    parser.add_argument("--torch-compile", default="off", choices=get_args(CompileMode),
                        help="REDRAFT_TORCH_COMPILE for the engine's passes (the ceiling stays as written)")
    args = parser.parse_args()

    from redraft.workers.engine import BatchEngine

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        adapter, info, tokenizer = build(args.shape, args.device, max(512, args.canvas), Path(tmp), args.torch_compile)
        device = adapter.device
        sync(device)
        print(f"built {args.shape} on {device} (torch.compile {args.torch_compile}, compiled when built) in "
              f"{time.perf_counter() - t0:.1f} s "
              f"({sum(p.numel() for p in adapter.model.parameters()) / 1e9:.2f}B parameters)", flush=True)
        what = "JSON-schema answer" if args.json else "free-text answer"
        name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
        print(f"\nMeasured {date.today()} on {name}, torch {torch.__version__}, "
              f"`python benchmarks/masked_shapes.py {' '.join(sys.argv[1:])}`: {what} of {args.answer} tokens, "
              f"{args.steps} steps, temperature 0.7.\n")
        print("| jobs | canvas | batched jobs/s | ceiling jobs/s | batched / ceiling | tokens/s | "
              "engine: forward / step | structure per step, all jobs |")
        print("|---|---|---|---|---|---|---|---|")
        for n in (int(b) for b in args.batches.split(",")):
            for warm in (True, False):  # a warm-up round first: allocator, kernels, automaton caches
                timings: list[float] = []
                rows, length = make_rows(n, adapter, info, tokenizer, args.canvas, args.answer, args.steps, args.json,
                                         timings)
                engine = BatchEngine(adapter, max_batch=n, name=args.shape, start=False)
                threads = [threading.Thread(target=engine.run, args=(r,)) for r in rows]
                for t in threads:
                    t.start()
                while engine.pending < n:
                    time.sleep(0.001)
                sync(device)
                t0 = time.perf_counter()
                engine.start()
                for t in threads:
                    t.join()
                sync(device)
                batched = time.perf_counter() - t0
            x = torch.stack([r.x for r in rows])  # (n, L) finished canvases: the same shape as every step's
            adapter.logits(x, None)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(engine.steps):
                adapter.logits(x, None)
            sync(device)
            bare = time.perf_counter() - t0
            per_step = sum(timings) / max(1, engine.steps)
            print(f"| {n} | {length} | {n / batched:.2f} | {n / bare:.2f} | {bare / batched:.0%} | "
                  f"{n * args.answer / batched:.0f} | {engine.forward_s / batched:.0%} / {engine.advance_s / batched:.0%} | "
                  f"{f'{per_step * 1e3:.1f} ms' if args.json else '–'} |", flush=True)


if __name__ == "__main__":
    main()
