"""The ledger store: append to the hash-chained log, keep projections, answer queries, verify.

Appends are serialized (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock), and the
UNIQUE prev_hash makes the database refuse a fork even if a lock were missed. Entries are only ever inserted.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text

from ledger.config import Settings, load_settings
from ledger.errors import DatabaseDamaged, NotFound, ReadOnlyStore, StoreError, UsageError
from ledger.record import (
    ZERO_HASH,
    ChainRef,
    Outcome,
    RunRecord,
    Verdict,
    build_entry_body,
    chain_hash,
    fold_entries,
    launch_payload,
    sha256_hex,
    utc_now,
)
from ledger.store import migrate, mlflow_sink, query
from ledger.store.projection import ProjectionRows, build_projection

ENTRY_COLUMNS = ("seq", "run_id", "kind", "body", "prev_hash", "entry_hash", "recorded_at")
RUN_COLUMNS = (
    "run_id project job_name backend status created_at created_by image_digest code_commit gap_count "
    "reproduction_of verdict model_uri model_tree_sha256 params_json metrics_json last_seq last_hash"
).split()


@dataclass(frozen=True)
class EntryRow:
    seq: int
    run_id: str
    kind: str
    body: str
    prev_hash: str
    entry_hash: str
    recorded_at: str


@dataclass
class VerifyReport:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    verified_at: str
    problems: list[dict] = field(default_factory=list)

    @property
    def first_bad(self) -> dict | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": {"seq": self.head_seq, "entry_hash": self.head_hash},
            "verified_at": self.verified_at,
            "first_bad": self.first_bad,
            "problems": self.problems,
        }


# --- engine ---------------------------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def plan_sqlite_access(exists: bool, dir_writable: bool, file_writable: bool, wal_exists: bool,
                       shm_exists: bool) -> str:
    """Pure: how to open a SQLite ledger file: "rw"; "immutable" (read-only, no lock, no -shm file: nothing can be
    writing it, as no -wal file exists beside it); "ro" (read-only through a -wal file left by an open writer or a
    copy taken while one was open: skipping it would hide committed entries); or "" when it cannot be opened."""
    if dir_writable and (file_writable or not exists):
        return "rw"
    if not exists:
        return ""
    if not wal_exists:
        return "immutable"
    return "ro" if shm_exists or dir_writable else ""


def _sqlite_access(path: Path) -> str:
    wal, shm = path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")
    access = plan_sqlite_access(path.exists(), os.access(path.parent, os.W_OK), os.access(path, os.W_OK),
                                wal.exists(), shm.exists())
    if not access:
        raise ReadOnlyStore(
            f"{path} is not writable" if not path.exists() else
            f"{path} is read-only and has a write-ahead log ({wal.name}) but no {shm.name} to read it with",
            "set LEDGER_HOME (or LEDGER_DB_URL) to a writable place" if not path.exists() else
            f"copy {path.name} and {wal.name} to a writable place and point LEDGER_HOME there",
        )
    return access


def _read_only_connector(path: Path, access: str):
    """sqlite3 connections that cannot write: a read-only file or LEDGER_HOME (a backup, an evidence copy)."""
    import sqlite3

    uri = path.resolve().as_uri() + "?mode=ro" + ("&immutable=1" if access == "immutable" else "")
    return lambda: sqlite3.connect(uri, uri=True, timeout=60)


def _make_engine(settings: Settings) -> Engine:
    url = settings.db_url
    if settings.is_sqlite:
        path = _sqlite_path(url)
        access = "rw"
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(
                    f"cannot create {path.parent}: {err.strerror}",
                    "set LEDGER_HOME (or LEDGER_DB_URL) to a writable place",
                ) from None
            access = _sqlite_access(path)
        if access == "rw":
            engine = create_engine(url, connect_args={"timeout": 60})
        else:
            engine = create_engine(url, creator=_read_only_connector(path, access),
                                   execution_options={"ledger_read_only": True})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cursor = dbapi_conn.cursor()
            if access == "rw":
                cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA cache_size=-65536")  # 64 MiB, not 2: the indexes of 100,000 runs stay in memory
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # A writer takes the write lock at BEGIN, so two appenders cannot both read the same head.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, connect_args={"connect_timeout": 10}, pool_pre_ping=True)


def _error_detail(err: Exception) -> str:
    """The first line of what the database said (the driver's error inside SQLAlchemy's), else the error's type."""
    said = str(getattr(err, "orig", err)).strip()
    return said.splitlines()[0] if said else type(err).__name__


