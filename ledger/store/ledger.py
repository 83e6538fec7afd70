"""The ledger store: append to the hash-chained log, keep projections, answer queries, verify.

Appends are serialized (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), and the
UNIQUE prev_hash makes the database refuse a fork even if a lock were missed. Entries are only ever inserted.

A `Ledger` is the one handle a command, autolog or the dashboard opens (`open_ledger`) and passes down; the
other modules of `ledger.store` read through it (`_reading`), and nothing outside the store sees SQL.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, exc, text

from ledger.config import Settings, load_settings
from ledger.errors import NotFound, UsageError
from ledger.record import (
    ZERO_HASH,
    ChainRef,
    Outcome,
    RunRecord,
    Verdict,
    build_entry_body,
    chain_hash,
    fold_entries,
    inflate_record,
    plan_inflation,
    plan_launch_entry,
    plan_small_payload,
    sha256_hex,
    utc_now,
)
from ledger.store import entries, integrity, migrate, mlflow_sink, query, tree
from ledger.store.blobs import read_blobs, save_blobs
from ledger.store.engine import (
    READ_ONLY_SQLSTATES,
    chunks,
    collector_paused,
    explain_write_error,
    explained_errors,
    in_clause,
    insert_many,
    lock_path,
    make_engine,
    read_only_error,
)
from ledger.store.integrity import VerifiedHead, VerifyReport
from ledger.store.projection import (
    PROJECTION_TABLES,
    RUN_COLUMNS,
    FactUpdate,
    ProjectionRows,
    build_fact_update,
    build_projection,
)

ENTRY_COLUMNS = ("seq", "run_id", "kind", "body", "prev_hash", "entry_hash", "recorded_at")
SCHEMA_CHECKS = (True, False, "on use")


@dataclass(frozen=True)
class EntryRow:
    seq: int
    run_id: str
    kind: str
    body: str
    prev_hash: str
    entry_hash: str
    recorded_at: str


# --- the ledger -----------------------------------------------------------------------------------------------


class Ledger:
    """One ledger database. Open it with `open_ledger()`."""

    def __init__(self, engine: Engine, settings: Settings, *, schema_checked: bool = True):
        self.engine = engine
        self.settings = settings
        self.where = engine.url.render_as_string(hide_password=True)
        self.append_listeners: list = []
        """Called as listener(conn, entries) inside each append transaction, after the entries are inserted:
        whatever a listener writes (the MLflow outbox) commits or rolls back together with the entries."""
        self._schema_checked = schema_checked

    # -- the schema --

    def check_schema(self) -> None:
        """A new database is created at the newest schema; an outdated one is refused in one line naming `ledger db
        upgrade`. Read-only media are only read at the newest schema: nothing is created or migrated there."""
        with explained_errors(self.where):
            if self.read_only:
                migrate.require_current(self.engine, self.where)
            else:
                migrate.ensure_current(self.engine, self.where, lock_path(self.settings))
        self._schema_checked = True

    def release_connections(self) -> None:
        """Close the pooled connections; the next use opens new ones. For the wait while a job runs: a connection
        held for hours would outlive a database server's restart, or keep writing to a SQLite file that was moved
        or replaced meanwhile, where nobody would read it."""
        self.engine.dispose()

    # -- transactions --

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        with explained_errors(self.where), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        """A connection for the store's queries (the schema checked first, once, for a handle opened "on use")."""
        if not self._schema_checked:
            self.check_schema()
        with self._connect() as conn:
            yield conn

    @property
    def read_only(self) -> bool:
        """Opened read-only: a SQLite file or LEDGER_HOME that cannot be written (a backup, an evidence copy)."""
        return bool(self.engine.get_execution_options().get("ledger_read_only"))

    def require_writable(self) -> None:
        """Raise ReadOnlyStore (one line) for a ledger that cannot record, before a command starts work to record.
        PostgreSQL is asked whether this session may insert entries (a SELECT-only role, a read-only default)."""
        if self.read_only:
            raise read_only_error(self.where, "read-only file or directory")
        if self.engine.dialect.name == "postgresql":
            with self._connect() as conn:
                # A new database has no entries table yet: then the question is whether this role may make it.
                read_only, may_insert = conn.execute(text(
                    "SELECT current_setting('transaction_read_only'), CASE WHEN to_regclass('entries') IS NULL "
                    "THEN has_schema_privilege(current_schema(), 'CREATE') "
                    "ELSE has_table_privilege('entries', 'INSERT') END")).one()
            if read_only == "on" or not may_insert:
                raise read_only_error(self.where, "read-only transactions" if read_only == "on"
                                       else "no INSERT privilege on entries, or no CREATE for a new database")

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """A write transaction that holds the append lock until commit."""
        if self.read_only:
            raise read_only_error(self.where, "read-only file or directory")
        if not self._schema_checked:
            self.check_schema()
        opened = False
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(ledger_write=True)
                with conn.begin():
                    if self.engine.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('ledger.append'))"))
                    opened = True
                    yield conn
        except (exc.DBAPIError, sqlite3.DatabaseError) as err:
            if getattr(getattr(err, "orig", None), "sqlstate", None) in READ_ONLY_SQLSTATES:
                raise read_only_error(self.where, str(err.orig).strip().splitlines()[0]) from None
            raise explain_write_error(err, self.where, opened) from None

    # -- appending --

    def _head(self, conn) -> tuple[int, str]:
        row = conn.execute(text("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1")).first()
        return (row[0], row[1]) if row else (0, ZERO_HASH)

    def _append(self, conn, items: list[tuple[str, str, dict]], blobs: dict[str, bytes]) -> list[EntryRow]:
        """Insert entries for (kind, run_id, payload) items after the current head, in one transaction, with the
        blobs their payloads name (planned small by `plan_launch_entry` or `plan_small_payload`) and their Merkle
        leaves."""
        seq, prev = self._head(conn)
        rows = []
        for kind, run_id, payload in items:
            recorded_at = utc_now()
            body = build_entry_body(kind, run_id, payload, recorded_at)
            seq += 1
            entry_hash = chain_hash(prev, body)
            rows.append(EntryRow(seq, run_id, kind, body, prev, entry_hash, recorded_at))
            prev = entry_hash
        save_blobs(conn, blobs)
        insert_many(conn, "entries", ENTRY_COLUMNS, [row.__dict__ for row in rows])
        tree.append_leaves(conn, rows[0].seq - 1, [row.body for row in rows])
        for listener in self.append_listeners:
            listener(conn, rows)
        return rows

    def append(self, record: RunRecord) -> RunRecord:
        """Record a launched run. Returns the record with its `chain`."""
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[RunRecord]) -> list[RunRecord]:
        """Record many launched runs in one transaction (imports, benchmarks): one lock, one commit."""
        records = list(records)
        with collector_paused():
            items, blobs = [], {}
            for record in records:  # pure work, done before taking the lock other writers wait on
                payload, kept = plan_launch_entry(record)
                items.append(("run.launched", record.run_id, payload))
                blobs.update(kept)
            with self._writing() as conn:
                known = self._existing_run_ids(conn, [r.run_id for r in records])
                if known:
                    raise UsageError(f"run {sorted(known)[0]} is already recorded", "a new run needs a new run_id")
                rows = self._append(conn, items, blobs)
                saved = [record.model_copy(update={"chain": _chain_ref(row)})
                         for record, row in zip(records, rows, strict=True)]
                self._save_projections(conn, [build_projection(r) for r in saved], replace=False)
        return saved

    def record_outcome(self, run_ref: str, outcome: Outcome | dict) -> RunRecord:
        outcome = outcome if isinstance(outcome, Outcome) else Outcome.model_validate(outcome)
        if outcome.failure_reason:  # a job's own words (a log tail, SageMaker's FailureReason) may hold a secret
            from ledger.capture.secrets import redact_text

            outcome = outcome.model_copy(update={"failure_reason": redact_text(outcome.failure_reason)[0]})
        return self._append_fact(run_ref, "run.finished", {"outcome": outcome.model_dump(mode="json")})

    def record_verdict(self, run_ref: str, verdict: Verdict | dict) -> RunRecord:
        """The verdict of a reproduction, recorded on the reproduction run; it names the run it reproduces."""
        verdict = verdict if isinstance(verdict, Verdict) else Verdict.model_validate(verdict)
        run_id = self.resolve(run_ref)
        original = self.get(run_id).reproduction_of
        return self._append_fact(run_id, "run.verdict", {"verdict": verdict.model_dump(mode="json"),
                                                        "reproduction_of": original})

    def annotate(self, run_ref: str, facts: dict[str, Any]) -> RunRecord:
        return self._append_fact(run_ref, "run.annotated", dict(facts))

    def _append_fact(self, run_ref: str, kind: str, payload: dict) -> RunRecord:
        """A later fact about a run: its entry, and only the projection rows it changes."""
        run_id = self.resolve(run_ref)
        small, blobs = plan_small_payload(kind, payload)  # pure: before the write lock
        with self._writing() as conn:
            [row] = self._append(conn, [(kind, run_id, small)], blobs)
            self._save_fact_projection(conn, run_id, build_fact_update(kind, payload, run_id, row.seq, row.entry_hash))
        with self._reading() as conn:
            return self._fold(conn, run_id)

    def _save_fact_projection(self, conn, run_id: str, update: FactUpdate) -> None:
        assignments = ", ".join(f"{column} = :{column}" for column in update.run)
        conn.execute(text(f"UPDATE runs SET {assignments} WHERE run_id = :run_id"), {**update.run, "run_id": run_id})
        if update.metrics is not None:
            conn.execute(text("DELETE FROM metrics WHERE run_id = :run_id"), {"run_id": run_id})
            insert_many(conn, "metrics", PROJECTION_TABLES["metrics"], update.metrics)

    def _existing_run_ids(self, conn, run_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(run_ids):
            marks, binds = in_clause("r", chunk)
            found.update(row[0] for row in conn.execute(text(f"SELECT run_id FROM runs WHERE run_id IN ({marks})"),
                                                        binds))
        return found

    def _save_projections(self, conn, projections: list[ProjectionRows], replace: bool) -> None:
        if not projections:
            return
        if replace:
            for table in ("runs", *PROJECTION_TABLES):
                conn.execute(
                    text(f"DELETE FROM {table} WHERE run_id = :run_id"), [{"run_id": p.run["run_id"]} for p in projections]
                )
        insert_many(conn, "runs", RUN_COLUMNS, [p.run for p in projections])
        for table, cols in PROJECTION_TABLES.items():
            insert_many(conn, table, cols, (row for p in projections for row in getattr(p, table)))

    # -- reading --

    def resolve(self, run_ref: str) -> str:
        """A run id from a full id, a unique prefix of one, or a job name."""
        with self._reading() as conn:
            return self._resolve(conn, run_ref)

    def _resolve(self, conn, run_ref: str) -> str:
        # Three queries that each use an index (id, id prefix, job name): one OR-ed query scans every run.
        ref = (run_ref or "").strip()
        if not ref:
            raise UsageError("no run given", "name a run by its id, a unique prefix of it, or its job name")
        if conn.execute(text("SELECT 1 FROM runs WHERE run_id = :r"), {"r": ref}).first():
            return ref
        prefix = re.sub(r"[^0-9A-Z]", "", ref.upper())  # ULID characters only: no wildcards get through
        rows: set[tuple[str, str]] = set()
        if prefix:
            # SQLite's LIKE ignores case and so skips the index; GLOB is case-sensitive and uses it.
            sql = "run_id GLOB :p" if conn.dialect.name == "sqlite" else "run_id LIKE :p"
            pattern = prefix + ("*" if conn.dialect.name == "sqlite" else "%")
            rows |= {tuple(r) for r in conn.execute(
                text(f"SELECT run_id, job_name FROM runs WHERE {sql} ORDER BY run_id LIMIT 11"), {"p": pattern})}
        rows |= {tuple(r) for r in conn.execute(
            text("SELECT run_id, job_name FROM runs WHERE job_name = :r ORDER BY run_id LIMIT 11"), {"r": ref})}
        if len(rows) == 1:
            return rows.pop()[0]
        if not rows:
            raise NotFound(f"no run {ref} in {self.where}", "list runs with: ledger runs")
        shown = ", ".join(f"{r[0]} ({r[1]})" for r in sorted(rows)[:5])
        raise UsageError(f"{ref} names {len(rows)} runs: {shown}", "give more characters of the run id")

    def has_run(self, run_id: str) -> bool:
        with self._reading() as conn:
            return conn.execute(text("SELECT 1 FROM runs WHERE run_id = :r"), {"r": run_id}).first() is not None

    def get(self, run_ref: str) -> RunRecord:
        with self._reading() as conn:
            return self._fold(conn, self._resolve(conn, run_ref))

    def _fold(self, conn, run_id: str) -> RunRecord:
        """The run's current record, folded from its entries, with the parts kept as blobs put back."""
        rows = conn.execute(
            text("SELECT seq, body, prev_hash, entry_hash FROM entries WHERE run_id = :r ORDER BY seq"), {"r": run_id}
        ).all()
        if not rows:
            raise NotFound(f"no run {run_id} in {self.where}", "list runs with: ledger runs")
        record = fold_entries([tuple(row) for row in rows])
        wanted = plan_inflation(record)
        return inflate_record(record, read_blobs(conn, wanted)) if wanted else record

    def entries(self, run_ref: str | None = None) -> list[EntryRow]:
        with self._reading() as conn:
            if run_ref is None:
                result = conn.execute(text("SELECT * FROM entries ORDER BY seq"))
            else:
                result = conn.execute(
                    text("SELECT * FROM entries WHERE run_id = :r ORDER BY seq"), {"r": self.resolve(run_ref)}
                )
            return [EntryRow(**row._mapping) for row in result]

    def head(self) -> tuple[int, str]:
        with self._reading() as conn:
            return self._head(conn)

    def runs(self, project: str | None = None, status: str | None = None, where: str | None = None,
             limit: int | None = None, since: str | None = None, until: str | None = None):
        """Runs as a pandas DataFrame, newest first: one row a run, `params.*` and `metrics.*` columns."""
        with self._reading() as conn:
            return query.runs_frame(conn, project=project, status=status, where=where, limit=limit,
                                    since=since, until=until)

    def reproductions_of(self, run_ref: str) -> list[str]:
        run_id = self.resolve(run_ref)
        with self._reading() as conn:
            rows = conn.execute(
                text("SELECT run_id FROM runs WHERE reproduction_of = :r ORDER BY run_id"), {"r": run_id}
            )
            return [row[0] for row in rows]

    # -- the Merkle tree (RFC 9162) --

    def tree_root(self, size: int | None = None) -> tuple[int, bytes]:
        """(size, root) of the tree of the first `size` entries (default: all of them)."""
        with self._reading() as conn:
            size = self._tree_size(conn, size)
            return size, tree.root(conn, size)

    def inclusion_proof(self, seq: int, size: int | None = None) -> tuple[int, list[bytes]]:
        """(size, audit path) proving entry `seq` is in the tree of the first `size` entries (default: all)."""
        with self._reading() as conn:
            size = self._tree_size(conn, size)
            return size, tree.inclusion_proof(conn, seq, size)

    def inclusion_proofs(self, seqs: Iterable[int], size: int | None = None) -> tuple[int, dict[int, list[bytes]]]:
        """(size, {seq: audit path}) for many entries at once (an audit report's)."""
        with self._reading() as conn:
            size = self._tree_size(conn, size)
            return size, tree.inclusion_proofs(conn, seqs, size)

    def consistency_proof(self, first: int, second: int | None = None) -> tuple[int, list[bytes]]:
        """(second, proof) that the tree of `second` entries (default: all) extends the tree of `first`."""
        with self._reading() as conn:
            second = self._tree_size(conn, second)
            return second, tree.consistency_proof(conn, first, second)

    def _tree_size(self, conn, size: int | None) -> int:
        head = self._head(conn)[0]
        if size is None:
            return head
        if not 0 <= size <= head:
            raise UsageError(f"the log has {head} entries: there is no tree of {size}", f"give a size up to {head}")
        return size

    # -- blobs --

    def put_blob(self, data: bytes) -> str:
        digest = sha256_hex(data)
        with self._writing() as conn:
            save_blobs(conn, {digest: data})
        return digest

    def get_blob(self, digest: str) -> bytes:
        with self._reading() as conn:
            found = read_blobs(conn, [digest])
        if digest not in found:
            raise NotFound(f"no blob {digest} in {self.where}", "it was never stored, or the database was replaced")
        return found[digest]

    # -- integrity --

    def iter_entries(self, low: int | None = None, high: int | None = None, batch: int = 5_000,
                     body_bytes: bool = False) -> Iterator[tuple]:
        """(seq, run_id, kind, body, prev_hash, entry_hash, recorded_at) in seq order, streamed; optionally only
        low <= seq <= high, and with each body as its UTF-8 bytes (see `entries.iter_entries`)."""
        with self._reading() as conn:
            yield from entries.iter_entries(conn, low, high, batch=batch, body_bytes=body_bytes)

    def seq_range(self) -> tuple[int, int]:
        with self._reading() as conn:
            low, high = conn.execute(text("SELECT MIN(seq), MAX(seq) FROM entries")).one()
        return (low or 1, high or 0)

    def verify(self, check_projections: bool = True, since: VerifiedHead | None = None,
               remembered: VerifiedHead | None = None) -> VerifyReport:
        """Check the log, its Merkle tree, its blobs and (with `check_projections`) every projection row: all of
        them, or only what came after `since`, a head verified before; a `remembered` head must still be in the
        log (integrity.py says what each proves)."""
        return integrity.verify(self, projections=check_projections, since=since, remembered=remembered)

    def rebuild(self) -> int:
        """Drop every projection row and derive them again from the log, 5,000 runs at a time: memory is bounded
        by the largest run, not the log. Returns the number of runs."""
        count = 0
        with self._writing() as conn:
            for table in ("runs", *PROJECTION_TABLES):
                conn.execute(text(f"DELETE FROM {table}"))
            for batch in chunks(entries.fold_runs(conn), 5_000):
                self._save_projections(conn, [build_projection(record) for record in batch], replace=False)
                count += len(batch)
        return count


def _chain_ref(row: EntryRow) -> ChainRef:
    return ChainRef(seq=row.seq, entry_hash=row.entry_hash, prev_hash=row.prev_hash)


def open_ledger(db_url: str | None = None, *, check_schema: bool | str = True,
                settings: Settings | None = None) -> Ledger:
    """Open the ledger at LEDGER_DB_URL (or the given URL or settings): the one handle a command, autolog or the
    dashboard opens, and passes down to whatever reads or records.

    check_schema: True checks now (a new database is created at the newest schema; an outdated one is refused);
    "on use" checks before the first read or write instead, so that a handle made while the database cannot be
    reached still lets a launch go on (its record is spooled); False never checks (`ledger db upgrade`)."""
    if check_schema not in SCHEMA_CHECKS:
        raise ValueError(f"check_schema must be one of {SCHEMA_CHECKS}")
    settings = settings or load_settings(**({"db_url": db_url} if db_url else {}))
    book = Ledger(make_engine(settings), settings, schema_checked=check_schema != "on use")
    mlflow_sink.attach_mirror(book)  # the MLflow outbox: a listener on every append
    if check_schema is True:
        book.check_schema()
    return book


def upgrade_database(book: Ledger) -> tuple[str | None, str, int]:
    """`ledger db upgrade`: migrate to head, then rebuild projections from the log. (before, after, runs).
    `book` is opened without a schema check (`open_ledger(check_schema=False)`): its schema is what changes."""
    book.require_writable()
    with explained_errors(book.where):
        before, after = migrate.upgrade(book.engine, "head", lock_path(book.settings))
    runs = book.rebuild() if before != after else 0
    return before, after, runs
