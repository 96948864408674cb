"""Storage: SQLAlchemy 2 models, sessions, Alembic migrations and the repository functions."""
