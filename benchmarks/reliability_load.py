"""Reliability under load and faults: the numbers behind docs/reliability.md. Not a test.

Starts a whole Redraft of its own — a fresh PostgreSQL database, a private redis-server on a free port,
``redraft serve --workers 2`` (the API plus two supervised Celery workers) — then runs 200 jobs from 4
clients (one tenant each: infill, constrained generation, revision) while it SIGKILLs a worker three
times and restarts Redis once. It then checks, from the API and from the database:

* lost: a job that never reached a terminal state within the bound;
* duplicated steps: a step number written twice or out of order, a canvas position committed twice
  in one attempt's history, or more than one draft for one job;
* 5xx: any 5xx answer any client saw (429s are honoured — the client waits ``Retry-After`` — and counted);
* time to terminal: per job, from its 202 to the first poll that saw it terminal.

    python benchmarks/reliability_load.py                        # 200 jobs, 4 clients, 3 kills, 1 restart
    python benchmarks/reliability_load.py --jobs 40 --kills 1    # a quick look

Exits 1 if any job is lost, any step duplicated or any 5xx seen, so it can gate a release.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from redraft.embedded import RedisServer, free_port  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
TERMINAL = {"succeeded", "failed", "cancelled"}
INFILL = ["The weather today is [[gap:6]], so we will [[gap:6]].", "Dear [[gap:4]], thank you for the [[gap:8]].",
          "[[gap:10]] and then [[gap:10]] before the end."]


def job_body(rng: random.Random, drafts: list[str]) -> dict:
    kind = rng.choice(["infill", "infill", "generate", "generate", "revise"])
    if kind == "revise" and drafts:
        return {"kind": "revise", "draft_id": rng.choice(drafts), "auto": {"least_confident": 3}, "steps": 6,
                "seed": rng.randrange(2**31)}
    if kind == "generate":
        target = rng.choice([{"regex": r"[0-9]{3}-[0-9]{4}"}, {"choices": ["yes", "no", "maybe"]}])
        return {"kind": "generate", "prompt": "Answer: ", "target": target, "max_tokens": 10, "steps": 8,
                "seed": rng.randrange(2**31)}
    return {"kind": "infill", "text": rng.choice(INFILL), "steps": 12, "seed": rng.randrange(2**31)}


@dataclass
class Record:
    job_id: str
    kind: str
    submitted: float
    terminal_at: float | None = None
    status: str = "queued"


@dataclass
class Client:
    name: str
    key: str
    records: list[Record] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)  # every HTTP status this client saw
    transport_errors: int = 0
    drafts: list[str] = field(default_factory=list)

    def request(self, http: httpx.Client, method: str, path: str, **kw) -> httpx.Response | None:
        """One call, retried on 429 (after Retry-After), 503 (the service says: retry) and transport errors."""
        for _ in range(60):
            try:
                r = http.request(method, path, **kw)
            except httpx.TransportError:
                self.transport_errors += 1
                time.sleep(1)
                continue
            self.statuses[r.status_code] += 1
            if r.status_code == 429 or r.status_code == 503:
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            return r
        return None


def run_client(client: Client, url: str, n_jobs: int, in_flight: int, seed: int, progress: Counter,
               bound_s: float) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {client.key}"}, timeout=30) as http:
        pending: list[Record] = []
        submitted = 0
        while submitted < n_jobs or pending:
            while submitted < n_jobs and len(pending) < in_flight:
                body = job_body(rng, client.drafts)
                r = client.request(http, "POST", "/v1/jobs", json=body)
                submitted += 1
                progress["submitted"] += 1
                if r is None or r.status_code != 202:
                    progress["refused"] += 1
                    continue
                rec = Record(r.json()["id"], body["kind"], time.monotonic())
                client.records.append(rec)
                pending.append(rec)
            time.sleep(0.3)
            for rec in list(pending):
                r = client.request(http, "GET", f"/v1/jobs/{rec.job_id}")
                if r is None or r.status_code != 200:
                    continue
                job = r.json()
                rec.status = job["status"]
                if rec.status in TERMINAL:
                    rec.terminal_at = time.monotonic()
                    pending.remove(rec)
                    progress["terminal"] += 1
                    if rec.status == "succeeded" and len(client.drafts) < 20:
                        d = client.request(http, "GET", f"/v1/jobs/{rec.job_id}/drafts")
                        if d is not None and d.status_code == 200 and d.json()["data"]:
                            client.drafts.append(d.json()["data"][-1]["id"])
                elif time.monotonic() - rec.submitted > bound_s:
                    pending.remove(rec)  # lost: counted below


def workers_of(serve: subprocess.Popen) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(serve.pid), "-f", "celery"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=200, help="jobs in all, split over the clients")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--in-flight", type=int, default=4, help="jobs each client keeps outstanding")
    ap.add_argument("--kills", type=int, default=3, help="worker SIGKILLs, spread over the run")
    ap.add_argument("--redis-restarts", type=int, default=1)
    ap.add_argument("--bound", type=float, default=300.0, help="seconds a job may take to become terminal")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--appendonly", action=argparse.BooleanOptionalAction, default=True,
                    help="run Redis with appendonly (as docker-compose.yml does); --no-appendonly loses the queue")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="redraft-load-"))
    db_name = f"redraft_load_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db_name}"')
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
    # appendonly, as the compose Redis runs: a restart keeps the queue (without it the reaper re-sends what was lost)
    redis = RedisServer(work / "redis", appendonly=args.appendonly).start()
    redis_url = redis.url
    api_port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "REDRAFT_VAR_DIR": str(work),
           "REDRAFT_WORKER_BATCH_SIZE": "4", "REDRAFT_HEARTBEAT_TIMEOUT_S": "10", "REDRAFT_REAPER_INTERVAL_S": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    redraft = [sys.executable, "-m", "redraft.cli"]
    serve = subprocess.Popen([*redraft, "serve", "--workers", "2", "--port", str(api_port)], env=env, cwd=REPO,
                             stdout=(work / "serve.log").open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{api_port}"
    events: list[str] = []
    t0 = time.monotonic()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit(f"the service did not become ready; see {work / 'serve.log'}")
            time.sleep(0.5)
        clients = []
        for i in range(args.clients):
            key = subprocess.run([*redraft, "keys", "create", "--tenant", f"load-{i}"], env=env, cwd=REPO,
                                 capture_output=True, text=True, check=True).stdout.strip()
            clients.append(Client(f"load-{i}", key))
        progress: Counter = Counter()
        per = [args.jobs // args.clients + (i < args.jobs % args.clients) for i in range(args.clients)]
        threads = [threading.Thread(target=run_client, args=(c, url, n, args.in_flight, args.seed + i, progress,
                                                             args.bound))
                   for i, (c, n) in enumerate(zip(clients, per))]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        # Faults at fixed fractions of the jobs finished, so they spread over the run and land while jobs are in flight.
        faults = [(k / (args.kills + 1), "kill") for k in range(1, args.kills + 1)]
        # Restarts halfway between kills (or at their own fractions), so each fault's recovery is seen on its own.
        faults += [((k + 1) / (args.redis_restarts + 1) + 0.5 / (args.kills + 1), "redis")
                   for k in range(args.redis_restarts)]
        rng = random.Random(args.seed)
        for frac, what in sorted(faults):
            while progress["terminal"] < frac * args.jobs and any(t.is_alive() for t in threads):
                time.sleep(0.2)
            at = time.monotonic() - t0
            if what == "kill":
                pids = workers_of(serve)
                if pids:
                    pid = rng.choice(pids)
                    os.kill(pid, signal.SIGKILL)
                    events.append(f"{at:6.1f} s  SIGKILL worker pid {pid} ({len(pids)} alive)")
                else:
                    events.append(f"{at:6.1f} s  no worker alive to kill")
            else:
                redis.restart(down_s=2.0)
                events.append(f"{at:6.1f} s  Redis stopped (SIGTERM) for 2 s and restarted on the same port")
            print(events[-1], flush=True)
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
        redis.stop()

    # ---- the checks, from the database (the source of truth) and what the clients saw
    records = [r for c in clients for r in c.records]
    statuses = sum((c.statuses for c in clients), Counter())
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{db_name}") as conn:
        rows = conn.execute("SELECT id, status, steps_run, attempts FROM jobs").fetchall()
        steps = conn.execute("SELECT job_id, step, committed, remasked FROM steps ORDER BY job_id, step").fetchall()
        drafts = conn.execute("SELECT job_id, count(*) FROM drafts GROUP BY job_id").fetchall()
    jobs = {r[0]: r for r in rows}
    lost = [r.job_id for r in records if r.terminal_at is None or jobs[r.job_id][1] not in TERMINAL]
    by_job: dict[str, list[tuple[int, list, list]]] = {}
    for job_id, step, committed, remasked in steps:
        by_job.setdefault(job_id, []).append((step, committed, remasked or []))
    dup_steps = []
    for job_id, seq in by_job.items():
        # Step numbers 0, 1, 2, ... once each, and no position committed again unless remasked in between.
        decided: set[int] = set()
        ok = [s for s, _, _ in seq] == list(range(len(seq)))
        for _, committed, remasked in seq:
            decided -= {p for p, *_ in remasked}
            for p, *_ in committed:
                ok &= p not in decided
                decided.add(p)
        if not ok:
            dup_steps.append(job_id)
    dup_drafts = [job_id for job_id, n in drafts if n > 1]  # every job here writes exactly one draft
    five_xx = sum(n for s, n in statuses.items() if s >= 500)
    times = sorted(r.terminal_at - r.submitted for r in records if r.terminal_at is not None)
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "command": "python " + " ".join(sys.argv),
        "jobs_submitted": len(records), "refused_submissions": progress["refused"],
        "by_status": dict(Counter(jobs[r.job_id][1] for r in records)),
        "attempts>1": sum(1 for r in records if jobs[r.job_id][3] > 1),
        "lost": len(lost), "duplicated_steps": len(dup_steps), "duplicated_drafts": len(dup_drafts),
        "http_5xx": five_xx, "http_429": statuses.get(429, 0), "http_503_retried": statuses.get(503, 0),
        "transport_errors_retried": sum(c.transport_errors for c in clients),
        "time_to_terminal_s": {"p50": times[len(times) // 2] if times else None,
                               "p95": times[int(len(times) * 0.95)] if times else None,
                               "max": times[-1] if times else None},
        "bound_s": args.bound, "elapsed_s": round(elapsed, 1), "faults": events,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    return 1 if lost or dup_steps or dup_drafts or five_xx else 0


if __name__ == "__main__":
    sys.exit(main())
