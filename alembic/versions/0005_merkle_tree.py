"""A Merkle tree over the log (RFC 9162, section 2.1), kept beside it; compressed blobs; entries by run in order.

`tree_nodes` holds one row per complete ("perfect") subtree of the tree whose leaves are the entries in seq order
(leaf index seq - 1, leaf data the body as stored): (level, idx) is the subtree over leaves [idx * 2^level,
(idx + 1) * 2^level). A row is final when written, like an entry. The tree of the entries already in the log is
built here from their bodies as stored: entries are only read, never rewritten.

`blobs.encoding` says how a blob's bytes are stored ("identity", or "zlib" where that is smaller); its sha256
is always that of the bytes themselves. `ix_entries_run_seq` lets verify fold one run after another in order.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from ledger.merkle import CompactRange, leaf_hash

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BATCH = 5_000  # entries read, and their tree rows written, at a time


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if inspector.has_table("tree_nodes"):  # a database taken back to an older revision by hand: build it anew,
        op.drop_table("tree_nodes")        # from the log (the tree is derived from the entries, never the reverse)
    op.create_table(
        "tree_nodes",
        sa.Column("level", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sqlite_with_rowid=False,
    )
    if "encoding" not in {c["name"] for c in inspector.get_columns("blobs")}:
        op.add_column("blobs", sa.Column("encoding", sa.String(16), nullable=False, server_default="identity"))
    if "ix_entries_run_seq" not in {i["name"] for i in inspector.get_indexes("entries")}:
        op.create_index("ix_entries_run_seq", "entries", ["run_id", "seq"])
    body = "CAST(body AS BLOB)" if bind.dialect.name == "sqlite" else "convert_to(body, 'UTF8')"
    tree, after = CompactRange(), 0
    insert = sa.text("INSERT INTO tree_nodes (level, idx, hash) VALUES (:level, :idx, :hash)")
    while rows := bind.execute(sa.text(f"SELECT seq, {body} FROM entries WHERE seq > :after ORDER BY seq LIMIT :n"),
                               {"after": after, "n": BATCH}).all():
        nodes = []
        for seq, data in rows:
            if seq != tree.size + 1:
                raise RuntimeError(f"entry {tree.size + 1} is missing (entry {seq} follows): run `ledger verify` "
                                   "on the old ledger and restore it from a backup before upgrading")
            nodes += tree.append(leaf_hash(bytes(data)))
        bind.execute(insert, [{"level": level, "idx": idx, "hash": digest} for level, idx, digest in nodes])
        after = rows[-1][0]


def downgrade() -> None:
    # Dropping `encoding` would leave compressed blobs that nothing can tell from plain ones, and entries written
    # since name package lists and series kept as blobs, which older code cannot put back into a record.
    raise RuntimeError("revision 0005 is not undone: blobs stored since may be compressed, and entries since name "
                       "blobs older versions cannot read; restore a backup taken before the upgrade instead")
