"""What Redraft measures, with prometheus-client, in every process (the API and each worker).

Workers are separate processes, so the metrics use prometheus-client's multiprocess mode: each process writes its
values to small memory-mapped files under ``settings.metrics_dir`` (default ``var/metrics``), and the API's
``GET /metrics`` (``api/metrics.py``) adds up every process's files at scrape time, with the gauges it reads from
the database and Redis then. API and workers must therefore share that directory: ``redraft serve`` and the tests
do (one machine), docker-compose.yml mounts one volume in both.

Files are named by host and pid (``histogram_<host>-<pid>.db``), so processes of different containers sharing the
volume never write to the same file. When a process starts, it removes the files of processes of its own host
that are gone: a restarted worker's counts start again from zero, which Prometheus reads as a counter reset.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

from prometheus_client import Counter, Histogram, values

from redraft.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Seconds: a tiny model steps in milliseconds on a CPU, a 26B one in a second or more.
_STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_COMPILE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def metrics_dir(settings: Settings) -> Path:
    """Where this deployment's processes keep their metrics files."""
    return settings.metrics_dir or settings.var_dir / "metrics"


_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"


def _identity() -> str:
    """This process, distinct from every other process sharing the directory (from any container); computed
    afresh on each call, so a forked child gets its own files."""
    return f"{_HOST}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _remove_stale_files(directory: Path, me: str) -> None:
    """Remove this host's files whose process is gone, and any left under this process's own name."""
    for path in directory.glob("*.db"):
        owner = path.stem.rsplit("_", 1)[-1]
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != _HOST or not pid.isdigit():
            continue
        if owner == me or not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _use_multiprocess_files(settings: Settings) -> bool:
    """Back every metric created from now on in this process by files under ``metrics_dir``."""
    if not settings.metrics_enabled:
        return False
    directory = metrics_dir(settings)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(f"{directory} is not writable by this process")
        _remove_stale_files(directory, _identity())
    except OSError as exc:  # metrics must never stop the service
        log.warning("metrics are off in this process: cannot use %s (%s)", directory, exc)
        return False
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # read by prometheus-client when it opens its files
    values.ValueClass = values.MultiProcessValue(process_identifier=_identity)
    return True


MULTIPROCESS = _use_multiprocess_files(get_settings())

# ---------------------------------------------------------------------------------------- observed in workers
STEP_SECONDS = Histogram("redraft_step_seconds", "One batched denoising step in a worker (forward pass, then "
                         "sampling, processors and commits for every row in it)", ["model"], buckets=_STEP_BUCKETS)
FORWARD_SECONDS = Histogram("redraft_forward_seconds", "The model's forward pass of one batched step",
                            ["model"], buckets=_STEP_BUCKETS)
# ---------------------------------------------------------------------------------------- observed in the API
COMPILE_SECONDS = Histogram("redraft_compile_seconds", "Compiling one submitted request into its canvas "
                            "(tokenising, templates, constraint automata)", buckets=_COMPILE_BUCKETS)
REJECTIONS = Counter("redraft_rejections_total", "Requests the API refused (4xx), by the error body's `code`",
                     ["code", "status"])
