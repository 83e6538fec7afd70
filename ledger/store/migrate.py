"""Schema versions: create a new database at head, refuse an outdated one, upgrade on request."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect

from ledger.errors import OutdatedSchema, StoreError
from ledger.store.engine import process_lock


def migrations_dir() -> Path:
    """ledger/migrations in an installed wheel (setuptools maps alembic/ there), alembic/ in a checkout."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "migrations"
    return installed if installed.is_dir() else package.parent / "alembic"


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(migrations_dir())).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _is_known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory(str(migrations_dir())).get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(engine: Engine, revision: str = "head", lock_path: Path | None = None) -> tuple[str | None, str]:
    """Run migrations up to `revision`; returns (revision before, revision after)."""
    import logging

    from alembic import command

    # Alembic logs each step at INFO; in a notebook whose root logger is at INFO (SDK 2.x sets that) it is noise.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with process_lock(engine, "ledger.migrate", lock_path):  # one migrator at a time
        before = current_revision(engine)
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), revision)
        return before, current_revision(engine)


def ensure_current(engine: Engine, where: str, lock_path: Path | None = None) -> None:
    """A new, empty database is created at head; an older one is refused with the command that upgrades it."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        tables = set(inspect(engine).get_table_names())
        if tables and "entries" in tables:
            raise StoreError(
                f"{where} has an entries table that no ledger migration made",
                "point LEDGER_DB_URL at a ledger database or an empty one",
            )
        upgrade(engine, "head", lock_path)
        return
    if _is_known_revision(current):
        raise OutdatedSchema(
            f"the database {where} is at schema {current}, this ledger needs {head}",
            "upgrade it with: ledger db upgrade",
        )
    raise StoreError(
        f"the database {where} is at schema {current}, newer than this ledger knows ({head})",
        "upgrade the ledger package: pip install -U sagemaker-ledger",
    )


def require_current(engine: Engine, where: str) -> None:
    """A read-only database (a backup, an evidence copy) is read at head only: nothing is created or migrated."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise StoreError(f"{where} is read-only and holds no ledger", "point LEDGER_HOME (or LEDGER_DB_URL) at a ledger")
    if _is_known_revision(current):
        raise OutdatedSchema(f"the database {where} is at schema {current}, this ledger needs {head}; it is read-only",
                             "copy it to a writable place and upgrade the copy with: ledger db upgrade")
    raise StoreError(
        f"the database {where} is at schema {current}, newer than this ledger knows ({head})",
        "upgrade the ledger package: pip install -U sagemaker-ledger",
    )
