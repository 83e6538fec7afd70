"""`ledger verify`: recompute the chain, re-hash every blob a body names, then check every projection row
against the log.

The chain check reads each entry once and hashes it; it never parses a body (the canonical form lets us check
the kind, run id and time columns against the body with string comparisons), so it runs at hashing speed, and
on a large log it runs on every core, one seq range each.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import text

from ledger.config import load_settings
from ledger.record import BLOB_MARKS, ZERO_HASH, plan_blob_refs, utc_now
from ledger.store.engine import explained_errors, make_engine
from ledger.store.entries import iter_entries
from ledger.store.projection import PROJECTION_TABLES, RUN_COLUMNS, build_projection, fold_all

MAX_PROBLEMS = 20  # a broken log is named by its first problems, not listed whole
PARALLEL_FROM = 200_000  # below this many entries, starting worker processes costs more than it saves


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


@dataclass
class Segment:
    """What checking one stretch of the chain found; segments are checked apart and joined at their ends."""

    count: int = 0
    first_seq: int | None = None
    first_prev: str | None = None
    first_run_id: str | None = None
    last_seq: int = 0
    last_hash: str = ZERO_HASH
    problems: list[dict] = field(default_factory=list)
    blob_refs: list[tuple] = field(default_factory=list)  # (seq, run_id, what, sha256) of each blob a body names


# A body that names a blob holds one of these; only such bodies are parsed, so verify stays at hashing speed.
_BLOB_MARKS = BLOB_MARKS


def check_segment(entries: Iterable[tuple], expected_seq: int = 1, prev: str | None = ZERO_HASH) -> Segment:
    """Pure: check entries in seq order, from `expected_seq`; `prev` is the hash the first entry must follow, or
    None to take the first entry's prev_hash on trust (the caller checks it against the segment before).
    Hashing is inlined (entry_hash = sha256(prev_hash + sha256(body))): this loop is verify's hot path."""
    sha256 = hashlib.sha256
    segment = Segment()
    problems = segment.problems

    def problem(seq, run_id, what):
        if len(problems) < MAX_PROBLEMS:
            problems.append({"seq": seq, "run_id": run_id, "problem": what})

    for seq, run_id, kind, body, prev_hash, entry_hash, recorded_at in entries:
        if segment.count == 0:
            segment.first_seq, segment.first_prev, segment.first_run_id = seq, prev_hash, run_id
            if prev is None:
                prev = prev_hash
        segment.count += 1
        if seq != expected_seq:
            problem(seq, run_id, f"entry {expected_seq} is missing: entry {seq} follows entry {expected_seq - 1}"
                    if seq > expected_seq else f"entry {seq} is out of order after entry {expected_seq - 1}")
        elif prev_hash != prev:
            problem(seq, run_id, f"prev_hash does not match the hash of entry {seq - 1}: entries moved or replaced")
        data = body if isinstance(body, bytes) else body.encode()
        if sha256((prev_hash + sha256(data).hexdigest()).encode()).hexdigest() != entry_hash:
            problem(seq, run_id, "entry_hash does not match its body: the body or the hash was changed")
        elif not (data.startswith(f'{{"kind":"{kind}",'.encode())
                  and data.endswith(f',"recorded_at":"{recorded_at}","run_id":"{run_id}"}}'.encode())):
            problem(seq, run_id, "the kind, run_id or recorded_at column disagrees with the entry's body")
        if kind == "run.launched" and any(mark in data for mark in _BLOB_MARKS):
            segment.blob_refs += _blob_refs(seq, run_id, data)
        prev, expected_seq = entry_hash, seq + 1
    segment.last_seq, segment.last_hash = expected_seq - 1, prev or ZERO_HASH
    return segment


def _blob_refs(seq: int, run_id: str, data: bytes) -> list[tuple]:
    import json

    try:
        payload = json.loads(data)["payload"]
    except (ValueError, KeyError, TypeError):
        return []  # a body that is not an entry: the hash check names it
    return [(seq, run_id, what, sha256) for what, sha256 in plan_blob_refs(payload)]


def check_blobs(book, refs: list[tuple]) -> list[dict]:
    """Each blob an entry names, read from the `blobs` table and hashed again: missing or changed is a problem."""
    problems = []
    for seq, run_id, what, digest in sorted(refs):
        with book._reading() as conn:
            row = conn.execute(text("SELECT data FROM blobs WHERE sha256 = :h"), {"h": digest}).first()
        if row is None:
            problems.append({"seq": seq, "run_id": run_id, "problem": f"the {what} blob {digest[:16]}… that the "
                             "entry names is missing from the blobs table"})
        elif hashlib.sha256(bytes(row[0])).hexdigest() != digest:
            problems.append({"seq": seq, "run_id": run_id, "problem": f"the {what} blob {digest[:16]}… does not "
                             "hash to the digest the entry names: its bytes were changed"})
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems


