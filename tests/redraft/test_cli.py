"""The client subcommands of ``redraft`` run as real processes against the running service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from redraft.api.schemas import JobPublic
from redraft.embedded import free_port
from redraft.settings import REPO_ROOT

TEXT = "Dear team, the [[gap:4]] is ready. Please [[gap]] by Friday."
FILLED = re.compile(r"Dear team, the .* is ready\. Please .* by Friday\.", re.S)


@pytest.fixture(scope="module")
def redraft(service, key):
    """Run ``redraft ARGS`` in a fresh process; $REDRAFT_URL / $REDRAFT_API_KEY point at the service
    unless ``env`` overrides them (None removes one)."""

    def run(*args: str, env: dict[str, str | None] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        full = {**os.environ, "REDRAFT_URL": service.url, "REDRAFT_API_KEY": key, "OMP_NUM_THREADS": "1"}
        for name, value in (env or {}).items():
            if value is None:
                full.pop(name, None)
            else:
                full[name] = value
        return subprocess.run([sys.executable, "-m", "redraft.cli", *args], capture_output=True, text=True,
                              env=full, cwd=REPO_ROOT, timeout=timeout)

    return run


def test_infill_prints_the_text_and_json(redraft):
    out = redraft("infill", TEXT, "--steps", "8", "--seed", "3")
    assert out.returncode == 0, out.stderr
    assert FILLED.fullmatch(out.stdout.removesuffix("\n"))
    js = redraft("infill", TEXT, "--steps", "8", "--seed", "3", "--json")
    job = JobPublic.model_validate_json(js.stdout)
    assert job.status == "succeeded" and job.params["steps"] == 8 and job.params["seed"] == 3
    assert job.result.text + "\n" == out.stdout  # same seed, same text


def test_global_options_before_the_subcommand(service, key, redraft):
    out = redraft("--url", service.url, "--key", key, "--json", "infill", "A [[gap:2]] B", "--steps", "2",
                  env={"REDRAFT_URL": None, "REDRAFT_API_KEY": None})
    assert out.returncode == 0, out.stderr
    assert JobPublic.model_validate_json(out.stdout).result.text.startswith("A ")


def test_no_wait_then_watch_prints_the_final_text(rd, redraft):
    out = redraft("infill", TEXT, "--steps", "12", "--no-wait")
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    watched = redraft("watch", job_id)
    assert watched.returncode == 0, watched.stderr
    done = rd.wait(job_id)
    assert watched.stdout == done.result.text + "\n"
    frames = watched.stderr.split("--- ")
    assert frames[1].startswith("start, ") and "_" in frames[1] and "Dear team, the" in frames[1]
    assert f"step {done.timings.steps_run - 1}, 0 masks left" in watched.stderr


def test_watch_replays_a_finished_job(rd, redraft):
    done = rd.infill("Roses are [[gap:3]], violets [[gap:3]].", steps=6, seed=4, wait=True)
    watched = redraft("watch", done.id)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout == done.result.text + "\n"
    headers = re.findall(r"^--- (.*) ---$", watched.stderr, re.M)
    assert headers[0].startswith("start, ") and len(headers) == done.timings.steps_run + 1
    assert headers[-1] == f"step {done.timings.steps_run - 1}, 0 masks left"
    assert "[EMPTY]" not in watched.stderr and "[BOS]" not in watched.stderr
    as_json = redraft("watch", done.id, "--json")
    assert JobPublic.model_validate_json(as_json.stdout).id == done.id


def test_generate_forms(rd, redraft):
    out = redraft("generate", "--prompt", "Ship on ", "--choices", "Monday,Friday", "--max-tokens", "3",
                  "--steps", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout in ("Ship on Monday\n", "Ship on Friday\n")
    template = 'Hi {{ who }}, you owe {{ n }} books: {{ slot("a", max_tokens=2, choices=["yes", "no"]) }}.'
    out = redraft("generate", "--template", template, "--var", "who=Ann", "--var-json", "n=3", "--steps", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout in ("Hi Ann, you owe 3 books: yes.\n", "Hi Ann, you owe 3 books: no.\n")
    rd.save_template("code", 'Code: {{ slot("c", max_tokens=6, regex="[A-Z]{2}[0-9]{2}") }}')
    out = redraft("generate", "--template-name", "code", "--steps", "6", "--json")
    job = JobPublic.model_validate_json(out.stdout)
    assert re.fullmatch("[A-Z]{2}[0-9]{2}", job.result.slots["c"])


def test_generate_json_schema_file(redraft, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}))
    out = redraft("generate", "--prompt", "Record: ", "--json-schema", str(schema), "--max-tokens", "12",
                  "--steps", "6", "--json")
    assert out.returncode == 0, out.stderr
    job = JobPublic.model_validate_json(out.stdout)
    assert isinstance(json.loads(job.result.slots["answer"])["n"], int)


def test_revise_a_draft_and_a_text(rd, redraft):
    first = rd.infill(TEXT, steps=8, seed=2, wait=True)
    start = first.result.text.index(" is ready")
    out = redraft("revise", "--draft", first.result.draft_id, "--span", f"{start}:{start + 9}:4", "--steps", "4",
                  "--json")
    assert out.returncode == 0, out.stderr
    job = JobPublic.model_validate_json(out.stdout)
    assert job.result.parent_draft_id == first.result.draft_id
    (edit,) = job.result.edits
    assert (edit["start"], edit["end"]) == (start, start + 9)
    out = redraft("revise", "--draft", first.result.draft_id, "--least-confident", "1", "--steps", "2")
    assert out.returncode == 0, out.stderr
    out = redraft("revise", "--text", "Is it ready? No, it is not.", "--span", "13:15", "--steps", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Is it ready? ") and out.stdout.endswith(", it is not.\n")


def test_jobs_lists_newest_first(rd, redraft):
    done = rd.infill("Last [[gap:2]] job.", steps=2, wait=True)
    out = redraft("jobs", "--limit", "3")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{done.id}  infill    succeeded")
    assert re.search(r"1-3 of \d+ job\(s\)", out.stderr)
    js = json.loads(redraft("jobs", "--limit", "1", "--json").stdout)
    assert js["data"][0]["id"] == done.id and js["count"] >= 3


@pytest.mark.parametrize("args,message", [
    (["infill", "no gaps here"], "no gap"),
    (["infill", "x [[gap]]", "--steps", "0"], "steps must be between"),
    (["infill", "x [[gap]]", "--model", "gpt-9"], "unknown model"),
    (["generate", "--template", "{% if %}"], "syntax error"),
    (["generate", "--template", "{{ slot('a') }}", "--regex", "[0-9]"], "belong to the prompt form"),
    (["revise", "--text", "Some text.", "--auto-below", "0.5"], "auto"),
    (["watch", "no-such-job"], "not found"),
])
def test_bad_input_exits_2_with_the_apis_message(redraft, args, message):
    out = redraft(*args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert message in out.stderr and out.stdout == ""


def test_usage_errors_exit_2(redraft):
    for args in (["revise", "--text", "x", "--span", "3-5"], ["generate", "--prompt", "x", "--var", "novalue"],
                 ["infill"], ["revise", "--span", "1:2"]):
        out = redraft(*args)
        assert out.returncode == 2 and "usage:" in out.stderr, args


def test_bad_key_exits_2_and_failures_exit_1(redraft):
    out = redraft("jobs", env={"REDRAFT_API_KEY": "wrong"})
    assert out.returncode == 2 and "unknown or revoked API key" in out.stderr
    out = redraft("infill", "About [[gap:3]].", "--steps", "2", "--param", 'safety={"avoid": ["weapons"]}')
    assert out.returncode == 1 and "failed" in out.stderr and "model_error" in out.stderr and out.stdout == ""
    url = f"http://127.0.0.1:{free_port()}"
    out = redraft("jobs", "--url", url)
    assert out.returncode == 1 and f"cannot reach Redraft at {url}" in out.stderr
