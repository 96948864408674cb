"""How much latency the queue path adds over calling the sampler directly.

Runs N small infill jobs two ways on the same model and canvas:
  * direct: compile the canvas and call the sampler in this process;
  * queued: POST /v1/jobs to a running Redraft, then poll GET /v1/jobs/{id} until it finishes.
Prints p50 / p95 of each and of the difference. Not a test: timings vary by machine.

    python benchmarks/queue_latency.py --url http://127.0.0.1:8000 --key rdk_...   # against `redraft serve`
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import httpx
import torch
from timing import pct  # benchmarks/timing.py

from redraft.constraints.infill import compile_infill, parse_text
from redraft.families import load_tokenizer, special_ids
from redraft.settings import get_settings
from redraft.workers.adapters import get_adapter
from redraft.workers.processors.forbid_tokens import ForbidTokens
from redraft.workers.sampler import SamplerConfig, denoise

TEXT = "The weather today is [[gap:6]], so we will [[gap:6]]."
STEPS = 8


def direct(n: int, model: str) -> list[float]:
    settings = get_settings()
    adapter = get_adapter(model, settings.models[model], settings.device)
    tokenizer = load_tokenizer(adapter.info.path)
    procs = [ForbidTokens(special_ids(adapter.info), adapter.info.vocab_size)]
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        canvas = compile_infill(parse_text(TEXT, 16, 256), tokenizer, adapter.info)
        x = torch.tensor([canvas.token_ids])
        out = denoise(adapter.logits, x, torch.tensor([canvas.fixed]), adapter.info.mask_id,
                      SamplerConfig(steps=STEPS), [torch.Generator().manual_seed(i)], procs)
        canvas.render(out.tokens[0].tolist(), tokenizer, adapter.info)
        times.append(time.perf_counter() - t0)
    return times


def queued(n: int, url: str, key: str, model: str) -> list[float]:
    times = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        for i in range(n):
            t0 = time.perf_counter()
            job = client.post("/v1/jobs", json={"kind": "infill", "text": TEXT, "steps": STEPS, "seed": i,
                                                "model": model}).json()
            while job["status"] in ("queued", "running"):
                time.sleep(0.005)
                job = client.get(f"/v1/jobs/{job['id']}").json()
            if job["status"] != "succeeded":
                raise SystemExit(f"job failed: {job['error']}")
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--model", default=get_settings().default_model)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the worker has the other core
    d = direct(args.jobs, args.model)
    q = queued(args.jobs, args.url, args.key, args.model)
    print(f"queue latency benchmark, {date.today()}, {platform.machine()} {platform.processor() or ''} "
          f"{torch.get_num_threads()} thread(s), model {args.model}, {args.jobs} jobs, {STEPS} steps each")
    print(f"{'path':<28}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'sampler called directly':<28}{pct(d, 50) * 1e3:>10.1f}{pct(d, 95) * 1e3:>10.1f}")
    print(f"{'through API + queue':<28}{pct(q, 50) * 1e3:>10.1f}{pct(q, 95) * 1e3:>10.1f}")
    print(f"{'added by the queue path':<28}{(pct(q, 50) - pct(d, 50)) * 1e3:>10.1f}"
          f"{(pct(q, 95) - pct(d, 95)) * 1e3:>10.1f}")


if __name__ == "__main__":
    main()
