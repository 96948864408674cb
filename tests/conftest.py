"""Shared fixtures. Tests use a real Redis and real databases (a SQLite file and PostgreSQL); never mocks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ["tests.utils.fixtures", "tests.utils.browser"]  # model fixtures; the Chromium fixture

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def _pg(dbname: str = "test") -> psycopg.Connection:
    """An autocommit connection; fails the test with a clear message when PostgreSQL does not answer."""
    try:
        return psycopg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{dbname}", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL must answer at {PG_ADMIN} (CI starts it; the tests never skip it): {exc}")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One scratch PostgreSQL database for the whole test session, dropped at the end."""
    name = f"redraft_test_{uuid.uuid4().hex[:12]}"
    with _pg() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with _pg() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database on each backend: a fresh SQLite file, or the session's PostgreSQL database with
    its schema dropped and recreated."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'redraft.db'}"
    else:
        name = request.getfixturevalue("pg_database")
        with _pg(name) as conn:
            conn.execute("SET lock_timeout = '10s'")  # a leaked transaction fails the test, never hangs it
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    yield url
    from redraft.storage.db import reset_database_engines

    reset_database_engines(url)


@pytest.fixture
def engine(database_url: str) -> Engine:
    """The engine for ``database_url``, migrated to the latest revision."""
    from redraft.storage.db import database_engine
    from redraft.storage.migrate import upgrade

    upgrade(database_url)
    return database_engine(database_url)


@pytest.fixture
def session(engine: Engine, database_url: str) -> Iterator[Session]:
    """A session on the migrated database; closed (uncommitted work rolled back) after the test."""
    from redraft.storage.db import get_sessionmaker

    with get_sessionmaker(database_url)() as s:
        yield s
