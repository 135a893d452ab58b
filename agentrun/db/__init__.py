"""The Postgres schema: typed ORM models and Alembic migrations. Reads and writes live in
agentrun.store (agentrun.store re-exports it for older imports)."""
