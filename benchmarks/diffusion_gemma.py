"""DiffusionGemma: Redraft's worker path against transformers' own ``generate`` on the same model (not a test).

For each batch size: the same prompts, the same sampling settings (the model's generation_config: steps per
canvas, entropy bound, t_max -> t_min, stability and confidence stop), random bf16/fp32 weights.

* ``generate`` — ``DiffusionGemmaForBlockDiffusion.generate`` on the batch (one global RNG);
* ``redraft`` — the worker's path without the database: each job's ``Drafting`` (canvas, processors, the
  sampler) in its own thread, all stepped by one ``BatchEngine`` as a worker steps them (one decoder pass per
  group of rows with equal shapes, each row with its own encoder cache and generator);
* ``redraft + json`` — the same with a JSON-schema target on every answer (``generate`` cannot do this).

Reported: answer tokens per second (tokens up to EOS, or the whole budget), decoder passes per canvas, and
wall time. Shapes:

* ``--shape tiny``: the test suite's tiny model (2 layers, width 32, 4 experts, canvas 16), runs on a CPU;
* ``--shape released``: the released configuration's layout (30 layers, 128 experts, top-8, canvas 256,
  vocabulary 262,144, sliding/full attention 5:1) with random bf16 weights built on the GPU. The widths not
  named in the issue (hidden size, heads, expert width) are the config class's defaults, so FLOPs are close
  to, not equal to, the real checkpoint's.

    python benchmarks/diffusion_gemma.py --shape tiny --device cpu
    python benchmarks/diffusion_gemma.py --shape released --device cuda --batches 1,8   # one H200, < 12 min
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
PROMPT = "Write a short note about the weather in Lisbon today."


def build(shape: str, device: str, workdir: Path):
    """(adapter, info, tokenizer): a model directory with Redraft's tokenizer and a random model on ``device``."""
    import json

    from redraft.families import load_model_info, load_tokenizer
    from redraft.workers.adapters import DiffusionGemmaAdapter, get_adapter
    from tests.utils.models import make_tiny_diffusion_gemma

    if shape == "tiny":
        path = make_tiny_diffusion_gemma(workdir / "tiny-dg", canvas_length=16, steps=6)
        adapter = get_adapter("tiny-dg", path, device)
        return adapter, adapter.info, load_tokenizer(path)
    from transformers import AutoConfig, DiffusionGemmaForBlockDiffusion
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

    path = make_tiny_diffusion_gemma(workdir / "released-dg", canvas_length=256, steps=48)
    config = json.loads((path / "config.json").read_text())
    text = config["text_config"]
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                "global_head_dim", "moe_intermediate_size", "sliding_window", "max_position_embeddings"):
        text.pop(key, None)  # the config class's defaults
    text.update({"vocab_size": 262_144, "num_hidden_layers": 30, "num_experts": 128, "top_k_experts": 8,
                 "moe_intermediate_size": 704, "layer_types": None})
    (path / "config.json").write_text(json.dumps(config))
    info = load_model_info("released-dg", path)
    hf_config = AutoConfig.from_pretrained(path, local_files_only=True)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 on the GPU directly: 26B parameters in fp32 would not fit
    try:
        with torch.device(device):
            model = DiffusionGemmaForBlockDiffusion(hf_config)
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = DiffusionGemmaGenerationConfig.from_pretrained(path, local_files_only=True)
    return DiffusionGemmaAdapter(info, model.eval(), torch.device(device)), info, load_tokenizer(path)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def answer_tokens(tokens: list[int], info) -> int:
    eos = set(info.eos_ids)
    n = 0
    for t in tokens:
        if t in eos:
            return n + 1
        if t == info.empty_id:
            continue
        n += 1
    return n


