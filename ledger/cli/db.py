"""`ledger db upgrade` and `ledger db rebuild`: migrations, and the projections derived again from the log."""

from __future__ import annotations

import typer

from ledger.cli.console import open_book, out
from ledger.store.ledger import upgrade_database

db_app = typer.Typer(help="The database: migrations and projections.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade_command():
    """Migrate the database to the newest schema, then rebuild projections. Entries are never changed."""
    before, after, runs = upgrade_database(open_book(check_schema=False))
    if before == after:
        out.print(f"Already at schema {after}.")
    else:
        out.print(f"Upgraded schema {before or 'none'} -> {after}; projections rebuilt for {runs} run(s).")


@db_app.command("rebuild")
def db_rebuild_command():
    """Rebuild every projection (runs, params, metrics, data objects) from the log."""
    count = open_book().rebuild()
    out.print(f"Rebuilt projections for {count} run(s) from the log.")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
