"""The MLflow outbox: which runs have facts not yet mirrored to MLflow.

A row is written in the same transaction as the entry that caused it (ledger.store.mlflow_sink), so an entry is
never committed without its outbox row, and an MLflow outage never holds up an append. Rows are marked pushed,
never needed again; the table is not part of the log and not hashed. Entries are only read here: every run
already in the log is queued once, so a ledger upgraded to this schema mirrors its history at the next sync.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if sa.inspect(bind).has_table("mlflow_outbox"):
        return  # a database taken back to an older revision by hand still has it: keep what it holds
    op.create_table(
        "mlflow_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),  # the entry that made the run's mirror stale
        sa.Column("enqueued_at", sa.String(40), nullable=False),
        sa.Column("pushed_at", sa.String(40)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text()),
    )
    op.create_index("ix_mlflow_outbox_pending", "mlflow_outbox", ["pushed_at", "run_id"])
    op.execute(
        "INSERT INTO mlflow_outbox (run_id, seq, enqueued_at, attempts) "
        "SELECT run_id, MAX(seq), MAX(recorded_at), 0 FROM entries GROUP BY run_id"
    )


def downgrade() -> None:
    op.drop_table("mlflow_outbox")
