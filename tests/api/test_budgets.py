"""Budgets through the running API (issue 12): every hostile input of the issue is a 422 that names its limit,
nothing is written for it, /healthz and other requests answer while a hostile compile runs, and a worker whose
compile budget a target passes fails that job with the reason and goes on serving."""

from __future__ import annotations

import threading
import time

import pytest

from redraft.embedded import start_worker
from tests.utils.service import running_service, wait_for


@pytest.fixture(scope="module")
def svc(tiny_model_dir, tmp_path_factory):
    """The API (no worker until a test starts one) with a short render deadline, quotas off. (The compile deadline
    is killed at in tests/constraints/test_budget.py; here it stays long, so a loaded CI machine passes too.)"""
    with running_service("sqlite", tiny_model_dir, tmp_path_factory.mktemp("budgets"), workers=0,
                         REDRAFT_COMPILE_TIMEOUT_S="60", REDRAFT_TEMPLATE_TIMEOUT_S="0.5",
                         REDRAFT_TENANT_COMPILE_S_PER_MINUTE="0", REDRAFT_TENANT_JOBS_PER_MINUTE="0",
                         REDRAFT_TENANT_MAX_CONCURRENT_JOBS="0") as service:
        yield service


@pytest.fixture(scope="module")
def client(svc):
    with svc.client(svc.new_key("budgets")) as c:
        yield c


def nested_arrays(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


def prompt(target: dict, max_tokens: int = 16) -> dict:
    return {"kind": "generate", "prompt": "Answer: ", "target": target, "max_tokens": max_tokens}


def template(source: str) -> dict:
    return {"kind": "generate", "template": source + '{{ slot("a", max_tokens=4) }}'}


# jsonschemabench Github_easy/o28210's shape: an object of several strings with maxLength 45 (ran > 300 s).
MAXLENGTH_45 = {"type": "object", "properties": {f"field{i}": {"type": "string", "maxLength": 45} for i in range(4)},
                "required": [f"field{i}" for i in range(4)]}

HOSTILE = {
    "schema-arrays-50-deep": (prompt({"json_schema": nested_arrays(50)}), "REDRAFT_MAX_SCHEMA_DEPTH"),
    "nested-bounded-repeats": (prompt({"regex": "((a{0,50}){0,50}){0,50}"}), "REDRAFT_MAX_REGEX_STATES"),
    "unicode-w-200": (prompt({"regex": r"\w{200}"}), "REDRAFT_MAX_REGEX_STATES"),
    "dfa-blowup": (prompt({"regex": "[ab]*a[ab]{14}"}), "exceeds the cap"),
    "10k-choices": (prompt({"choices": [f"w{i}" for i in range(10_000)]}), "REDRAFT_MAX_ALTERNATIVES"),
    "5k-alternatives": (prompt({"regex": "|".join(f"w{i}" for i in range(5000))}), "REDRAFT_MAX_ALTERNATIVES"),
    "nested-loops": (template("{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"),
                     "REDRAFT_TEMPLATE_MAX_ITERATIONS"),
    "exponential-macro": (template("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
                                   "{{ f(40) }}"), "REDRAFT_TEMPLATE_TIMEOUT_S"),
    "endless-macro": (template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
                      "REDRAFT_TEMPLATE_MAX_CALL_DEPTH"),
    "string-repeat": (template("{{ 'a' * 10000000 }}"), "200,000-character budget"),
}


# Refused for the slot decoder's memory once (~4.7 GiB a step, and > 300 s a job): the decoder reads each token
# class once per position now (constraints.automaton.EdgeClasses), so they fit the budget and are accepted.
NO_LONGER_HOSTILE = {
    "1000-letters-in-240": prompt({"regex": "[a-z]{1000}"}, 240),  # (the test model's context is 256 tokens)
    "maxlength-45-strings": prompt({"json_schema": MAXLENGTH_45}, 240),
}


@pytest.mark.parametrize("name", list(NO_LONGER_HOSTILE))
def test_what_the_dp_budget_refused_before_fits_it_now(svc, name):
    with svc.client(svc.new_key(f"dp-{name}")) as c:
        r = c.post("/v1/jobs", json=NO_LONGER_HOSTILE[name])
        assert r.status_code == 202, r.text
        assert c.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code == 202  # no worker runs it here


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_hostile_input_is_a_422_naming_its_limit_and_nothing_is_written(client, name):
    body, names = HOSTILE[name]
    r = client.post("/v1/jobs", json=body)
    assert r.status_code == 422, r.text
    assert names in r.json()["detail"], r.json()
    assert client.get("/v1/jobs").json()["count"] == 0


# JSON schemas outlines-core would not hold as given (redraft/constraints/json_schema.py): a 422 at submission that
# names the keyword and where it is, never a job whose answer could break the schema.
UNENFORCEABLE = {
    "minimum-alone": ({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]},
                      "integer bounds at #/properties/age"),
    "unique-items": ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "`uniqueItems` at the"),
    "pattern-writing-a-quote": ({"type": "string", "pattern": "^[ -~]+$"}, "can write '\"'"),
    "length-beside-pattern": ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                              "a string length beside its `pattern`"),
}


