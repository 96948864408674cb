"""``alembic upgrade head``, programmatically (``python -m redraft.storage.migrate`` in docker-compose)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import make_url

from redraft.settings import REPO_ROOT, get_settings


def alembic_config(url: str | None = None) -> Config:
    """The repo's alembic.ini, pointed at ``url`` (default: the settings')."""
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", (url or get_settings().database_url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None) -> None:
    """Migrate the database at ``url`` (default: the settings') to the latest revision."""
    url = url or get_settings().database_url
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")


if __name__ == "__main__":
    upgrade()
    print("database is at the latest migration")
