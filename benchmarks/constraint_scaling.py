"""What a structure target costs a denoising step, and how a step's cost grows with the work (not a test).

Three tables from one run, all through the sampler with the shipped model (``denoise`` with the worker's
processors: ``ForbidTokens`` and ``SlotTargets``, the slot decoder's DP over slot position x automaton state):

1. **Real-world schemas** (``benchmarks/data/schemas.json``): for each, the compile (seconds, states S, edges E,
   and what the decoder reads instead: P state pairs over K token classes holding M tokens), then a 128-token
   answer after a prompt (a ~144-token canvas): the structure processor's time per step (p50 / p99) next to the
   forward pass of the same step, and whether the output validates against the schema (``jsonschema``).
   A schema refused at submission is listed with the refusal.
2. **Canvas length**: time per step (forward, structure processor, rest of the step) as the canvas grows
   64 -> 256 -> the model's context (512 for redraft-tiny), with one JSON slot of 32 tokens and prompt text
   filling the rest.
3. **Constrained slots**: a 256-token canvas with 0 -> 8 slots of 24 tokens, each under a JSON schema.

The vocabulary axis (8k -> 126k -> 262k) is ``benchmarks/constraint_cost_262k.py --vocab-size N``: it builds a
real-size BPE vocabulary offline, which takes minutes, so it is a script of its own.

    python benchmarks/constraint_scaling.py [--threads 2] [--steps 32] [--tables schemas,canvas,slots]
                                            [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from timing import Timed, pct  # benchmarks/timing.py

from redraft.constraints.automaton import compile_json_schema
from redraft.constraints.generate import compile_generate, prompt_slot
from redraft.constraints.templates import make_slot
from redraft.errors import RedraftError
from redraft.families import load_model_info, load_tokenizer, special_ids
from redraft.settings import DEFAULT_MODEL_DIR
from redraft.workers.adapters import get_adapter
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.processors.slot_targets import SlotTargets, constrained_slots
from redraft.workers.sampler import SamplerConfig, denoise

SCHEMAS = REPO / "benchmarks" / "data" / "schemas.json"
WORDS = "The committee met on Tuesday to review the proposal and recorded its decision as follows. "
SLOT_SCHEMA = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 20},
                                                "year": {"type": "integer"}}, "required": ["title", "year"]}


class Bench:
    def __init__(self, model_dir: Path, steps: int) -> None:
        self.info = load_model_info("bench", model_dir)
        self.tokenizer = load_tokenizer(model_dir)
        self.adapter = get_adapter("bench", model_dir, "auto")
        self.special = special_ids(self.info)
        self.steps = steps

    def prompt(self, n_tokens: int) -> str:
        ids = self.tokenizer.encode(WORDS * (n_tokens // 10 + 4), add_special_tokens=False).ids[:max(0, n_tokens)]
        return self.tokenizer.decode(ids)

    def run(self, pieces, seed: int = 0) -> dict:
        """One generate job through the sampler; per-step times of the forward pass, the structure processor and
        the whole step, and the slots' texts."""
        canvas = compile_generate(pieces, self.tokenizer, self.info)
        fwd, cons, step_ends = [], [], []
        slots = constrained_slots(canvas, self.tokenizer, self.info, self.special)
        procs = [ForbidTokens(self.special, self.info.vocab_size)]
        if slots:
            procs.append(Timed(SlotTargets({0: slots}, self.info.empty_id), cons))
        x = torch.tensor([canvas.token_ids], device=self.adapter.device)
        fixed = torch.tensor([canvas.fixed], device=self.adapter.device)
        t0 = time.perf_counter()
        out = denoise(Timed(self.adapter.logits, fwd), x, fixed, self.info.mask_id,
                      SamplerConfig(steps=self.steps, temperature=0.7), [torch.Generator().manual_seed(seed)], procs,
                      on_step=lambda n, recs: step_ends.append(time.perf_counter()))
        steps = [b - a for a, b in zip([t0, *step_ends], step_ends)]
        tokens = out.tokens[0].tolist()
        texts = [self.tokenizer.decode([tokens[p] for p in canvas.slot_positions(i) if tokens[p] != self.info.empty_id])
                 for i in range(len(canvas.slots))]
        return {"length": canvas.length, "forward": fwd, "constraint": cons, "step": steps, "texts": texts}


def ms(xs: list[float], q: int = 50) -> str:
    return f"{pct(xs, q) * 1e3:.1f}" if xs else "–"


