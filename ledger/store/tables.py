"""SQLModel tables. `entries` is the log and the source of truth; every other table is a projection of it.

Rows of these classes never leave `ledger.store`: the rest of the code sees RunRecord and plain query results.
The migrations in alembic/versions create exactly these tables; tests/test_migrations.py checks they agree.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


class Entry(SQLModel, table=True):
    """One fact in the log. Inserted once, never updated or deleted."""

    __tablename__ = "entries"
    __table_args__ = (UniqueConstraint("prev_hash", name="uq_entries_prev_hash"),
                      Index("ix_entries_run_seq", "run_id", "seq"))

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    run_id: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=32)
    body: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64)
    entry_hash: str = Field(max_length=64, unique=True)
    recorded_at: str = Field(max_length=40)


class Run(SQLModel, table=True):
    """One row a run: the record's most asked-for fields, and its params and metrics as JSON for fast loading."""

    __tablename__ = "runs"

    run_id: str = Field(primary_key=True, max_length=64)
    project: str = Field(index=True, max_length=200)
    job_name: str = Field(index=True, max_length=200)
    backend: str = Field(max_length=32)
    status: str | None = Field(default=None, index=True, max_length=32)
    created_at: str = Field(index=True, max_length=40)
    created_by: str | None = Field(default=None, max_length=400)
    image_digest: str | None = Field(default=None, max_length=200)
    code_commit: str | None = Field(default=None, max_length=64)
    gap_count: int = 0
    reproduction_of: str | None = Field(default=None, index=True, max_length=64)
    verdict: str | None = Field(default=None, max_length=16)
    model_uri: str | None = Field(default=None, sa_column=Column(Text))
    model_tree_sha256: str | None = Field(default=None, max_length=64)
    params_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    metrics_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    last_seq: int = 0
    last_hash: str = Field(default="", max_length=64)


class Param(SQLModel, table=True):
    __tablename__ = "params"
    # The first 100 characters of the value, not all of it: PostgreSQL refuses index rows over about 2.7 KB.
    __table_args__ = (Index("ix_params_key_value_prefix", "key", text("substr(value, 1, 100)")),)

    run_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=250)
    value: str = Field(sa_column=Column(Text, nullable=False))


class Metric(SQLModel, table=True):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_key_value", "key", "value"),)

    run_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=250)
    value: float | None = None


class DataObjectRow(SQLModel, table=True):
    """Which run read which object version: the lineage index."""

    __tablename__ = "data_objects"
    __table_args__ = (Index("ix_data_objects_location", "bucket", "key", "version_id"),)

    run_id: str = Field(primary_key=True, max_length=64)
    channel: str = Field(primary_key=True, max_length=200)
    key: str = Field(primary_key=True, max_length=1024)
    bucket: str = Field(max_length=255)
    version_id: str | None = Field(default=None, max_length=1024)
    etag: str | None = Field(default=None, max_length=200)
    size: int | None = None


class Blob(SQLModel, table=True):
    """Content-addressed bytes the records point at (git diffs, package lists, metric series, large manifests):
    immutable like the log. `sha256` and `size` are of the bytes themselves; `data` holds them as `encoding` says
    ("identity", or "zlib" where that is smaller)."""

    __tablename__ = "blobs"

    sha256: str = Field(primary_key=True, max_length=64)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    encoding: str = Field(default="identity", max_length=16)


class TreeNode(SQLModel, table=True):
    """One complete subtree of the Merkle tree over the log (RFC 9162): the hash of leaves [idx * 2^level,
    (idx + 1) * 2^level), leaf index = seq - 1. Final when written, like the entry that completes it."""

    __tablename__ = "tree_nodes"
    __table_args__ = {"sqlite_with_rowid": False}

    level: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    idx: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


PROJECTION_TABLES = ("runs", "params", "metrics", "data_objects")
