"""Engines, sessions, timestamps and migrations, on real databases."""

from __future__ import annotations

from datetime import UTC

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from redraft.storage import repo
from redraft.storage.db import database_engine, make_database_engine, reset_database_engines, session_scope
from redraft.storage.migrate import upgrade
from redraft.storage.tables import Base, Tenant


def test_migrations_match_the_models(engine):
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_upgrade_creates_the_sqlite_directory_and_is_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'redraft.db'}"
    upgrade(url)
    upgrade(url)
    try:
        assert {"tenants", "api_keys", "jobs", "drafts", "steps"} <= set(inspect(database_engine(url)).get_table_names())
    finally:
        reset_database_engines(url)


def test_sqlite_connections_share_the_file_safely(tmp_path):
    engine = make_database_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "foreign_keys", "busy_timeout")}
        assert pragma["journal_mode"] == "wal" and pragma["foreign_keys"] == 1 and pragma["busy_timeout"] >= 10000
    finally:
        engine.dispose()


def test_session_scope_commits_on_success_and_rolls_back_on_error(engine, database_url):
    with session_scope(database_url) as s:
        repo.get_or_create_tenant(s, "kept")
    with pytest.raises(RuntimeError), session_scope(database_url) as s:
        repo.get_or_create_tenant(s, "dropped")
        raise RuntimeError("boom")
    with session_scope(database_url) as s:
        assert list(s.scalars(select(Tenant.name))) == ["kept"]


def test_timestamps_come_back_timezone_aware_utc(engine, database_url):
    with session_scope(database_url) as s:
        tenant_id = repo.get_or_create_tenant(s, "acme").id
    with session_scope(database_url) as s:
        created = s.get_one(Tenant, tenant_id).created_at
    assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0 and created.tzinfo == UTC
