"""Shared fixtures. Tests use a real Redis and real databases (a SQLite file and PostgreSQL)."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from sqlalchemy.orm import Session

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database on each backend. PostgreSQL must answer: CI starts it."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'redraft.db'}"
        return
    name = f"redraft_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL must answer at {PG_ADMIN} (CI starts it): {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    from storage.db import reset_engine

    reset_engine()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def engine(database_url):
    from storage.db import get_engine
    from storage.migrate import upgrade

    upgrade(database_url)
    return get_engine(database_url)


@pytest.fixture
def session(engine, database_url):
    from storage.db import get_sessionmaker

    with get_sessionmaker(database_url)() as s:
        yield s