def run_generate(adapter, info, tokenizer, batch: int, budget: int, device: str) -> dict:
    prompt = [info.bos_id, *tokenizer.encode(PROMPT, add_special_tokens=False).ids]
    ids = torch.tensor([prompt] * batch, device=device)
    torch.manual_seed(0)
    sync(device)
    t0 = time.perf_counter()
    out = adapter.model.generate(ids, max_new_tokens=budget)
    sync(device)
    wall = time.perf_counter() - t0
    new = out.sequences[:, len(prompt):]
    tokens = sum(answer_tokens(row.tolist(), info) for row in new)
    generated = (new != info.empty_id).sum(-1).float()  # what tokens_per_forward counts
    passes = (generated / out.tokens_per_forward.float()).sum().item()
    canvases = sum(-(-int(g) // info.canvas_length) for g in generated)
    return {"tokens": tokens, "wall": wall, "passes": passes, "canvases": max(canvases, 1)}


def run_redraft(adapter, info, tokenizer, batch: int, budget: int, json_target: bool) -> dict:
    from redraft.api.schemas import GenerateJobCreate
    from redraft.api.submit import compile_request, sampling_params
    from redraft.settings import Settings
    from redraft.workers.drafting import Drafting
    from redraft.workers.engine import BatchEngine
    from redraft.workers.steps import MemorySink

    settings = Settings(models={info.name: info.path}, default_model=info.name, max_gap_tokens=max(budget, 256))
    target = {"json_schema": SCHEMA} if json_target else None
    engine = BatchEngine(adapter, max_batch=batch, start=False)
    drafts, results = [], [None] * batch
    for i in range(batch):
        req = GenerateJobCreate(kind="generate", prompt=PROMPT, target=target, max_tokens=budget, seed=i)
        canvas = compile_request(req, info, settings)
        drafts.append(Drafting(adapter, canvas, sampling_params(req, settings, info), MemorySink(tokenizer), settings,
                               engine=engine))

    def work(i: int) -> None:
        results[i] = drafts[i].run("generate")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(batch)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # every job hands its row over before the loop starts: one batch from the first step
    t0 = time.perf_counter()
    engine.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    tokens, passes, canvases = 0, 0, 0
    for d in drafts:
        answer = d.tokens[len(d.tokens) - budget:]
        tokens += answer_tokens(answer, info)
        passes += d.sink.offset
        canvases += -(-budget // info.canvas_length)
    if json_target:
        import json

        for text, extra, _, _ in results:
            json.loads(extra["slots"]["answer"])  # every answer parses (the target holds)
    return {"tokens": tokens, "wall": wall, "passes": passes, "canvases": canvases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=["tiny", "released"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--canvases", type=int, default=2, help="answer budget in canvases")
    ap.add_argument("--json-batches", default="1,8", help="batch sizes that also run with a JSON-schema target")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        adapter, info, tokenizer = build(args.shape, args.device, Path(tmp))
        budget = args.canvases * info.canvas_length
        print(f"# DiffusionGemma: Redraft vs generate — {date.today()} — {platform.machine()} "
              f"{platform.processor() or ''} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
              f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
        print(f"# shape {args.shape}: canvas {info.canvas_length}, vocabulary {info.vocab_size}, "
              f"{sum(p.numel() for p in adapter.model.parameters()) / 1e6:.1f}M parameters; defaults {info.defaults}; "
              f"answer budget {budget} tokens")
        print(f"# command: python benchmarks/diffusion_gemma.py {' '.join(sys.argv[1:])}\n")
        run_generate(adapter, info, tokenizer, 1, info.canvas_length, args.device)  # warm-up: first-call costs
        run_redraft(adapter, info, tokenizer, 1, info.canvas_length, False)
        print("| batch | path | answer tokens | wall s | tokens/s | decoder passes per canvas |")
        print("|---:|---|---:|---:|---:|---:|")
        for batch in [int(b) for b in args.batches.split(",")]:
            for name, run in (("generate", lambda: run_generate(adapter, info, tokenizer, batch, budget, args.device)),
                              ("redraft", lambda: run_redraft(adapter, info, tokenizer, batch, budget, False)),
                              ("redraft + json", lambda: run_redraft(adapter, info, tokenizer, batch, budget, True))):
                if name == "redraft + json" and str(batch) not in args.json_batches.split(","):
                    continue
                r = run()
                print(f"| {batch} | {name} | {r['tokens']} | {r['wall']:.2f} | {r['tokens'] / r['wall']:.1f} | "
                      f"{r['passes'] / r['canvases']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