def join_segments(segments: list[Segment]) -> tuple[int, int, str, list[dict]]:
    """Pure: (count, head seq, head hash, problems) of consecutive segments, checking where each meets the last."""
    problems: list[dict] = []
    before: Segment | None = None
    for segment in (s for s in segments if s.count):
        if before is not None:
            if segment.first_seq != before.last_seq + 1:
                problems.append({"seq": segment.first_seq, "run_id": segment.first_run_id, "problem":
                                 f"entry {before.last_seq + 1} is missing: entry {segment.first_seq} follows entry "
                                 f"{before.last_seq}"})
            elif segment.first_prev != before.last_hash:
                problems.append({"seq": segment.first_seq, "run_id": segment.first_run_id, "problem":
                                 f"prev_hash does not match the hash of entry {before.last_seq}: entries moved or "
                                 "replaced"})
        problems += segment.problems
        before = segment
    problems.sort(key=lambda p: p["seq"])
    head = before or Segment()
    return sum(s.count for s in segments), head.last_seq, head.last_hash, problems[:MAX_PROBLEMS]


def check_chain(entries: Iterable[tuple]) -> tuple[int, int, str, list[dict]]:
    """Pure: (count, head seq, head hash, problems) for the whole log in seq order."""
    return join_segments([check_segment(entries)])


def _check_range(db_url: str, low: int, high: int, first: bool) -> Segment:
    """In a worker process: check the entries with low <= seq <= high, through a connection of its own."""
    engine = make_engine(load_settings(db_url=db_url))
    try:
        with explained_errors(db_url), engine.connect() as conn:
            return check_segment(iter_entries(conn, low, high, body_bytes=True), expected_seq=low,
                                 prev=ZERO_HASH if first else None)
    finally:
        engine.dispose()


def check_chain_parallel(book, workers: int | None = None,
                         blob_refs: list | None = None) -> tuple[int, int, str, list[dict]]:
    """The chain check split by seq range across processes, one a core: every entry carries its prev_hash, so
    each stretch is checked on its own and the stretches are joined at their ends. The blobs the bodies name
    are added to `blob_refs` when it is given."""
    low, high = book.seq_range()
    workers = workers or os.cpu_count() or 1
    if high - low + 1 < PARALLEL_FROM or workers < 2:
        segment = check_segment(book.iter_entries(body_bytes=True))
        if blob_refs is not None:
            blob_refs += segment.blob_refs
        return join_segments([segment])
    import multiprocessing

    step = (high - low + 1 + workers - 1) // workers
    bounds = [(start, min(start + step - 1, high)) for start in range(low, high + 1, step)]
    url = book.engine.url.render_as_string(hide_password=False)
    with multiprocessing.get_context("fork").Pool(len(bounds)) as pool:
        segments = pool.starmap(_check_range, [(url, a, b, a == low) for a, b in bounds])
    if blob_refs is not None:
        blob_refs += [ref for segment in segments for ref in segment.blob_refs]
    if low != 1:  # the first entries were removed: the chain must start at seq 1 after 64 zeros
        segments[0].problems.insert(0, {"seq": low, "run_id": segments[0].first_run_id,
                                        "problem": f"entry 1 is missing: entry {low} follows entry 0"})
    return join_segments(segments)


def _rows(conn, sql: str) -> dict[str, list[tuple]]:
    grouped: dict[str, list[tuple]] = defaultdict(list)
    for row in conn.execute(text(sql)):
        grouped[row[0]].append(tuple(row))
    return grouped


def check_projections(book) -> list[dict]:
    """Compare each projection table with what the log implies; one problem per run that disagrees."""
    expected = {r.run_id: build_projection(r) for r in fold_all(book.iter_entries())}
    with book._reading() as conn:
        actual_runs = _rows(conn, f"SELECT {', '.join(RUN_COLUMNS)} FROM runs")
        actual = {table: _rows(conn, f"SELECT {', '.join(columns)} FROM {table}")
                  for table, columns in PROJECTION_TABLES.items()}
    problems = []
    columns = PROJECTION_TABLES
    for run_id in sorted(set(expected) | set(actual_runs) | {k for t in actual.values() for k in t}):
        want = expected.get(run_id)
        if want is None:
            problems.append({"seq": None, "run_id": run_id,
                             "problem": "projection rows for a run that the log does not have"})
            continue
        seq = want.run["last_seq"]
        have_run = actual_runs.get(run_id)
        want_run = tuple(want.run[c] for c in RUN_COLUMNS)
        if not have_run or have_run[0] != want_run:
            changed = [c for c, a, b in zip(RUN_COLUMNS, have_run[0] if have_run else [None] * len(RUN_COLUMNS),
                                           want_run) if a != b]
            problems.append({"seq": seq, "run_id": run_id,
                             "problem": f"the runs row disagrees with the log in: {', '.join(changed)}"})
            continue
        for table, cols in columns.items():
            want_rows = sorted(tuple(r[c] for c in cols) for r in getattr(want, table))
            if sorted(actual[table].get(run_id, [])) != want_rows:
                problems.append({"seq": seq, "run_id": run_id,
                                 "problem": f"the {table} rows disagree with the log"})
                break
    return problems


