"""Index params by key and the first 100 characters of the value, not the whole value.

PostgreSQL refuses a B-tree index row over about 2.7 KB ("index row size exceeds"), so an index on the whole
value made a long hyperparameter (a 1 MB JSON config, say) fail the append. A prefix keeps the index small;
queries compare the prefix first, then the whole value. Only an index changes: entries are not touched.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PREFIX = 100  # characters; ledger.store.query.PARAM_PREFIX_CHARS must agree


def upgrade() -> None:
    op.drop_index("ix_params_key_value", table_name="params")
    op.create_index("ix_params_key_value_prefix", "params", ["key", sa.text(f"substr(value, 1, {PREFIX})")])


def downgrade() -> None:
    op.drop_index("ix_params_key_value_prefix", table_name="params")
    op.create_index("ix_params_key_value", "params", ["key", "value"])
