"""Database engines and sessions, created once per process from the settings (not the batching engine:
that is ``redraft.workers.engine``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from redraft.settings import get_settings

_engines: dict[str, Engine] = {}
_makers: dict[str, sessionmaker[Session]] = {}


def make_database_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # A worker holds up to REDRAFT_WORKER_BATCH_SIZE job threads, each with its own session.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20,
                               max_overflow=20)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # API, worker and tests share one file
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit does not wait for fsync; the file stays consistent, and only the last
            # commits before a power cut (not a process crash) can be lost — the step rows of running jobs,
            # which the reaper re-runs anyway.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    settings = get_settings()
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_timeout=settings.db_pool_timeout_s,
                         connect_args={"connect_timeout": settings.db_connect_timeout_s,
                                       "options": f"-c statement_timeout={settings.db_statement_timeout_s * 1000}"})


def database_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    if url not in _engines:
        _engines[url] = make_database_engine(url)
    return _engines[url]


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    url = url or get_settings().database_url
    if url not in _makers:
        _makers[url] = sessionmaker(database_engine(url), expire_on_commit=False)
    return _makers[url]


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_database_engines(url: str | None = None) -> None:
    """Dispose the engine for ``url``, or every engine (tests switch databases within one process)."""
    for key in [url] if url is not None else list(_engines):
        if (engine := _engines.pop(key, None)) is not None:
            engine.dispose()
        _makers.pop(key, None)