# The database's own refusal to change or remove an entry, as migration 0001 creates it: name -> definition.
SQLITE_GUARDS = {
    f"entries_no_{action.lower()}": f"CREATE TRIGGER entries_no_{action.lower()} BEFORE {action} ON entries "
                                    "BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END"
    for action in ("UPDATE", "DELETE")
}
POSTGRES_GUARD = "entries_append_only"
POSTGRES_GUARD_BODY = "BEGIN RAISE EXCEPTION 'ledger entries are append-only'; END"
_POSTGRES_GUARD_DEFINITION = re.compile(
    r"CREATE TRIGGER entries_append_only BEFORE (DELETE OR UPDATE|UPDATE OR DELETE) ON (\S+\.)?entries "
    r"FOR EACH ROW EXECUTE (FUNCTION|PROCEDURE) (\S+\.)?ledger_entries_append_only\(\)")


def _squeeze(sql: str | None) -> str:
    return " ".join((sql or "").split()).rstrip(";").strip().lower()


def plan_guard_problems(dialect: str, found: dict[str, dict]) -> list[dict]:
    """Pure: a finding (kind "guard") for each append-only trigger that is missing, disabled or no longer refuses.

    `found` maps trigger name -> {"definition", "enabled", "function_body"} as the database describes it now
    (sqlite_master on SQLite; pg_trigger and pg_proc on PostgreSQL). Without the guards the chain can still be
    checked, but the database no longer refuses an UPDATE or DELETE of an entry: someone removed them."""
    problems = []

    def problem(name: str, what: str) -> None:
        problems.append({"seq": None, "run_id": None, "kind": "guard", "guard": name,
                         "problem": f"the append-only guard {name} {what}: the database no longer refuses "
                                    "changes to the log"})

    if dialect == "sqlite":
        for name, definition in SQLITE_GUARDS.items():
            trigger = found.get(name)
            if trigger is None:
                problem(name, "is missing (its trigger was dropped)")
            elif _squeeze(trigger.get("definition")) != _squeeze(definition):
                problem(name, "was replaced by a trigger that does not refuse every change")
        return problems
    trigger = found.get(POSTGRES_GUARD)
    if trigger is None:
        problem(POSTGRES_GUARD, "is missing (its trigger was dropped)")
    elif not trigger.get("enabled"):
        problem(POSTGRES_GUARD, "does not fire in ordinary sessions (ALTER TABLE entries DISABLE TRIGGER, or ENABLE "
                                "REPLICA TRIGGER)")
    elif not _POSTGRES_GUARD_DEFINITION.fullmatch(" ".join((trigger.get("definition") or "").split())):
        problem(POSTGRES_GUARD, "was replaced by a trigger that does not refuse every change")
    elif _squeeze(trigger.get("function_body")) != _squeeze(POSTGRES_GUARD_BODY):
        problem(POSTGRES_GUARD, "calls a function that no longer raises")
    return problems


def read_guards(book) -> dict[str, dict]:
    """The triggers on the entries table as the database describes them now."""
    with book._reading() as conn:
        if conn.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                     "AND tbl_name = 'entries'"))
            return {name: {"definition": sql, "enabled": True} for name, sql in rows}
        rows = conn.execute(text(
            "SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled IN ('O', 'A'), p.prosrc FROM pg_trigger t "
            "JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgrelid = to_regclass('entries') AND NOT t.tgisinternal"))
        return {name: {"definition": definition, "enabled": enabled, "function_body": body}
                for name, definition, enabled, body in rows}


def check_guards(book) -> list[dict]:
    return plan_guard_problems(book.engine.dialect.name, read_guards(book))


def verify(book, projections: bool = True) -> VerifyReport:
    refs: list[tuple] = []
    count, head_seq, head_hash, problems = check_chain_parallel(book, blob_refs=refs)
    problems = sorted(problems + check_blobs(book, refs), key=lambda p: p["seq"] or 0)[:MAX_PROBLEMS]
    if projections and not problems:
        problems = check_projections(book)
    problems = problems + check_guards(book)  # beside the chain: whatever else was found
    return VerifyReport(ok=not problems, entries=count, head_seq=head_seq, head_hash=head_hash,
                        verified_at=utc_now(), problems=problems)