def schema_table(bench: Bench, answer: int) -> list[str]:
    import jsonschema

    schemas = {k: v for k, v in json.loads(SCHEMAS.read_text()).items() if not k.startswith("_")}
    rows = ["| schema | compile s | S | E | P / K / M | structure p50 ms | p99 | forward p50 ms | ratio | valid |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, schema in schemas.items():
        eos = bench.info.eos_id if bench.info.eos_id is not None else -1
        try:
            t0 = time.perf_counter()
            a = compile_json_schema(schema, bench.tokenizer, eos, set(bench.special))
            compile_s = time.perf_counter() - t0
            r = bench.run([bench.prompt(144 - answer - 2), prompt_slot({"json_schema": schema}, answer, 0, 512)])
        except RedraftError as exc:
            rows.append(f"| {name} | refused: {exc.message[:90]} | | | | | | | | |")
            continue
        c = a.classes
        try:
            jsonschema.validate(json.loads(r["texts"][0]), schema)
            valid = "yes"
        except (ValueError, jsonschema.ValidationError) as exc:
            valid = f"NO: {str(exc)[:40]}"
        ratio = pct(r["constraint"], 50) / pct(r["forward"], 50)
        rows.append(f"| {name} | {compile_s:.2f} | {a.n_states:,} | {a.n_edges:,} | {c.n_pairs:,} / {c.n_classes} / "
                    f"{c.n_class_tokens:,} | {ms(r['constraint'])} | {ms(r['constraint'], 99)} | {ms(r['forward'])} | "
                    f"{ratio:.2f} | {valid} |")
    rows.append(f"\nA {answer}-token answer slot after a prompt, {bench.steps} steps at temperature 0.7, one job; "
                "compile timed cold in this process (the tokenizer's outlines-core vocabulary is built before the "
                "first one); ratio = structure processor / forward pass, per step.")
    return rows


def breakdown(r: dict) -> str:
    other = [s - f - c for s, f, c in zip(r["step"], r["forward"], r["constraint"] or [0.0] * len(r["step"]))]
    return f"{ms(r['step'])} | {ms(r['forward'])} | {ms(r['constraint'])} | {ms(other)}"


def canvas_table(bench: Bench) -> list[str]:
    rows = ["| canvas tokens | step p50 ms | forward | structure | rest of the step |", "|---|---|---|---|---|"]
    for length in (64, 256, bench.info.context_length):
        slot = prompt_slot({"json_schema": SLOT_SCHEMA}, 32, 0, 512)
        r = bench.run([bench.prompt(length - 34), slot])
        rows.append(f"| {r['length']} | {breakdown(r)} |")
    rows.append(f"\nOne JSON slot of 32 tokens (`{json.dumps(SLOT_SCHEMA)}`), prompt text filling the canvas, "
                f"{bench.steps} steps, one job (p50 over its steps).")
    return rows


def slots_table(bench: Bench) -> list[str]:
    rows = ["| constrained slots | step p50 ms | forward | structure | rest of the step |", "|---|---|---|---|---|"]
    for k in (0, 1, 2, 4, 8):
        pieces: list = []
        for i in range(k):
            pieces += [f"Record {i}: ", make_slot(f"r{i}", 24, json_schema=SLOT_SCHEMA, limit=512), "\n"]
        used = sum(26 for _ in range(k))
        pieces = [bench.prompt(256 - used - 2 - (24 if k == 0 else 0))] + (pieces or [make_slot("free", 24, limit=512)])
        r = bench.run(pieces)
        rows.append(f"| {k} | {breakdown(r)} |")
    rows.append(f"\nA ~256-token canvas; each slot 24 tokens under `{json.dumps(SLOT_SCHEMA)}` (0: one free-text slot "
                f"of 24 tokens), {bench.steps} steps, one job (p50 over its steps).")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--answer", type=int, default=128, help="answer tokens of the schema table")
    parser.add_argument("--tables", default="schemas,canvas,slots")
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench = Bench(Path(args.model_dir), args.steps)
    tables = args.tables.split(",")
    out = [f"Measured {date.today()} on {platform.machine()} CPU, {torch.get_num_threads()} thread(s), torch "
           f"{torch.__version__}, device {bench.adapter.device}, model {Path(args.model_dir).name} "
           f"(V = {bench.info.vocab_size:,}), `python benchmarks/constraint_scaling.py {' '.join(sys.argv[1:])}`.", ""]
    print("\n".join(out), flush=True)
    for name, title, table in (("schemas", "Real-world schemas", lambda: schema_table(bench, args.answer)),
                               ("canvas", "As the canvas grows", lambda: canvas_table(bench)),
                               ("slots", "As constrained slots are added", lambda: slots_table(bench))):
        if name in tables:
            part = [f"#### {title}", "", *table(), ""]
            print("\n".join(part), flush=True)
            out += part
    text = "\n".join(out)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
