"""Operator commands on SQLite and PostgreSQL: ``redraft keys revoke|list`` and ``redraft tenants delete``.

The commands run in this process (``redraft.cli.main``) against a real, migrated database; a revoked key is tried
against the real app (FastAPI's in-process transport, no server), and a tenant's deletion is checked table by
table, with another tenant's data left as it was.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from redraft.cli import main
from redraft.settings import get_settings
from redraft.storage import repo
from redraft.storage.db import get_sessionmaker
from redraft.storage.tables import ApiKey, Draft, Job, Step, Template, Tenant


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The CLI's database: ``database_url``, through the environment as an operator would give it."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()
    from redraft.storage.migrate import upgrade

    upgrade(database_url)
    yield database_url
    get_settings.cache_clear()


@pytest.fixture
def s(db: str) -> Iterator[Session]:
    with get_sessionmaker(db)() as session:
        yield session


def redraft(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str,
            stdin: str = "") -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``redraft ARGS`` with ``stdin`` as its input."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def populate(s: Session, tenant: str, jobs: int = 2, steps: int = 3, templates: int = 1) -> str:
    """A tenant with a key, finished jobs (steps, a draft each, every draft after the first revising the one
    before) and saved templates; returns its id."""
    _, key = repo.create_api_key(s, tenant)
    parent = None
    for _ in range(jobs):
        job = repo.create_job(s, tenant_id=key.tenant_id, kind="infill", model="m", request={"text": "x"},
                              params={}, canvas={"token_ids": [1]})
        if steps:
            repo.add_steps(s, job.id, 0, [([[0, 5, "a", 0.5]], [])] * steps)
        parent = repo.finish_job(s, job.id, text="a", token_ids=[5], result_extra={}, steps_run=steps,
                                 parent_id=parent.id if parent else None)
    for i in range(templates):
        repo.save_template(s, key.tenant_id, f"t{i}", "{{ slot('a') }}")
    s.commit()
    return key.tenant_id


def rows_of(s: Session, tenant_id: str) -> dict[str, int]:
    """Rows that belong to the tenant, table by table (steps through their jobs)."""
    s.expire_all()

    def count(stmt) -> int:
        return s.scalar(stmt) or 0

    return {
        "tenants": count(select(func.count()).select_from(Tenant).where(Tenant.id == tenant_id)),
        "keys": count(select(func.count()).select_from(ApiKey).where(ApiKey.tenant_id == tenant_id)),
        "jobs": count(select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id)),
        "steps": count(select(func.count()).select_from(Step).join(Job).where(Job.tenant_id == tenant_id)),
        "drafts": count(select(func.count()).select_from(Draft).where(Draft.tenant_id == tenant_id)),
        "templates": count(select(func.count()).select_from(Template).where(Template.tenant_id == tenant_id)),
    }


def test_a_revoked_key_is_refused_at_once_and_listed_without_the_key(db, s, capsys, monkeypatch):
    key, row = repo.create_api_key(s, "acme")
    other, _ = repo.create_api_key(s, "acme")
    s.commit()
    from redraft.api.main import create_app

    api = TestClient(create_app())
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200

    code, out, _ = redraft(capsys, monkeypatch, "keys", "revoke", row.prefix)
    assert code == 0 and f"revoked {row.prefix} (tenant acme" in out
    refused = api.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {other}"}).status_code == 200

    code, out, err = redraft(capsys, monkeypatch, "keys", "list", "--tenant", "acme")
    assert code == 0 and "2 key(s) for tenant acme" in err
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(row.prefix) and "revoked 20" in lines[0]
    assert lines[1].startswith(other[:12]) and lines[1].endswith("active")
    code, out, _ = redraft(capsys, monkeypatch, "--json", "keys", "list", "--tenant", "acme")
    assert code == 0 and key not in out and other not in out and row.key_hash not in out
    assert '"revoked_at": null' in out and out.count('"prefix"') == 2

    code, out, _ = redraft(capsys, monkeypatch, "keys", "revoke", other)  # the whole key works too
    assert code == 0 and "revoked" in out
    code, out, _ = redraft(capsys, monkeypatch, "keys", "revoke", other)
    assert code == 0 and "was already revoked at" in out


def test_revoke_says_what_is_wrong_with_a_prefix(db, s, capsys, monkeypatch):
    tenant = repo.get_or_create_tenant(s, "acme")
    s.add_all([ApiKey(tenant_id=tenant.id, prefix=f"rdk_same{i:04d}", key_hash=f"{i:064d}") for i in range(2)])
    s.commit()
    code, _, err = redraft(capsys, monkeypatch, "keys", "revoke", "rdk_same")
    assert code == 2 and "matches 2 keys (rdk_same0000, rdk_same0001)" in err and "longer prefix" in err
    code, _, err = redraft(capsys, monkeypatch, "keys", "revoke", "rdk_")
    assert code == 2 and "at least 8 characters" in err
    code, _, err = redraft(capsys, monkeypatch, "keys", "revoke", "rdk_nothing1")
    assert code == 2 and "no API key has the prefix 'rdk_nothing1'" in err
    code, _, err = redraft(capsys, monkeypatch, "keys", "revoke", "rdk_" + "x" * 43)  # an unknown whole key
    assert code == 2 and "no API key matches" in err
    code, _, err = redraft(capsys, monkeypatch, "keys", "list", "--tenant", "nobody")
    assert code == 2 and "no tenant called 'nobody'" in err
    assert all(k.revoked_at is None for k in repo.list_api_keys(s, tenant.id))


def test_delete_asks_then_removes_the_tenant_with_all_its_data_and_nothing_else(db, s, capsys, monkeypatch):
    acme, other = populate(s, "acme"), populate(s, "other", jobs=1)
    before = rows_of(s, other)
    assert rows_of(s, acme) == {"tenants": 1, "keys": 1, "jobs": 2, "steps": 6, "drafts": 2, "templates": 1}

    code, _, err = redraft(capsys, monkeypatch, "tenants", "delete", "acme", stdin="y\n")
    assert code == 1 and "1 keys, 2 jobs, 6 steps, 2 drafts, 1 templates" in err
    assert "not deleted" in err and rows_of(s, acme)["jobs"] == 2
    code, _, _ = redraft(capsys, monkeypatch, "tenants", "delete", "acme")  # no answer at all (EOF)
    assert code == 1 and rows_of(s, acme)["tenants"] == 1

    code, out, _ = redraft(capsys, monkeypatch, "tenants", "delete", "acme", stdin="acme\n")
    assert code == 0 and out.strip() == "deleted tenant acme: 1 keys, 2 jobs, 6 steps, 2 drafts, 1 templates"
    assert set(rows_of(s, acme).values()) == {0}
    assert rows_of(s, other) == before
    code, _, err = redraft(capsys, monkeypatch, "tenants", "delete", "acme", "--yes")
    assert code == 2 and "no tenant called 'acme'" in err


def test_delete_refuses_while_jobs_run_and_force_cancels_them_first(db, s, capsys, monkeypatch):
    acme = populate(s, "acme", jobs=1, templates=0)
    running, queued = (repo.create_job(s, tenant_id=acme, kind="infill", model="m", request={}, params={},
                                       canvas={}) for _ in range(2))
    s.commit()
    running, queued = running.id, queued.id
    attempt = repo.claim_job(s, running, 3, 60).attempts  # as a worker does; it now writes steps as this attempt
    repo.add_steps(s, running, 0, [([[0, 5, "a", 0.5]], [])])
    s.commit()

    code, _, err = redraft(capsys, monkeypatch, "tenants", "delete", "acme", "--yes")
    assert code == 2 and f"1 running job(s) ({running})" in err and "--force" in err
    assert rows_of(s, acme)["jobs"] == 3

    code, out, err = redraft(capsys, monkeypatch, "tenants", "delete", "acme", "--yes", "--force", "--wait", "0")
    assert code == 0 and "cancel requested" in err and "1 job(s) still running; deleting anyway" in err
    assert "3 jobs, 4 steps" in out and set(rows_of(s, acme).values()) == {0}
    # The worker still on the running job finds it gone at its next write, and drops it; the queued job's
    # message, when a worker takes it, finds nothing to claim.
    assert repo.writable(s, running, attempt) == (False, False)
    assert repo.claim_job(s, queued, 3, 60) is None


def test_the_migrations_created_the_cascades(db, s):
    expected = {("api_keys", "tenants"): "CASCADE", ("jobs", "tenants"): "CASCADE", ("drafts", "tenants"): "CASCADE",
                ("drafts", "jobs"): "CASCADE", ("drafts", "drafts"): "SET NULL", ("steps", "jobs"): "CASCADE",
                ("templates", "tenants"): "CASCADE"}
    found = {}
    schema = inspect(s.get_bind())
    for table in ("api_keys", "jobs", "drafts", "steps", "templates"):
        for fk in schema.get_foreign_keys(table):
            found[(table, fk["referred_table"])] = (fk.get("options") or {}).get("ondelete", "").upper()
    assert found == expected
    if s.get_bind().dialect.name == "sqlite":  # enforced on every connection, not only declared
        assert s.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mine=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)),
       theirs=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 2)))
def test_deleting_one_tenant_leaves_every_other_row(db, mine, theirs):
    """Whatever the two tenants own, deleting one removes exactly its rows (new tenant names per example)."""
    with get_sessionmaker(db)() as s:
        n = s.scalar(select(func.count()).select_from(Tenant))
        gone = populate(s, f"gone{n}", *mine)
        kept = populate(s, f"kept{n}", *theirs)
        kept_rows, all_rows = rows_of(s, kept), s.scalar(select(func.count()).select_from(Step))
        usage = repo.delete_tenant(s, gone)
        s.commit()
        assert usage["jobs"] == mine[0] and usage["steps"] == mine[0] * mine[1]
        assert set(rows_of(s, gone).values()) == {0}
        assert rows_of(s, kept) == kept_rows
        assert s.scalar(select(func.count()).select_from(Step)) == all_rows - mine[0] * mine[1]
