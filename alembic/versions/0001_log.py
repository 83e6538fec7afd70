"""The log: append-only, hash-chained entries.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        # A second entry claiming the same predecessor is a fork: the database itself refuses it.
        sa.UniqueConstraint("prev_hash", name="uq_entries_prev_hash"),
        sa.UniqueConstraint("entry_hash", name="uq_entries_entry_hash"),
    )
    op.create_index("ix_entries_run_id", "entries", ["run_id"])
    # The database itself refuses to change or remove an entry: only INSERT is allowed on the log.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'ledger entries are append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries "
            "FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER entries_no_{action.lower()} BEFORE {action} ON entries "
                "BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END"
            )


def downgrade() -> None:
    raise RuntimeError("the log is never dropped")
