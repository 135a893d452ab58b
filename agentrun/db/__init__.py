"""The Postgres store: typed ORM models, Alembic migrations and the repository."""
