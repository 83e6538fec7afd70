"""Reading the log: entries streamed in seq order, by seq, by run, and the records they fold into.

`iter_entries` is verify's hot path; the others answer audit reports and anchors a few queries at a time however
many runs they name (`IN` lists of at most 500).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import text

from ledger.errors import NotFound
from ledger.record import RunRecord, fold_entries

CHUNK = 500  # values in one IN (...) list


def chunks(items: list, size: int = CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def in_clause(prefix: str, values: list) -> tuple[str, dict]:
    """(':p0,:p1,...', {p0: v0, ...}) for `IN (...)`."""
    marks = ",".join(f":{prefix}{i}" for i in range(len(values)))
    return marks, {f"{prefix}{i}": v for i, v in enumerate(values)}


def iter_entries(conn, low: int | None = None, high: int | None = None, *, batch: int = 5_000,
                 body_bytes: bool = False) -> Iterator[tuple]:
    """(seq, run_id, kind, body, prev_hash, entry_hash, recorded_at) in seq order, streamed; optionally only
    low <= seq <= high, and with each body as its UTF-8 bytes (what the hash is taken of, so verify need not
    decode and encode again). SQLite is read through its own cursor: verify reads every byte of the log
    through here, and SQLAlchemy's row handling would cost a third of its time."""
    dialect = conn.dialect.name
    body = "body"
    if body_bytes:
        body = "CAST(body AS BLOB)" if dialect == "sqlite" else "convert_to(body, 'UTF8')"
    sql = (f"SELECT seq, run_id, kind, {body}, prev_hash, entry_hash, recorded_at FROM entries "
           "WHERE seq >= :low AND seq <= :high ORDER BY seq")
    bounds = {"low": low if low is not None else -1, "high": high if high is not None else 2**62}
    if dialect == "sqlite":
        cursor = conn.connection.driver_connection.cursor()
        cursor.execute(sql.replace(":low", "?").replace(":high", "?"), (bounds["low"], bounds["high"]))
        while chunk := cursor.fetchmany(batch):
            yield from chunk
        cursor.close()
        return
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(text(sql), bounds)
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
    entry_hash} in seq order; a few queries however many runs."""
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
                              "prev_hash": prev_hash, "entry_hash": entry_hash})
    records = []
    for run_id in run_ids:
        if run_id not in by_run:
            raise NotFound(f"no entries for run {run_id} in {book.where}", "check the database with: ledger verify")
        records.append(fold_entries(sorted(by_run[run_id])))
    return records, sorted(found, key=lambda e: e["seq"])
