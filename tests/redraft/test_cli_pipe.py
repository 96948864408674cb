"""`redraft --json jobs | head` (issue 15): a reader that closes the pipe early ends the command quietly, exit 1
and no traceback (the Python docs' recipe for a broken pipe), as a real process against the running API."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from redraft.settings import REPO_ROOT
from tests.utils.service import running_service


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    """The API alone: listing jobs needs no worker, so the jobs stay queued."""
    with running_service("sqlite", tiny_model_dir, tmp_path_factory.mktemp("pipe"), workers=0) as svc:
        yield svc


@pytest.fixture(scope="module")
def env(service, key):
    with service.client(key) as client:
        for _ in range(3):
            assert client.post("/v1/jobs", json={"kind": "infill", "text": "A [[gap:4]] b."}).status_code == 202
    return {**os.environ, "REDRAFT_URL": service.url, "REDRAFT_API_KEY": key}


def test_a_reader_that_is_gone_before_the_first_write_gives_no_traceback(env):
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE, as after `head` has exited
    try:
        out = subprocess.run([sys.executable, "-m", "redraft.cli", "--json", "jobs"], stdout=write,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    finally:
        os.close(write)
    assert (out.returncode, out.stderr) == (1, "")


def test_piped_into_head(env):
    out = subprocess.run(f"{sys.executable} -m redraft.cli --json jobs | head -n 2; exit ${{PIPESTATUS[0]}}",
                         shell=True, executable="/bin/bash", capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                         timeout=60)
    assert out.stdout.splitlines() == ["{", '  "data": ['] and "Traceback" not in out.stderr, out.stderr
    assert out.returncode in (0, 1)  # 1 when head left before the whole list was written
