"""Multiprocess metrics files (redraft/metrics.py): where each process writes, which stale files a starting process
removes, and that metrics never stop a process. What GET /metrics adds up from them (a real API and worker) is in
tests/api/test_metrics.py.

Importing the module switches prometheus-client to files for the whole process, so the import-time behaviour is
checked in fresh interpreters, each with an environment of its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from redraft.metrics import _HOST, _alive, _identity, _remove_stale_files, metrics_dir
from redraft.settings import REPO_ROOT, Settings

# Imports the module as a worker or the API does, observes one step, says what it did.
CHILD = """
import json, os
from redraft import metrics
metrics.STEP_SECONDS.labels("tiny").observe(0.01)
metrics.REJECTIONS.labels("not_found", "404").inc()
print(json.dumps({"multiprocess": metrics.MULTIPROCESS, "dir": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
                  "identity": metrics._identity(), "pid": os.getpid()}))
"""


def run_child(**env: str) -> tuple[dict, str]:
    """(what the child printed, its stderr): a fresh interpreter with no REDRAFT_* settings but ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("REDRAFT_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        check=False,
        env={**base, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_directory_is_the_settings_or_var_dirs_metrics(tmp_path):
    assert metrics_dir(Settings(var_dir=tmp_path)) == tmp_path / "metrics"
    assert metrics_dir(Settings(var_dir=tmp_path, metrics_dir=tmp_path / "shared")) == tmp_path / "shared"


def test_a_process_writes_its_own_files_and_removes_the_dead_ones_of_its_host(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    gone, alive = dead_pid(), os.getpid()
    stale = directory / f"histogram_{_HOST}-{gone}.db"  # a worker of this host that has exited
    kept = [
        directory / f"histogram_{_HOST}-{alive}.db",  # a live process of this host (this test)
        directory / f"counter_other-host-{gone}.db",  # another container's: its pids are not ours to check
        directory / "histogram_notapid.db",
        directory / "README.txt",
    ]
    for path in [stale, *kept]:
        path.write_bytes(b"")
    got, _ = run_child(REDRAFT_METRICS_DIR=str(directory))
    assert got["multiprocess"] and got["dir"] == str(directory)
    assert got["identity"] == f"{_HOST}-{got['pid']}"
    assert not stale.exists() and all(path.exists() for path in kept)
    written = {p.name for p in directory.glob(f"*_{got['identity']}.db")}
    assert {f"histogram_{got['identity']}.db", f"counter_{got['identity']}.db"} <= written


def test_the_default_directory_is_under_var_dir(tmp_path):
    got, _ = run_child(REDRAFT_VAR_DIR=str(tmp_path))
    assert got["multiprocess"] and got["dir"] == str(tmp_path / "metrics")
    assert (tmp_path / "metrics" / f"histogram_{got['identity']}.db").exists()


def test_metrics_turned_off_write_no_files(tmp_path):
    got, _ = run_child(REDRAFT_METRICS_ENABLED="false", REDRAFT_METRICS_DIR=str(tmp_path / "metrics"))
    assert not got["multiprocess"] and got["dir"] is None
    assert not (tmp_path / "metrics").exists()


def test_a_directory_that_cannot_be_used_turns_metrics_off_without_stopping_the_process(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    got, stderr = run_child(REDRAFT_METRICS_DIR=str(blocker / "metrics"))
    assert not got["multiprocess"] and got["dir"] is None
    assert f"metrics are off in this process: cannot use {blocker / 'metrics'}" in stderr


def test_stale_files_are_those_of_this_host_whose_process_is_gone_or_is_this_one(tmp_path):
    me, gone = _identity(), dead_pid()
    mine = tmp_path / f"gauge_livesum_{me}.db"  # left under this process's own name: its values start again
    dead = tmp_path / f"counter_{_HOST}-{gone}.db"
    alive = tmp_path / f"counter_{_HOST}-{os.getppid()}.db"
    other = tmp_path / f"counter_elsewhere-{gone}.db"
    for path in (mine, dead, alive, other):
        path.write_bytes(b"")
    _remove_stale_files(tmp_path, me)
    assert (mine.exists(), dead.exists(), alive.exists(), other.exists()) == (False, False, True, True)


def test_a_process_is_alive_until_it_has_exited():
    assert _alive(os.getpid()) and not _alive(dead_pid())
    sleeper = subprocess.Popen([sys.executable, "-I", "-S", "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not _alive(sleeper.pid)


def test_the_host_part_of_a_file_name_has_no_separator():
    """File names split at the last '_' and the last '-': the host part holds neither '_' nor anything odd."""
    assert re.fullmatch(r"[A-Za-z0-9.-]+", _HOST)
    owner = Path(f"histogram_{_identity()}.db").stem.rsplit("_", 1)[-1]
    assert owner.rpartition("-")[0] == _HOST and owner.rpartition("-")[2] == str(os.getpid())
