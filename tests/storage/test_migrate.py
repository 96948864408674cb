"""Migrations on empty SQLite and PostgreSQL databases: up to the head, again, down to nothing, one revision at a
time, and the entry point docker-compose runs.

That the head's schema is exactly storage/tables.py's (alembic's compare_metadata) is checked in test_db.py, as is
an upgrade creating the SQLite file's directory."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from redraft.settings import get_settings
from redraft.storage import migrate
from redraft.storage.db import database_engine
from redraft.storage.migrate import alembic_config, upgrade
from redraft.storage.tables import Base

SCRIPTS = ScriptDirectory.from_config(alembic_config("sqlite://"))
HEAD = SCRIPTS.get_current_head()  # raises when the history has more than one head
REVISIONS = [s.revision for s in reversed(list(SCRIPTS.walk_revisions()))]  # oldest first


def current_revision(url: str) -> str | None:
    with database_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def tables(url: str) -> set[str]:
    return set(inspect(database_engine(url)).get_table_names())


def schema(url: str) -> dict[str, dict]:
    """Each table of ours with its columns, indexes, unique constraints and foreign keys."""
    inspector = inspect(database_engine(url))
    return {
        t: {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(t)],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(t)
            ),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(t)),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], f["options"].get("ondelete"))
                for f in inspector.get_foreign_keys(t)
            ),
        }
        for t in sorted(inspector.get_table_names())
        if t != "alembic_version"
    }


def test_the_history_is_one_line_from_0001_to_the_head():
    assert REVISIONS[0] == "0001" and REVISIONS[-1] == HEAD
    assert [SCRIPTS.get_revision(r).down_revision for r in REVISIONS] == [None, *REVISIONS[:-1]]


def test_upgrade_builds_every_table_on_an_empty_database(database_url):
    assert tables(database_url) == set()
    upgrade(database_url)
    assert tables(database_url) == set(Base.metadata.tables) | {"alembic_version"}
    assert current_revision(database_url) == HEAD


def test_a_second_upgrade_changes_nothing_and_keeps_the_rows(database_url):
    upgrade(database_url)
    before = schema(database_url)
    assert set(before) == set(Base.metadata.tables)
    with database_engine(database_url).begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)"), {"now": datetime.now(UTC)}
        )
    upgrade(database_url)
    assert schema(database_url) == before and current_revision(database_url) == HEAD
    with database_engine(database_url).connect() as conn:
        assert conn.execute(text("SELECT name FROM tenants")).scalars().all() == ["acme"]


def test_every_revision_goes_up_and_down_one_step_at_a_time(database_url):
    """Downgrading from revision N gives back exactly the schema revision N-1 had on the way up."""
    cfg = alembic_config(database_url)
    on_the_way_up = [schema(database_url)]  # [i]: the schema before REVISIONS[i] is applied
    for revision in REVISIONS:
        command.upgrade(cfg, revision)
        assert current_revision(database_url) == revision
        on_the_way_up.append(schema(database_url))
    assert set(on_the_way_up[-1]) == set(Base.metadata.tables)
    for i in reversed(range(len(REVISIONS))):
        command.downgrade(cfg, "-1")
        assert current_revision(database_url) == (REVISIONS[i - 1] if i else None)
        assert schema(database_url) == on_the_way_up[i]
    assert schema(database_url) == {}  # base: every table of ours is gone
    upgrade(database_url)  # and the history replays from nothing
    assert schema(database_url) == on_the_way_up[-1] and current_revision(database_url) == HEAD


def test_0004_marks_existing_jobs_as_already_enqueued(database_url):
    """Jobs from before jobs.enqueued_at were sent when they were created; the reaper must not send them again."""
    cfg = alembic_config(database_url)
    command.upgrade(cfg, "0003")
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with database_engine(database_url).begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :c)"), {"c": created})
        conn.execute(
            text(
                "INSERT INTO jobs (id, tenant_id, kind, status, model, request, params, canvas, attempts, "
                "cancel_requested, steps_run, created_at, updated_at) VALUES ('j1', 't1', 'infill', 'queued', 'm', "
                "'{}', '{}', '{}', 0, false, 0, :c, :c)"
            ),
            {"c": created},
        )
    command.upgrade(cfg, "0004")
    with database_engine(database_url).connect() as conn:
        created_at, enqueued_at = conn.execute(text("SELECT created_at, enqueued_at FROM jobs")).one()
    assert enqueued_at is not None and enqueued_at == created_at


def test_alembic_config_points_at_the_packaged_migrations_and_keeps_the_url_verbatim():
    url = "postgresql+psycopg://user:p%40ss%25word@db.example:5432/redraft"  # '%' is configparser syntax
    cfg = alembic_config(url)
    assert cfg.get_main_option("sqlalchemy.url") == url
    assert Path(cfg.get_main_option("script_location")) == Path(migrate.__file__).parent / "migrations"
    assert alembic_config().get_main_option("sqlalchemy.url") == get_settings().database_url


def test_offline_mode_writes_the_postgresql_schema_as_sql():
    cfg = alembic_config("postgresql+psycopg://postgres@127.0.0.1:5432/unused")
    cfg.output_buffer = out = io.StringIO()
    command.upgrade(cfg, "head", sql=True)
    sql = out.getvalue()
    for table in Base.metadata.tables:
        assert f"CREATE TABLE {table} (" in sql
    assert "UPDATE jobs SET enqueued_at = created_at" in sql
    assert f"UPDATE alembic_version SET version_num='{HEAD}'" in sql


def test_python_m_migrate_upgrades_the_settings_database(tmp_path):
    """What docker-compose's `migrate` service runs."""
    db = tmp_path / "new" / "redraft.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}"}
    done = subprocess.run(
        [sys.executable, "-m", "redraft.storage.migrate"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "database is at the latest migration" in done.stdout
    engine = create_engine(f"sqlite:///{db}")
    try:
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == HEAD
    finally:
        engine.dispose()
