"""The database underneath the ledger: engines for SQLite and PostgreSQL, read-only access, and each database
error said in one line (a damaged file, a failed connection, a refused write).

Every module of `ledger.store` opens connections through here; nothing outside the store sees an engine.
"""

from __future__ import annotations

import fcntl
import gc
import itertools
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, exc, text

from ledger.config import Settings
from ledger.errors import DatabaseDamaged, ReadOnlyStore, StoreError


def sqlite_path(url: str) -> Path | None:
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


def sqlite_access(path: Path) -> str:
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


def read_only_connector(path: Path, access: str):
    """sqlite3 connections that cannot write: a read-only file or LEDGER_HOME (a backup, an evidence copy)."""
    uri = path.resolve().as_uri() + "?mode=ro" + ("&immutable=1" if access == "immutable" else "")
    return lambda: sqlite3.connect(uri, uri=True, timeout=60)


def make_engine(settings: Settings) -> Engine:
    url = settings.db_url
    if settings.is_sqlite:
        path = sqlite_path(url)
        access = "rw"
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(
                    f"cannot create {path.parent}: {err.strerror}",
                    "set LEDGER_HOME (or LEDGER_DB_URL) to a writable place",
                ) from None
            access = sqlite_access(path)
        if access == "rw":
            engine = create_engine(url, connect_args={"timeout": 60})
        else:
            engine = create_engine(url, creator=read_only_connector(path, access),
                                   execution_options={"ledger_read_only": True})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
            cursor = dbapi_conn.cursor()
            if access == "rw":
                cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA cache_size=-{QUERY_CACHE_KIB}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            # A writer takes the write lock at BEGIN, so two appenders cannot both read the same head.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "BEGIN")

        return engine
    if url.startswith("postgresql://"):
        url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, connect_args={"connect_timeout": 10}, pool_pre_ping=True)


def error_detail(err: Exception) -> str:
    """The first line of what the database said (the driver's error inside SQLAlchemy's), else the error's type."""
    said = str(getattr(err, "orig", err)).strip()
    return said.splitlines()[0] if said else type(err).__name__


@contextmanager
def explained_errors(where: str) -> Iterator[None]:
    """A damaged SQLite file or a failed connection as one line (DatabaseDamaged, StoreError); others as raised."""
    try:
        yield
    except exc.OperationalError as err:
        raise explain_damage(err, where) or explain_connection_error(err, where) from None
    except (exc.DatabaseError, sqlite3.DatabaseError) as err:  # iter_entries reads SQLite's own cursor
        if damage := explain_damage(err, where):
            raise damage from None
        raise


def explain_connection_error(err: Exception, where: str) -> StoreError:
    detail = error_detail(err)
    if "locked" in detail:
        return StoreError(f"the database {where} is locked by another process ({detail})", "retry when it finishes")
    return StoreError(
        f"cannot open the database {where}: {detail}",
        "check LEDGER_DB_URL and that the database server is running",
    )


_DAMAGE_SIGNS = ("file is not a database", "database disk image is malformed", "malformed database schema")


def explain_damage(err: Exception, where: str) -> DatabaseDamaged | None:
    """DatabaseDamaged when SQLite says its file is no database or has malformed pages; else None."""
    detail = error_detail(err)
    if not any(sign in detail for sign in _DAMAGE_SIGNS):
        return None
    path = sqlite_path(where) if where.startswith("sqlite") else None
    return DatabaseDamaged(f"database damaged: {path or where}: {detail}",
                           "restore it from a backup; nothing in it can be read or verified until then")


def explain_write_error(err: Exception, where: str, opened: bool) -> StoreError:
    """What a write failed on: a damaged file, the connection (before the transaction began), or the write."""
    detail = error_detail(err)
    if damage := explain_damage(err, where):
        return damage
    if not opened or "locked" in detail:
        return explain_connection_error(err, where)
    return StoreError(f"could not write to the database {where}: {detail}",
                      "nothing of this write was saved (it was rolled back); fix what the database refused and retry")


READ_ONLY_SQLSTATES = ("25006", "42501")  # PostgreSQL: read_only_sql_transaction, insufficient_privilege


def read_only_error(where: str, why: str) -> ReadOnlyStore:
    return ReadOnlyStore(f"the ledger {where} is read-only ({why}): it can be listed, shown, verified and reported "
                         "on, not written", "to record, point LEDGER_HOME (or LEDGER_DB_URL) at a writable ledger")


@contextmanager
def collector_paused():
    """A batch makes many short-lived objects and keeps them all: the cyclic garbage collector would scan them
    again and again for nothing (12-17% of a batch's time). It runs as usual afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def insert_many(conn, table: str, columns: tuple[str, ...] | list[str], rows: Iterable[dict]) -> None:
    """executemany straight to the driver (text() binds each of thousands of rows one by one), 10,000 rows at a
    time: rows made as they are read (a million data objects) are never all held at once."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    for batch in chunks((tuple(row[c] for c in columns) for row in rows), 10_000):
        conn.exec_driver_sql(sql, batch)



def lock_path(settings: Settings) -> Path | None:
    """The file that serializes migrations of a SQLite ledger (PostgreSQL locks inside the database)."""
    path = sqlite_path(settings.db_url) if settings.is_sqlite else None
    return path.with_name(path.name + ".migrate-lock") if path else None


@contextmanager
def process_lock(engine: Engine, name: str, lock_file: Path | None) -> Iterator[None]:
    """One holder at a time across processes: a session advisory lock named `name` on PostgreSQL, a file lock on
    `lock_file` (beside a SQLite file) otherwise; nothing to lock for a database without a file."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(hashtext(:name))"), {"name": name})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(hashtext(:name))"), {"name": name})
                conn.commit()
    elif lock_file is not None:
        with open(lock_file, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


CHUNK = 500  # values in one IN (...) list


# SQLite's page cache a connection keeps: 64 MiB for queries (the indexes of 100,000 runs stay in memory, not 2), 4
# for one pass over a table (a scan reads each page once; verify holds several, which would otherwise each grow
# to 64 MiB with the log).
QUERY_CACHE_KIB, SCAN_CACHE_KIB = 65_536, 4_096


@contextmanager
def scan_cache(conn) -> Iterator[None]:
    """A connection with a small page cache while it scans, given back with the query cache."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql(f"PRAGMA cache_size=-{SCAN_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size=-{QUERY_CACHE_KIB}")


def chunks(items: Iterable, size: int = CHUNK) -> Iterator[list]:
    """Lists of `size` items (the last shorter), taken from any iterable as they come."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def in_clause(prefix: str, values: list) -> tuple[str, dict]:
    """(':p0,:p1,...', {p0: v0, ...}) for `IN (...)`."""
    marks = ",".join(f":{prefix}{i}" for i in range(len(values)))
    return marks, {f"{prefix}{i}": v for i, v in enumerate(values)}
