"""Per-tenant quotas (issue 12): concurrent jobs, jobs per minute and compile time per minute, each a 429 with
Retry-After, through the real API with real Redis and a real database. Every test uses tenants of its own (the
quota keys are per tenant id, a fresh uuid), so tests never share a counter; the Redis-down test stops a
redis-server of its own, never the shared one."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redraft.api.quotas import Quotas
from redraft.embedded import free_port, start_redis
from redraft.errors import RateLimited
from redraft.settings import Settings
from tests.utils.service import REDIS_URL, running_service, wait_for

LONG = {"kind": "infill", "text": "[[gap:120]] and [[gap:120]]", "steps": 240}  # runs until cancelled, here
SHORT = {"kind": "infill", "text": "One [[gap:3]] two.", "steps": 3}
CONCURRENT = ("too_many_concurrent_jobs", "REDRAFT_TENANT_MAX_CONCURRENT_JOBS")  # the 429's code and setting


def assert_429(r, code: str, setting: str) -> int:
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["code"] == code and setting in body["detail"], body
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def cancel(client, *jobs) -> None:
    for job in jobs:
        r = client.post(f"/v1/jobs/{job['id']}/cancel")
        assert r.status_code in (202, 409), r.text


@pytest.fixture(scope="module")
def limited(tiny_model_dir, tmp_path_factory):
    """A service on PostgreSQL (where the concurrent check takes a row lock) with one worker and low limits."""
    with running_service("postgresql", tiny_model_dir, tmp_path_factory.mktemp("quotas"),
                         REDRAFT_TENANT_MAX_CONCURRENT_JOBS="2", REDRAFT_TENANT_JOBS_PER_MINUTE="6") as svc:
        yield svc


def test_concurrent_jobs_are_limited_and_a_finished_or_cancelled_job_frees_its_slot(limited):
    with limited.client(limited.new_key("busy")) as client, limited.client(limited.new_key("calm")) as other:
        long = client.post("/v1/jobs", json=LONG).json()
        short = client.post("/v1/jobs", json=SHORT).json()
        assert_429(client.post("/v1/jobs", json=SHORT), *CONCURRENT)
        neighbour = other.post("/v1/jobs", json=SHORT)  # another tenant is not affected
        assert neighbour.status_code == 202, neighbour.text
        assert wait_for(client, short["id"])["status"] == "succeeded"
        after_finish = client.post("/v1/jobs", json=SHORT)  # the finished job freed its slot
        assert after_finish.status_code == 202, after_finish.text
        assert_429(client.post("/v1/jobs", json=SHORT), *CONCURRENT)
        cancel(client, long)  # running: asked to stop, and its slot is free at once
        after_cancel = client.post("/v1/jobs", json=SHORT)
        assert after_cancel.status_code == 202, after_cancel.text
        for job in (long, after_finish.json(), after_cancel.json()):
            wait_for(client, job["id"])
        wait_for(other, neighbour.json()["id"])


def test_simultaneous_submissions_never_overshoot_the_concurrent_limit(limited):
    key = limited.new_key("burst")

    def post(_):
        with limited.client(key) as c:
            return c.post("/v1/jobs", json=LONG)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(6)))
    accepted = [r.json() for r in answers if r.status_code == 202]
    refused = [r for r in answers if r.status_code != 202]
    with limited.client(key) as client:
        cancel(client, *accepted)
        assert len(accepted) == 2 and len(refused) == 4, [r.text for r in refused]
        for r in refused:
            assert_429(r, *CONCURRENT)
        for job in accepted:
            wait_for(client, job["id"])


def test_jobs_per_minute_are_limited_per_tenant(limited):
    with limited.client(limited.new_key("chatty")) as client, limited.client(limited.new_key("quiet")) as other:
        for _ in range(6):  # each cancelled at once, so the concurrent limit never bites
            r = client.post("/v1/jobs", json=SHORT)
            assert r.status_code == 202, r.text
            cancel(client, r.json())
        assert_429(client.post("/v1/jobs", json=SHORT), "jobs_per_minute_exceeded", "REDRAFT_TENANT_JOBS_PER_MINUTE")
        assert client.get("/v1/jobs").status_code == 200  # reads are never rate-limited
        r = other.post("/v1/jobs", json=SHORT)
        assert r.status_code == 202, r.text
        cancel(other, r.json())


def test_compile_time_per_minute_counts_refused_submissions_too(tiny_model_dir, tmp_path):
    # A budget of 1 ms: the first submission is let in (the window is not yet spent) and spends it.
    with (running_service("sqlite", tiny_model_dir, tmp_path, workers=0, REDRAFT_TENANT_COMPILE_S_PER_MINUTE="0.001")
          as svc, svc.client(svc.new_key("heavy")) as client, svc.client(svc.new_key("light")) as other):
        bad = client.post("/v1/jobs", json={"kind": "generate", "template": "{{ who }} {{ slot('a') }}"})
        assert bad.status_code == 422 and "undefined" in bad.json()["detail"]
        assert_429(client.post("/v1/jobs", json=SHORT), "compile_time_exceeded",
                   "REDRAFT_TENANT_COMPILE_S_PER_MINUTE")
        assert other.post("/v1/jobs", json=SHORT).status_code == 202
        assert_429(other.post("/v1/jobs", json=SHORT), "compile_time_exceeded",
                   "REDRAFT_TENANT_COMPILE_S_PER_MINUTE")
        assert client.get("/v1/jobs").json()["count"] == 0  # nothing written for the refused ones


def test_redis_down_lets_submissions_through_instead_of_a_500(tiny_model_dir, tmp_path):
    proc, url = start_redis(tmp_path / "redis")
    try:
        with (running_service("sqlite", tiny_model_dir, tmp_path, workers=0, REDIS_URL=url,
                              REDRAFT_TENANT_COMPILE_S_PER_MINUTE="0.001", REDRAFT_TENANT_JOBS_PER_MINUTE="1",
                              REDRAFT_TENANT_MAX_CONCURRENT_JOBS="3") as svc, svc.client(svc.new_key("acme")) as client):
            assert client.post("/v1/jobs", json=SHORT).status_code == 202
            assert client.post("/v1/jobs", json=SHORT).status_code == 429  # Redis up: the limits hold
            proc.terminate()
            proc.wait(timeout=10)
            # Redis down: the per-minute limits fail open (the jobs stay queued for the reaper) ...
            for _ in range(2):
                r = client.post("/v1/jobs", json=SHORT)
                assert r.status_code == 202 and r.json()["status"] == "queued", r.text
            # ... and the concurrent limit, kept in the database, still holds.
            assert_429(client.post("/v1/jobs", json=SHORT), *CONCURRENT)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def quotas(redis_url: str = REDIS_URL, **limits) -> Quotas:
    return Quotas(Settings(redis_url=redis_url, **{"tenant_max_concurrent_jobs": 0, **limits}))


@settings(max_examples=30, deadline=None)
@given(budget_ms=st.integers(1, 40), charges=st.lists(st.integers(0, 25), max_size=6))
def test_the_compile_window_refuses_exactly_once_its_budget_is_spent(budget_ms, charges):
    q, tenant, spent = quotas(tenant_compile_s_per_minute=budget_ms / 1000), uuid.uuid4().hex, 0
    for ms in [None, *charges]:
        if ms is not None:
            q.charge_compile_time(tenant, ms / 1000)
            spent += max(1, ms)  # every submission costs at least 1 ms, and is charged in full past the budget
        if spent >= budget_ms:
            with pytest.raises(RateLimited) as refused:
                q.check_compile_time(tenant)
            assert refused.value.code == "compile_time_exceeded" and 1 <= refused.value.retry_after <= 60
        else:
            q.check_compile_time(tenant)


@settings(max_examples=10, deadline=None)
@given(limit=st.integers(1, 8), tries=st.integers(0, 12))
def test_jobs_per_minute_admit_exactly_the_limit(limit, tries):
    q, tenant = quotas(tenant_jobs_per_minute=limit), uuid.uuid4().hex
    admitted = 0
    for _ in range(tries):
        try:
            q.hit_jobs_per_minute(tenant)
            admitted += 1
        except RateLimited as exc:
            assert exc.headers == {"Retry-After": str(exc.retry_after)} and 1 <= exc.retry_after <= 60
    assert admitted == min(limit, tries)


def test_every_limit_off_and_redis_unreachable_never_raise():
    off = quotas(tenant_jobs_per_minute=0, tenant_compile_s_per_minute=0)
    down = quotas(f"redis://127.0.0.1:{free_port()}/0", tenant_jobs_per_minute=1, tenant_compile_s_per_minute=0.001)
    for q in (off, down):
        for _ in range(3):
            q.check_compile_time("t")
            q.hit_jobs_per_minute("t")
            q.charge_compile_time("t", 1.0)