@pytest.mark.parametrize("name", list(UNENFORCEABLE))
def test_a_schema_the_decoder_cannot_hold_is_a_422_saying_where_and_nothing_is_written(client, name):
    schema, says = UNENFORCEABLE[name]
    r = client.post("/v1/jobs", json=prompt({"json_schema": schema}, 32))
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unsupported_schema" and says in r.json()["detail"], r.json()
    assert client.get("/v1/jobs").json()["count"] == 0


def test_healthz_and_other_requests_answer_while_a_hostile_compile_runs(client):
    """`\\w{40}` passes the cheap checks and then takes outlines-core seconds (12,661 states): it runs in a child
    process, so the event loop and the thread pool go on; it ends a 422 (the table cap, or the deadline)."""
    result: dict = {}
    body = prompt({"regex": r"\w{40}"})
    hostile = threading.Thread(target=lambda: result.update(r=client.post("/v1/jobs", json=body)))
    hostile.start()
    answered_meanwhile, deadline = 0, time.monotonic() + 120
    while hostile.is_alive():
        assert time.monotonic() < deadline, "the hostile compile never ended"
        health, listing = client.get("/healthz"), client.get("/v1/jobs")
        if hostile.is_alive():  # both answered before the compile ended
            assert health.status_code == 200 and listing.status_code == 200
            answered_meanwhile += 1
    hostile.join(timeout=60)
    assert answered_meanwhile >= 1
    r = result["r"]
    assert r.status_code == 422 and r.json()["code"] in ("constraint_too_large", "compile_timeout"), r.text
    assert "exceeds the cap" in r.json()["detail"] or "REDRAFT_COMPILE_TIMEOUT_S" in r.json()["detail"]


def test_a_worker_whose_compile_budget_a_target_passes_fails_that_job_and_goes_on(svc, client):
    """The workers compile too (their own cache): with a 64 MiB compile budget, a target the API accepted (it has
    4 GiB) fails its job with the reason instead of stalling or killing the worker, and the next job succeeds."""
    env = {**svc.env, "REDRAFT_COMPILE_MEMORY_BYTES": str(64 * 2**20)}
    svc.workers.append(start_worker(env, svc.work_dir / "worker.log", svc.env["REDRAFT_QUEUE_NAME"]))
    r = client.post("/v1/jobs", json={**prompt({"regex": "[a-z]{1,600}"}, 4), "steps": 2})
    assert r.status_code == 202, r.text
    failed = wait_for(client, r.json()["id"], timeout=120)
    assert failed["status"] == "failed" and failed["error"]["code"] == "compile_memory", failed
    assert "REDRAFT_COMPILE_MEMORY_BYTES" in failed["error"]["message"]
    ok = client.post("/v1/jobs", json={"kind": "infill", "text": "Hello [[gap:2]].", "steps": 2})
    assert wait_for(client, ok.json()["id"], timeout=120)["status"] == "succeeded"
