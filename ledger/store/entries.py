"""Reading the log: entries streamed in seq order, by seq, by run, and the records they fold into.

`iter_entries` is verify's hot path; the others answer audit reports and anchors a few queries at a time however
many runs they name (`IN` lists of at most 500).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import text

from ledger.errors import NotFound
from ledger.record import RunRecord, fold_entries, inflate_record, plan_inflation
from ledger.store.blobs import read_blobs
from ledger.store.engine import chunks, in_clause


def iter_entries(conn, low: int | None = None, high: int | None = None, *, batch: int = 5_000,
                 body_bytes: bool = False, with_leaf: bool = False) -> Iterator[tuple]:
    """(seq, run_id, kind, body, prev_hash, entry_hash, recorded_at) in seq order, streamed; optionally only
    low <= seq <= high, with each body as its UTF-8 bytes (what the hashes are taken of, so verify need not
    decode and encode again), and with the entry's stored Merkle leaf (None where there is none) last."""
    body = "e.body"
    if body_bytes:
        body = "CAST(e.body AS BLOB)" if conn.dialect.name == "sqlite" else "convert_to(e.body, 'UTF8')"
    leaf = ", t.hash" if with_leaf else ""
    join = " LEFT JOIN tree_nodes t ON t.level = 0 AND t.idx = e.seq - 1" if with_leaf else ""
    sql = (f"SELECT e.seq, e.run_id, e.kind, {body}, e.prev_hash, e.entry_hash, e.recorded_at{leaf} "
           f"FROM entries e{join} WHERE e.seq >= :low AND e.seq <= :high ORDER BY e.seq")
    bounds = {"low": low if low is not None else -1, "high": high if high is not None else 2**62}
    yield from stream(conn, sql, bounds, batch)


def stream(conn, sql: str, binds: dict[str, Any], batch: int = 5_000) -> Iterator[tuple]:
    """The rows of a query, fetched `batch` at a time: memory stays flat however many there are. SQLite is read
    through its own cursor (verify reads every byte of the log this way, and SQLAlchemy's row handling would cost
    a third of its time); PostgreSQL through a server-side cursor."""
    if conn.dialect.name == "sqlite":
        names = re.findall(r":(\w+)", sql)
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute(re.sub(r":\w+", "?", sql), [binds[name] for name in names])
        while chunk := cursor.fetchmany(batch):
            yield from chunk
        cursor.close()
        return
    # Options on the statement: Connection.execution_options() would change the connection for what follows.
    result = conn.execute(text(sql), binds, execution_options={"stream_results": True, "yield_per": batch})
    for chunk in result.partitions(batch):
        yield from chunk


def entries_by_seq(book, seqs: Iterable[int]) -> dict[int, dict[str, Any]]:
    """{seq: {run_id, kind, body, prev_hash, entry_hash, recorded_at}} of the entries stored now at these seqs."""
    found: dict[int, dict[str, Any]] = {}
    with book._reading() as conn:
        for chunk in chunks(sorted(set(seqs))):
            marks, binds = in_clause("s", chunk)
            rows = conn.execute(text("SELECT seq, run_id, kind, body, prev_hash, entry_hash, recorded_at FROM entries "
                                     f"WHERE seq IN ({marks})"), binds)
            for seq, run_id, kind, body, prev_hash, entry_hash, recorded_at in rows:
                found[seq] = {"run_id": run_id, "kind": kind, "body": body, "prev_hash": prev_hash,
                              "entry_hash": entry_hash, "recorded_at": recorded_at}
    return found


def entries_after(book, after_seq: int, run_ids: Iterable[str]) -> list[dict[str, Any]]:
    """The entries of these runs appended after `after_seq`, in seq order: {seq, run_id, kind, recorded_at}."""
    newer: list[dict[str, Any]] = []
    with book._reading() as conn:
        for chunk in chunks(sorted(set(run_ids))):
            marks, binds = in_clause("r", chunk)
            rows = conn.execute(text("SELECT seq, run_id, kind, recorded_at FROM entries WHERE seq > :after "
                                     f"AND run_id IN ({marks}) ORDER BY seq"), {**binds, "after": after_seq})
            newer += [{"seq": s, "run_id": r, "kind": k, "recorded_at": t} for s, r, k, t in rows]
    return sorted(newer, key=lambda e: e["seq"])


def records_with_entries(book, run_ids: list[str]) -> tuple[list[RunRecord], list[dict[str, Any]]]:
    """These runs' records, folded from the log, and their entries {seq, run_id, kind, recorded_at, prev_hash,
    entry_hash, body} in seq order; a few queries however many runs."""
    by_run: dict[str, list[tuple]] = defaultdict(list)
    found: list[dict[str, Any]] = []
    with book._reading() as conn:
        for chunk in chunks(run_ids):
            marks, binds = in_clause("r", chunk)
            rows = conn.execute(text("SELECT seq, run_id, kind, body, prev_hash, entry_hash, recorded_at FROM entries "
                                     f"WHERE run_id IN ({marks}) ORDER BY seq"), binds)
            for seq, run_id, kind, body, prev_hash, entry_hash, recorded_at in rows:
                by_run[run_id].append((seq, body, prev_hash, entry_hash))
                found.append({"seq": seq, "run_id": run_id, "kind": kind, "recorded_at": recorded_at,
                              "prev_hash": prev_hash, "entry_hash": entry_hash, "body": body})
    records = []
    for run_id in run_ids:
        if run_id not in by_run:
            raise NotFound(f"no entries for run {run_id} in {book.where}", "check the database with: ledger verify")
        records.append(fold_entries(sorted(by_run[run_id])))
    wanted = [digest for record in records for digest in plan_inflation(record)]
    if wanted:
        with book._reading() as conn:
            found_blobs = read_blobs(conn, wanted)
        records = [inflate_record(record, found_blobs) for record in records]
    return records, sorted(found, key=lambda e: e["seq"])


def fold_runs(conn) -> Iterator[RunRecord]:
    """Every run's current record in run id order, streamed a run at a time (memory bounded by the largest run, not
    the log), with its data channels' manifests put back from their blobs: what its projection rows need."""
    sql = "SELECT run_id, seq, body, prev_hash, entry_hash FROM entries ORDER BY run_id, seq"
    for _run_id, group in groupby(stream(conn, sql, {}), key=itemgetter(0)):
        try:
            record = fold_entries([row[1:] for row in group])
        except ValueError:
            continue  # facts without a launch: verify reports them
        wanted = plan_inflation(record, ("objects",))
        yield inflate_record(record, read_blobs(conn, wanted)) if wanted else record
