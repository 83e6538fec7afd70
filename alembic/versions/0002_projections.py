"""Query projections of the log (runs, params, metrics, data objects) and the blob store.

Projections are derived data: `ledger db upgrade` rebuilds them from the log after this runs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("job_name", sa.String(200), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32)),
        sa.Column("created_at", sa.String(40), nullable=False),
        sa.Column("created_by", sa.String(400)),
        sa.Column("image_digest", sa.String(200)),
        sa.Column("code_commit", sa.String(64)),
        sa.Column("gap_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("reproduction_of", sa.String(64)),
        sa.Column("verdict", sa.String(16)),
        sa.Column("model_uri", sa.Text()),
        sa.Column("model_tree_sha256", sa.String(64)),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
    )
    for column in ("project", "job_name", "status", "created_at", "reproduction_of"):
        op.create_index(f"ix_runs_{column}", "runs", [column])
    op.create_table(
        "params",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_index("ix_params_key_value", "params", ["key", "value"])
    op.create_table(
        "metrics",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Float()),
    )
    op.create_index("ix_metrics_key_value", "metrics", ["key", "value"])
    op.create_table(
        "data_objects",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("channel", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("bucket", sa.String(255), nullable=False),
        sa.Column("version_id", sa.String(1024)),
        sa.Column("etag", sa.String(200)),
        sa.Column("size", sa.BigInteger()),
    )
    op.create_index("ix_data_objects_location", "data_objects", ["bucket", "key", "version_id"])
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )


def downgrade() -> None:
    for table in ("blobs", "data_objects", "metrics", "params", "runs"):
        op.drop_table(table)