@contextmanager
def _explained_errors(where: str) -> Iterator[None]:
    """A damaged SQLite file or a failed connection as one line (DatabaseDamaged, StoreError); others as raised."""
    try:
        yield
    except exc.OperationalError as err:
        raise _explain_damage(err, where) or _explain_connection_error(err, where) from None
    except (exc.DatabaseError, sqlite3.DatabaseError) as err:  # iter_entries reads SQLite's own cursor
        if damage := _explain_damage(err, where):
            raise damage from None
        raise


def _explain_connection_error(err: Exception, where: str) -> StoreError:
    detail = _error_detail(err)
    if "locked" in detail:
        return StoreError(f"the database {where} is locked by another process ({detail})", "retry when it finishes")
    return StoreError(
        f"cannot open the database {where}: {detail}",
        "check LEDGER_DB_URL and that the database server is running",
    )


_DAMAGE_SIGNS = ("file is not a database", "database disk image is malformed", "malformed database schema")


def _explain_damage(err: Exception, where: str) -> DatabaseDamaged | None:
    """DatabaseDamaged when SQLite says its file is no database or has malformed pages; else None."""
    detail = _error_detail(err)
    if not any(sign in detail for sign in _DAMAGE_SIGNS):
        return None
    path = _sqlite_path(where) if where.startswith("sqlite") else None
    return DatabaseDamaged(f"database damaged: {path or where}: {detail}",
                           "restore it from a backup; nothing in it can be read or verified until then")


def _explain_write_error(err: Exception, where: str, opened: bool) -> StoreError:
    """What a write failed on: a damaged file, the connection (before the transaction began), or the write."""
    detail = _error_detail(err)
    if damage := _explain_damage(err, where):
        return damage
    if not opened or "locked" in detail:
        return _explain_connection_error(err, where)
    return StoreError(f"could not write to the database {where}: {detail}",
                      "nothing of this write was saved (it was rolled back); fix what the database refused and retry")


READ_ONLY_SQLSTATES = ("25006", "42501")  # PostgreSQL: read_only_sql_transaction, insufficient_privilege


def _read_only_error(where: str, why: str) -> ReadOnlyStore:
    return ReadOnlyStore(f"the ledger {where} is read-only ({why}): it can be listed, shown, verified and reported "
                         "on, not written", "to record, point LEDGER_HOME (or LEDGER_DB_URL) at a writable ledger")


# --- the ledger -----------------------------------------------------------------------------------------------


