"""The speed harness behind docs/benchmarks.md: three tables from one run (not a test).

1. Decoding schedules on held-out infill (tests/data/heldout_sample.jsonl; a 16-token span of each
   text is masked and written back): one token per step (LLaDA's reference schedule: as many forward
   passes as masks) against confidence-threshold parallel decoding (Fast-dLLM) at several thresholds:
   forward passes per generated token, tokens per second, and top-1 accuracy against the held-out text.
2. Worker throughput: N jobs (1, 4, 16, 32) through the worker's own path (``redraft.workers.runner.run_job``:
   claim, processors, the batching engine, step rows written and step events published on real Redis,
   the draft written) in N threads, as the Celery thread pool runs them, batched (one engine stepping
   all of them) vs one at a time; next to the ceiling, a bare forward pass of the same shapes, as many
   times as the batched run made, with nothing else around it.
3. Queue path latency: 50 jobs submitted to a real ``redraft serve`` (API + embedded worker + SQLite +
   Redis) one after another, submit → result, next to the sampler called directly; then the throughput
   table's jobs submitted N at a time over HTTP, submit → last result (the whole service's throughput).

    python benchmarks/harness.py [--device cpu|cuda] [--markdown docs/benchmarks.md]
        [--tables decoding,throughput,queue] [--concurrency 1,4,16,32] [--repeats 1]
        [--torch-compile off|default|reduce-overhead]

``--repeats R`` runs each throughput row's batched jobs R times, each round with both ceilings measured right
after it (a ratio is taken within its round: on a shared VM the ceiling itself moves between minutes), and the
service's jobs R times; cells give the median and the range.

``--torch-compile`` sets REDRAFT_TORCH_COMPILE for the worker path, the service and the like-for-like ceiling.

Runs unchanged on CUDA (``--device cuda``); on these 2-core CPUs it takes a few minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import get_args

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from redraft.settings import CompileMode

SAMPLE = REPO / "tests" / "data" / "heldout_sample.jsonl"
THRESHOLDS = (0.9, 0.8, 0.7, 0.5, 0.3)
SPAN = 16
THROUGHPUT_TEXT = "Dear team, the report on [[gap:16]] is ready. Please read it and [[gap:16]] by Friday."


def decoding_table(device: str) -> list[str]:
    from redraft.families import load_tokenizer, special_ids
    from redraft.settings import DEFAULT_MODEL_DIR
    from redraft.workers.adapters import get_adapter
    from redraft.workers.processors.forbid_tokens import ForbidTokens
    from redraft.workers.sampler import SamplerConfig, denoise

    adapter = get_adapter("redraft-tiny", DEFAULT_MODEL_DIR, device)
    info, tokenizer = adapter.info, load_tokenizer(DEFAULT_MODEL_DIR)
    procs = [ForbidTokens(special_ids(info), info.vocab_size)]
    cases = []
    g = torch.Generator().manual_seed(0)
    for line in SAMPLE.read_text().splitlines():
        ids = tokenizer.encode(json.loads(line)["text"], add_special_tokens=False).ids[:126]
        if len(ids) < SPAN + 8:
            continue
        start = int(torch.randint(4, len(ids) - SPAN - 2, (1,), generator=g))
        full = torch.tensor([info.bos_id, *ids, info.eos_id])
        masked = torch.zeros_like(full, dtype=torch.bool)
        masked[1 + start : 1 + start + SPAN] = True
        cases.append((full, masked))
    schedules = [("one token per step", None)] + [(f"threshold {t}", t) for t in THRESHOLDS]
    rows = ["| schedule | forward passes per token | tokens per second | held-out top-1 accuracy |",
            "|---|---|---|---|"]
    for name, threshold in schedules:
        passes = correct = total = 0
        t0 = time.perf_counter()
        for full, masked in cases:
            x = torch.where(masked, info.mask_id, full).unsqueeze(0).to(adapter.device)
            cfg = SamplerConfig(steps=int(masked.sum()), threshold=threshold)
            out = denoise(adapter.logits, x, ~masked.unsqueeze(0).to(adapter.device), info.mask_id, cfg,
                          [torch.Generator().manual_seed(0)], procs)
            passes += len(out.history[0])
            correct += int((out.tokens[0].cpu() == full)[masked].sum())
            total += int(masked.sum())
        elapsed = time.perf_counter() - t0
        rows.append(f"| {name} | {passes / total:.3f} | {total / elapsed:.0f} | {correct / total:.3f} |")
    rows.append(f"\n{len(cases)} held-out texts, one {SPAN}-token span masked in each ({total} tokens written "
                f"per schedule), greedy.")
    return rows


def throughput_table(device: str, database_url: str, redis_url: str,
                     concurrency: tuple[int, ...] = (1, 4, 16, 32), repeats: int = 1) -> list[str]:
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "REDRAFT_DEVICE": device})
    from timing import spread

    from redraft.api.schemas import InfillJobCreate
    from redraft.api.submit import compile_request, resolve_model, sampling_params
    from redraft.settings import get_settings
    from redraft.storage import repo
    from redraft.storage.db import session_scope
    from redraft.storage.migrate import upgrade
    from redraft.workers import engine as engine_mod
    from redraft.workers.adapters import get_adapter
    from redraft.workers.drafting import PAD_TO
    from redraft.workers.runner import run_job

    get_settings.cache_clear()
    settings = get_settings()
    upgrade(database_url)
    info = resolve_model(None, settings)
    adapter = get_adapter(info.name, settings.models[info.name], device, settings.torch_compile)
    req = InfillJobCreate(kind="infill", text=THROUGHPUT_TEXT, steps=16, temperature=0.7)

    def make_jobs(n: int) -> list[str]:
        with session_scope() as s:
            tenant = repo.get_or_create_tenant(s, "bench")
            canvas = compile_request(req, info, settings)
            ids = [repo.create_job(s, tenant_id=tenant.id, kind="infill", model=info.name, request={},
                                   params={**sampling_params(req, settings, info).to_json(), "seed": i},
                                   canvas=canvas.to_json()).id
                   for i in range(n)]
        return ids

    def run(ids: list[str], batch: int) -> float:
        engine_mod._engines.clear()
        settings.worker_batch_size = batch
        threads = [threading.Thread(target=run_job, args=(j, settings)) for j in ids]
        t0 = time.perf_counter()
        if batch == 1:  # one at a time, as a solo-pool worker would
            for t in threads:
                t.start()
                t.join()
        else:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        return time.perf_counter() - t0

    length = len(compile_request(req, info, settings).token_ids)
    padded = -(-length // PAD_TO) * PAD_TO
    written = 32  # two 16-token gaps per job
    def _round(n: int, batched: float) -> dict[str, float]:
        """One batched run's figures with both ceilings measured right after it (the ceiling of these VMs moves
        by up to a third between minutes, so each ratio is taken within a round)."""
        eng = next(iter(engine_mod._engines.values()))
        steps = eng.steps
        x = torch.randint(5, 8000, (n, padded), device=adapter.device)
        attn = torch.ones(n, padded, dtype=torch.bool, device=adapter.device)
        attn[:, length:] = False
        adapter.logits(x, attn)
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            adapter.logits(x, attn)
        if adapter.device.type == "cuda":
            torch.cuda.synchronize()
        bare = time.perf_counter() - t0
        # Like for like: the same passes with the LM head at the masks only, as the engine computes it (where the
        # adapter does: ModernBERT), a job's 32 masks going down evenly over its 16 steps.
        sparse = float("nan")
        if getattr(adapter, "sparse_head", False):
            canvas_ids = torch.tensor(compile_request(req, info, settings).token_ids)
            masked = (canvas_ids == info.mask_id).nonzero().squeeze(1)  # the gaps' positions
            inputs = []
            for s in range(steps):
                left = round(len(masked) * max(0, req.steps - s) / req.steps)
                xs = x.clone()
                xs[:, masked[:left]] = info.mask_id
                inputs.append(xs)
            t0 = time.perf_counter()
            for xs in inputs:
                adapter._taken = 0
                adapter._logits_at_masks(xs, attn)
            if adapter.device.type == "cuda":
                torch.cuda.synchronize()
            sparse = time.perf_counter() - t0
        return {"batched": batched, "bare": bare, "sparse": sparse, "forward": eng.forward_s, "advance": eng.advance_s}

    run(make_jobs(2), 2)  # warm up: model load, automaton and tokenizer caches, first forward passes
    rows = ["| concurrent jobs | one at a time: jobs/s | batched: jobs/s | batched: tokens/s | "
            "bare forward ceiling: jobs/s | batched / ceiling | batched / ceiling with the head at the masks | "
            "engine: forward / advance |",
            "|---|---|---|---|---|---|---|---|"]
    for n in concurrency:
        alone = run(make_jobs(n), 1)
        rounds = [_round(n, run(make_jobs(n), n)) for _ in range(repeats)]
        batched = [r["batched"] for r in rounds]
        rows.append(f"| {n} | {n / alone:.2f} | {spread([n / t for t in batched])} | "
                    f"{spread([n * written / t for t in batched], '.0f')} | "
                    f"{spread([n / r['bare'] for r in rounds])} | "
                    f"{spread([r['bare'] / r['batched'] for r in rounds], '.0%')} | "
                    f"{spread([r['sparse'] / r['batched'] for r in rounds], '.0%')} | "
                    f"{spread([r['forward'] / r['batched'] for r in rounds], '.0%')} / "
                    f"{spread([r['advance'] / r['batched'] for r in rounds], '.0%')} |")
    rows.append(f"\nEach job: two 16-token gaps, 16 steps, temperature 0.7, canvas {length} tokens (padded to "
                f"{padded}); step rows in {database_url.split(':')[0]}, "
                f"{'events on Redis' if _answers(redis_url) else 'no event bus (no Redis on this host)'}. "
                f"The ceiling runs "
                f"as many bare forward passes of shape ({'n'}, {padded}) as the batched run made (whole logits, "
                f"as before 2026-12-02); the engine computes the LM head at masked positions only, so the like-for-like "
                f"ceiling runs those passes with the head at a schedule's masks (32 per job, down evenly over the "
                f"steps)." + (f" Each cell: the median (range) of {repeats} batched rounds, each ratio taken within its "
                              f"round (both ceilings measured right after that round's batched run)."
                              if repeats > 1 else ""))
    return rows


def _answers(redis_url: str | None) -> bool:
    """Whether a Redis answers at ``redis_url`` (the worker path runs without its event bus where none does)."""
    if not redis_url:
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def service_throughput(url: str, key: str, n: int) -> float:
    """``n`` throughput-table jobs submitted at once over HTTP; seconds until the last one has its result."""
    import httpx

    body = {"kind": "infill", "text": THROUGHPUT_TEXT, "steps": 16, "temperature": 0.7}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as client:
        t0 = time.perf_counter()
        ids = []
        for i in range(n):
            r = client.post("/v1/jobs", json={**body, "seed": i})
            if r.status_code != 202:
                raise SystemExit(f"submission refused: {r.status_code} {r.text}")
            ids.append(r.json()["id"])
        waiting = set(ids)
        while waiting:  # one listing a sweep (the newest jobs first), so polling does not load the API
            time.sleep(0.05)
            for job in client.get("/v1/jobs", params={"limit": min(200, len(ids))}).json()["data"]:
                if job["id"] in waiting and job["status"] not in ("queued", "running"):
                    if job["status"] != "succeeded":
                        raise SystemExit(f"job failed: {job['error']}")
                    waiting.discard(job["id"])
        return time.perf_counter() - t0


def queue_table(jobs: int, redis_url: str, concurrency: tuple[int, ...] = (16,), repeats: int = 1) -> list[str]:
    import httpx
    from queue_latency import direct, queued
    from timing import pct, spread

    work = Path(tempfile.mkdtemp(prefix="redraft-bench-"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{work / 'redraft.db'}", "REDIS_URL": redis_url,
           "REDRAFT_QUEUE_NAME": f"bench-{port}", "REDRAFT_VAR_DIR": str(work),
           "REDRAFT_TENANT_MAX_CONCURRENT_JOBS": str(max(concurrency, default=8) + 8),
           # every job of the table within a minute: the latency runs, then R rounds of each concurrency
           "REDRAFT_TENANT_JOBS_PER_MINUTE": str(2 * jobs + 16 + repeats * sum(concurrency))}
    redraft = str(Path(sys.executable).with_name("redraft"))
    subprocess.run([redraft, "migrate"], env=env, check=True, capture_output=True)
    key = subprocess.run([redraft, "keys", "create", "--tenant", "bench"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip().split()[-1]
    server = subprocess.Popen([redraft, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(work / "serve.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"redraft serve did not start; see {work / 'serve.log'}")
            time.sleep(0.2)
        queued(3, url, key, "redraft-tiny")  # warm the worker
        q = queued(jobs, url, key, "redraft-tiny")
        d = direct(jobs, "redraft-tiny")
        service_throughput(url, key, 4)  # warm the batched path
        through = {n: [n / service_throughput(url, key, n) for _ in range(repeats)] for n in concurrency}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return ["| path | p50 ms | p95 ms |", "|---|---|---|",
            f"| sampler called directly | {pct(d, 50) * 1e3:.1f} | {pct(d, 95) * 1e3:.1f} |",
            f"| submit → result through API + queue + worker | {pct(q, 50) * 1e3:.1f} | {pct(q, 95) * 1e3:.1f} |",
            f"| added by the queue path | {(pct(q, 50) - pct(d, 50)) * 1e3:.1f} | "
            f"{(pct(q, 95) - pct(d, 95)) * 1e3:.1f} |",
            f"\n{jobs} jobs, one after another (two 6-token gaps, 8 steps each), `redraft serve` with a SQLite file.",
            "", "| concurrent jobs over HTTP | jobs/s, submit → last result |", "|---|---|",
            *[f"| {n} | {spread(rates)} |" for n, rates in through.items()],
            "\nThe throughput table's jobs, all submitted at once to the same `redraft serve` (one worker, "
            "`REDRAFT_WORKER_BATCH_SIZE` 16), polled until the last result is in: compare with that table's "
            "batched jobs/s."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--database-url", default=None, help="for the throughput table (default: a temp SQLite file)")
    parser.add_argument("--jobs", type=int, default=50, help="queue latency jobs")
    parser.add_argument("--skip-queue", action="store_true", help="no `redraft serve` (e.g. on a bare GPU host)")
    parser.add_argument("--markdown", default=None, help="also write the tables to this file")
    parser.add_argument("--tables", default="decoding,throughput,queue", help="which tables, comma-separated")
    parser.add_argument("--concurrency", default="1,4,16,32", help="concurrent jobs of the throughput table")
    parser.add_argument("--repeats", type=int, default=1,
                        help="batched rounds per row of the throughput table, each with its own ceilings measured "
                             "right after it: median (range)")
    parser.add_argument("--torch-compile", default=os.environ.get("REDRAFT_TORCH_COMPILE", "off"),
                        choices=get_args(CompileMode),
                        help="REDRAFT_TORCH_COMPILE for the worker path and the service (default: as set, or off)")
    args = parser.parse_args()
    os.environ["REDRAFT_TORCH_COMPILE"] = args.torch_compile
    tables = set(args.tables.split(","))
    concurrency = tuple(int(n) for n in args.concurrency.split(","))
    database_url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='redraft-bench-')}/bench.db"
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else \
        f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    out = [f"Measured {date.today()} on {device_name}, model redraft-tiny, torch.compile {args.torch_compile}, "
           f"`python benchmarks/harness.py {' '.join(sys.argv[1:])}`.", ""]
    if "decoding" in tables:
        out += ["### 1. Decoding schedules (held-out infill)", "", *decoding_table(args.device), ""]
    if "throughput" in tables:
        out += ["### 2. Worker throughput", "",
                *throughput_table(args.device, database_url, args.redis_url, concurrency,
                                  max(1, args.repeats)), ""]
    if "queue" in tables and not args.skip_queue:
        out += ["### 3. Queue path latency and throughput", "",
                *queue_table(args.jobs, args.redis_url, tuple(n for n in concurrency if n > 1), max(1, args.repeats)),
                ""]
    text = "\n".join(out)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
