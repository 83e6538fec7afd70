"""Alembic environment. The ledger passes its own connection in `config.attributes["connection"]`."""

from alembic import context
from sqlalchemy import create_engine

config = context.config


def run_migrations(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    with create_engine(config.get_main_option("sqlalchemy.url")).begin() as conn:
        run_migrations(conn)