class Ledger:
    """One ledger database. Open it with `open_ledger()`."""

    def __init__(self, engine: Engine, settings: Settings):
        self.engine = engine
        self.settings = settings
        self.where = engine.url.render_as_string(hide_password=True)
        self.append_listeners: list = []
        """Called as listener(conn, entries) inside each append transaction, after the entries are inserted:
        whatever a listener writes (the MLflow outbox) commits or rolls back together with the entries."""

    # -- transactions --

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        with _explained_errors(self.where), self.engine.connect() as conn:
            yield conn

    @property
    def read_only(self) -> bool:
        """Opened read-only: a SQLite file or LEDGER_HOME that cannot be written (a backup, an evidence copy)."""
        return bool(self.engine.get_execution_options().get("ledger_read_only"))

    def require_writable(self) -> None:
        """Raise ReadOnlyStore (one line) for a ledger that cannot record, before a command starts work to record.
        PostgreSQL is asked whether this session may insert entries (a SELECT-only role, a read-only default)."""
        if self.read_only:
            raise _read_only_error(self.where, "read-only file or directory")
        if self.engine.dialect.name == "postgresql":
            with self._reading() as conn:
                # A new database has no entries table yet: then the question is whether this role may make it.
                read_only, may_insert = conn.execute(text(
                    "SELECT current_setting('transaction_read_only'), CASE WHEN to_regclass('entries') IS NULL "
                    "THEN has_schema_privilege(current_schema(), 'CREATE') "
                    "ELSE has_table_privilege('entries', 'INSERT') END")).one()
            if read_only == "on" or not may_insert:
                raise _read_only_error(self.where, "read-only transactions" if read_only == "on"
                                       else "no INSERT privilege on entries, or no CREATE for a new database")

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """A write transaction that holds the append lock until commit."""
        if self.read_only:
            raise _read_only_error(self.where, "read-only file or directory")
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
                raise _read_only_error(self.where, str(err.orig).strip().splitlines()[0]) from None
            raise _explain_write_error(err, self.where, opened) from None

    # -- appending --

    def _head(self, conn) -> tuple[int, str]:
        row = conn.execute(text("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1")).first()
        return (row[0], row[1]) if row else (0, ZERO_HASH)

    def _append(self, conn, items: list[tuple[str, str, dict]]) -> list[EntryRow]:
        """Insert entries for (kind, run_id, payload) items after the current head, in one transaction."""
        seq, prev = self._head(conn)
        rows = []
        for kind, run_id, payload in items:
            recorded_at = utc_now()
            body = build_entry_body(kind, run_id, payload, recorded_at)
            seq += 1
            entry_hash = chain_hash(prev, body)
            rows.append(EntryRow(seq, run_id, kind, body, prev, entry_hash, recorded_at))
            prev = entry_hash
        _insert_many(conn, "entries", ENTRY_COLUMNS, [row.__dict__ for row in rows])
        for listener in self.append_listeners:
            listener(conn, rows)
        return rows

    def append(self, record: RunRecord) -> RunRecord:
        """Record a launched run. Returns the record with its `chain`."""
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[RunRecord]) -> list[RunRecord]:
        """Record many launched runs in one transaction (imports, benchmarks): one lock, one commit."""
        records = list(records)
        with _collector_paused(), self._writing() as conn:
            payloads = [("run.launched", record.run_id, launch_payload(record)) for record in records]
            known = self._existing_run_ids(conn, [r.run_id for r in records])
            if known:
                raise UsageError(f"run {sorted(known)[0]} is already recorded", "a new run needs a new run_id")
            rows = self._append(conn, payloads)
            saved = [
                record.model_copy(update={"chain": _chain_ref(row)}) for record, row in zip(records, rows, strict=True)
            ]
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
        run_id = self.resolve(run_ref)
        with self._writing() as conn:
            self._append(conn, [(kind, run_id, payload)])
            record = self._fold(conn, run_id)
            self._save_projections(conn, [build_projection(record)], replace=True)
        return record

    def _existing_run_ids(self, conn, run_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            marks = ",".join(f":r{i}" for i in range(len(chunk)))
            result = conn.execute(
                text(f"SELECT run_id FROM runs WHERE run_id IN ({marks})"), {f"r{i}": r for i, r in enumerate(chunk)}
            )
            found.update(row[0] for row in result)
        return found

    def _save_projections(self, conn, projections: list[ProjectionRows], replace: bool) -> None:
        if not projections:
            return
        if replace:
            for table in ("runs", "params", "metrics", "data_objects"):
                conn.execute(
                    text(f"DELETE FROM {table} WHERE run_id = :run_id"), [{"run_id": p.run["run_id"]} for p in projections]
                )
        _insert_many(conn, "runs", RUN_COLUMNS, [p.run for p in projections])
        for table, cols in (
            ("params", ("run_id", "key", "value")),
            ("metrics", ("run_id", "key", "value")),
            ("data_objects", ("run_id", "channel", "key", "bucket", "version_id", "etag", "size")),
        ):
            _insert_many(conn, table, cols, [row for p in projections for row in getattr(p, table)])

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
        rows = conn.execute(
            text("SELECT seq, body, prev_hash, entry_hash FROM entries WHERE run_id = :r ORDER BY seq"), {"r": run_id}
        ).all()
        if not rows:
            raise NotFound(f"no run {run_id} in {self.where}", "list runs with: ledger runs")
        return fold_entries([tuple(row) for row in rows])

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

    # -- blobs --

    def put_blob(self, data: bytes) -> str:
        digest = sha256_hex(data)
        with self._writing() as conn:
            exists = conn.execute(text("SELECT 1 FROM blobs WHERE sha256 = :h"), {"h": digest}).first()
            if not exists:
                conn.execute(
                    text("INSERT INTO blobs (sha256, size, data) VALUES (:h, :n, :d)"),
                    {"h": digest, "n": len(data), "d": data},
                )
        return digest

    def get_blob(self, digest: str) -> bytes:
        with self._reading() as conn:
            row = conn.execute(text("SELECT data FROM blobs WHERE sha256 = :h"), {"h": digest}).first()
        if row is None:
            raise NotFound(f"no blob {digest} in {self.where}", "it was never stored, or the database was replaced")
        return bytes(row[0])

    # -- integrity --

    def iter_entries(self, low: int | None = None, high: int | None = None, batch: int = 5_000,
                     body_bytes: bool = False) -> Iterator[tuple]:
        """(seq, run_id, kind, body, prev_hash, entry_hash, recorded_at) in seq order, streamed; optionally only
        low <= seq <= high, and with each body as its UTF-8 bytes (what the hash is taken of, so verify need not
        decode and encode again). SQLite is read through its own cursor: verify reads every byte of the log
        through here, and SQLAlchemy's row handling would cost a third of its time."""
        body = "body"
        if body_bytes:
            body = "CAST(body AS BLOB)" if self.engine.dialect.name == "sqlite" else "convert_to(body, 'UTF8')"
        sql = f"SELECT seq, run_id, kind, {body}, prev_hash, entry_hash, recorded_at FROM entries"
        bounds = {"low": low if low is not None else -1, "high": high if high is not None else 2**62}
        sql += " WHERE seq >= :low AND seq <= :high ORDER BY seq"
        with self._reading() as conn:
            if self.engine.dialect.name == "sqlite":
                cursor = conn.connection.driver_connection.cursor()
                cursor.execute(sql.replace(":low", "?").replace(":high", "?"), (bounds["low"], bounds["high"]))
                while chunk := cursor.fetchmany(batch):
                    yield from chunk
                cursor.close()
                return
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(text(sql), bounds)
            for chunk in result.partitions(batch):
                yield from chunk

    def seq_range(self) -> tuple[int, int]:
        with self._reading() as conn:
            low, high = conn.execute(text("SELECT MIN(seq), MAX(seq) FROM entries")).one()
        return (low or 1, high or 0)

    def verify(self, check_projections: bool = True) -> VerifyReport:
        from ledger.store import integrity

        return integrity.verify(self, projections=check_projections)

    def rebuild(self) -> int:
        """Drop every projection row and derive them again from the log. Returns the number of runs."""
        from ledger.store import integrity

        projections = [build_projection(record) for record in integrity.fold_all(self.iter_entries())]
        with self._writing() as conn:
            for table in ("runs", "params", "metrics", "data_objects"):
                conn.execute(text(f"DELETE FROM {table}"))
            for start in range(0, len(projections), 5_000):
                self._save_projections(conn, projections[start : start + 5_000], replace=False)
        return len(projections)


@contextmanager
def _collector_paused():
    """A batch makes many short-lived objects and keeps them all: the cyclic garbage collector would scan them
    again and again for nothing (12-17% of a batch's time). It runs as usual afterwards."""
    import gc

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _insert_many(conn, table: str, columns: tuple[str, ...] | list[str], rows: list[dict]) -> None:
    """One executemany straight to the driver: text() binds each of thousands of rows one by one."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    conn.exec_driver_sql(sql, [tuple(row[c] for c in columns) for row in rows])


def _chain_ref(row: EntryRow) -> ChainRef:
    return ChainRef(seq=row.seq, entry_hash=row.entry_hash, prev_hash=row.prev_hash)


def open_ledger(db_url: str | None = None, *, check_schema: bool = True, settings: Settings | None = None) -> Ledger:
    """Open the ledger at LEDGER_DB_URL (or the given URL); a new database is created at the newest schema."""
    settings = settings or load_settings(**({"db_url": db_url} if db_url else {}))
    engine = _make_engine(settings)
    ledger = Ledger(engine, settings)
    mlflow_sink.attach_mirror(ledger)  # the MLflow outbox: a listener on every append
    if check_schema:
        with _explained_errors(ledger.where):
            if ledger.read_only:  # nothing may be created or migrated on read-only media
                migrate.require_current(engine, ledger.where)
                return ledger
            migrate.ensure_current(engine, ledger.where, _lock_path(settings))
    return ledger


def _lock_path(settings: Settings) -> Path | None:
    path = _sqlite_path(settings.db_url) if settings.is_sqlite else None
    return path.with_name(path.name + ".migrate-lock") if path else None


def upgrade_database(db_url: str | None = None) -> tuple[str | None, str, int]:
    """`ledger db upgrade`: migrate to head, then rebuild projections from the log. (before, after, runs)."""
    settings = load_settings(**({"db_url": db_url} if db_url else {}))
    ledger = open_ledger(settings=settings, check_schema=False)
    ledger.require_writable()
    with _explained_errors(ledger.where):
        before, after = migrate.upgrade(ledger.engine, "head", _lock_path(settings))
    runs = ledger.rebuild() if before != after else 0
    return before, after, runs

