"""`ledger verify`: the hash chain, the Merkle tree, every blob an entry names and every projection row, checked
against the log, in memory that does not grow with it.

Full (`since=None`): every entry is streamed in seq order once, in one process a core for a long log. Each entry's
hash is its body's and its predecessor's; its Merkle leaf (RFC 9162) is its body's; the blobs it names hash to
the digests it names. Then the tree's interior nodes are checked level by level against their children, and the
projections run by run, merging sorted streams of entries and projection rows.

From a verified head (`since`): the tree of the first `since.size` entries must still have the root that was
verified then, and the tree now must extend it (an RFC 9162 consistency proof); then only the entries after it,
the tree nodes they completed, the blobs they name and the runs they touched are checked. What that does not
check again (bodies of older entries that nothing else changed) is what `ledger verify --full` is for.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from sqlalchemy import text

from ledger import merkle
from ledger.config import load_settings
from ledger.record import (
    BLOB_MARKS,
    ZERO_HASH,
    fold_entries,
    inflate_record,
    plan_blob_refs,
    plan_inflation,
    sha256_hex,
    utc_now,
)
from ledger.store.blobs import decode_blob, read_blobs
from ledger.store.engine import chunks, explained_errors, in_clause, make_engine, scan_cache
from ledger.store.entries import entries_by_seq, iter_entries, stream
from ledger.store.projection import PROJECTION_TABLES, RUN_COLUMNS, build_projection

MAX_PROBLEMS = 20  # a broken log is named by its first problems, not listed whole
PARALLEL_FROM = 200_000  # below this many entries, starting worker processes costs more than it saves
BLOB_BATCH = 1_000  # digests checked in one query
CHECKED_LIMIT = 50_000  # digests remembered as checked (a package list many runs share is hashed once per window)


@dataclass
class VerifyReport:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    verified_at: str
    problems: list[dict] = field(default_factory=list)
    scope: str = "full"  # "full" | "incremental": from a verified head, the entries after it
    checked_from: int = 1  # the first entry whose body was hashed again
    root_hash: str | None = None  # the Merkle root of the whole log, as verified (hex)

    @property
    def first_bad(self) -> dict | None:
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": {"seq": self.head_seq, "entry_hash": self.head_hash},
            "root_hash": self.root_hash,
            "scope": self.scope,
            "checked_from": self.checked_from,
            "verified_at": self.verified_at,
            "first_bad": self.first_bad,
            "problems": self.problems,
        }


@dataclass(frozen=True)
class VerifiedHead:
    """A head that a verify found intact: the log's size then, its last entry's hash, the Merkle root then."""

    size: int
    head_hash: str
    root_hash: str


class Problems(list):
    """The problems found, at most MAX_PROBLEMS of them."""

    def add(self, seq: int | None, run_id: str | None, what: str, **extra) -> None:
        if len(self) < MAX_PROBLEMS:
            self.append({"seq": seq, "run_id": run_id, "problem": what, **extra})


@dataclass
class Segment:
    """What checking one stretch of the chain found; segments are checked apart and joined at their ends."""

    count: int = 0
    first_seq: int | None = None
    first_prev: str | None = None
    first_run_id: str | None = None
    last_seq: int = 0
    last_hash: str = ZERO_HASH
    problems: list[dict] = field(default_factory=Problems)


@contextmanager
def _scanning(book) -> Iterator[Any]:
    """A reading connection for a pass over the log: its page cache small, so that verify's memory does not grow
    with the log however many it holds at once."""
    with book._reading() as conn, scan_cache(conn):
        yield conn


# --- the chain, the leaves and the blobs: one pass over the entries ----------------------------------------------


class BlobChecker:
    """Re-hashes the blobs entries name, a batch of digests at a time; each digest once per checker."""

    def __init__(self, conn, problems: Problems):
        self.conn, self.problems = conn, problems
        self.checked: set[str] = set()
        self.pending: dict[str, tuple[int, str, str]] = {}  # digest -> (seq, run_id, what) of the first to name it

    def add(self, seq: int, run_id: str, data: bytes) -> None:
        try:
            payload = json.loads(data)["payload"]
        except (ValueError, KeyError, TypeError):
            return  # a body that is not an entry: the hash check names it
        for what, digest in plan_blob_refs(payload):
            if digest not in self.checked:
                self.pending.setdefault(digest, (seq, run_id, what))
        if len(self.pending) >= BLOB_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.conn is None:
            return
        stored = {}
        for chunk in chunks(sorted(self.pending)):
            marks, binds = in_clause("h", chunk)
            stored.update({digest: (bytes(data), encoding) for digest, data, encoding in self.conn.execute(
                text(f"SELECT sha256, data, encoding FROM blobs WHERE sha256 IN ({marks})"), binds)})
        for digest, (seq, run_id, what) in sorted(self.pending.items(), key=lambda item: item[1][0]):
            if digest not in stored:
                self.problems.add(seq, run_id, f"the {what} blob {digest[:16]}… that the entry names is missing "
                                               "from the blobs table")
            elif _blob_sha256(*stored[digest]) != digest:
                self.problems.add(seq, run_id, f"the {what} blob {digest[:16]}… does not hash to the digest the "
                                               "entry names: its bytes were changed")
        if len(self.checked) > CHECKED_LIMIT:
            self.checked.clear()  # flat memory: a blob named again after this is hashed again
        self.checked.update(self.pending)
        self.pending.clear()


def _blob_sha256(stored: bytes, encoding: str | None) -> str | None:
    try:
        return sha256_hex(decode_blob(stored, encoding))
    except (zlib.error, ValueError):
        return None  # stored bytes that do not decode are changed bytes


def check_segment(entries: Iterable[tuple], expected_seq: int = 1, prev: str | None = ZERO_HASH,
                  blob_conn=None) -> Segment:
    """Check entries in seq order, from `expected_seq`; `prev` is the hash the first entry must follow, or None to
    take the first entry's prev_hash on trust (the caller checks it against the segment before). Rows of eight
    carry the entry's stored Merkle leaf last, which must be its body's; through `blob_conn`, the blobs bodies
    name are hashed again.
    Hashing is inlined (entry_hash = sha256(prev_hash + sha256(body))): this loop is verify's hot path."""
    sha256 = hashlib.sha256
    segment = Segment()
    problem = segment.problems.add
    blobs = BlobChecker(blob_conn, segment.problems) if blob_conn is not None else None
    for row in entries:
        seq, run_id, kind, body, prev_hash, entry_hash, recorded_at = row[:7]
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
        if len(row) > 7:
            leaf = row[7]
            if leaf is None:
                problem(seq, run_id, f"the Merkle tree has no leaf for entry {seq}")
            elif bytes(leaf) != sha256(b"\x00" + data).digest():
                problem(seq, run_id, f"the Merkle leaf of entry {seq} is not its body's: the body or the tree "
                                     "was changed")
        if blobs is not None and any(mark in data for mark in BLOB_MARKS):
            blobs.add(seq, run_id, data)
        prev, expected_seq = entry_hash, seq + 1
    if blobs is not None:
        blobs.flush()
    segment.last_seq, segment.last_hash = expected_seq - 1, prev or ZERO_HASH
    return segment


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


def _check_range(db_url: str, low: int, high: int, prev: str | None) -> Segment:
    """Entries low..high (their chain, leaves and blobs) through connections of this process's own: a worker's."""
    engine = make_engine(load_settings(db_url=db_url))
    try:
        with (explained_errors(db_url), engine.connect() as conn, engine.connect() as blob_conn, scan_cache(conn),
              scan_cache(blob_conn)):
            return check_segment(iter_entries(conn, low, high, body_bytes=True, with_leaf=True), expected_seq=low,
                                 prev=prev, blob_conn=blob_conn)
    finally:
        engine.dispose()


def check_entries(book, low: int, high: int, prev: str, workers: int | None = None) -> tuple[int, int, str, list]:
    """Entries low..high, the first following `prev`: split by seq range across processes, one a core, when there
    are many (each stretch carries its own prev_hash, so stretches are checked apart and joined at their ends)."""
    workers = workers or os.cpu_count() or 1
    if high < low:
        return 0, low - 1, prev, []
    if high - low + 1 < PARALLEL_FROM or workers < 2:
        with _scanning(book) as conn, _scanning(book) as blob_conn:
            segment = check_segment(iter_entries(conn, low, high, body_bytes=True, with_leaf=True),
                                    expected_seq=low, prev=prev, blob_conn=blob_conn)
        return join_segments([segment])
    import multiprocessing

    step = (high - low + 1 + workers - 1) // workers
    bounds = [(start, min(start + step - 1, high)) for start in range(low, high + 1, step)]
    url = book.engine.url.render_as_string(hide_password=False)
    with multiprocessing.get_context("fork").Pool(len(bounds)) as pool:
        segments = pool.starmap(_check_range, [(url, a, b, prev if a == low else None) for a, b in bounds])
    return join_segments(segments)


# --- the Merkle tree above the leaves ---------------------------------------------------------------------------


def check_tree(book, size: int, from_size: int = 0) -> list[dict]:
    """Every interior node completed after the first `from_size` leaves must hash its two children, and the tree
    must hold no node beyond `size` leaves. Level by level, two sorted streams at a time: flat memory."""
    problems = Problems()
    with _scanning(book) as conn:
        extra = conn.execute(text("SELECT level, idx FROM tree_nodes WHERE idx * (1 << level) + (1 << level) > :n "
                                  "ORDER BY level, idx LIMIT 1"), {"n": size}).first()
        if extra:
            problems.add(None, None, f"the Merkle tree holds node ({extra[0]}, {extra[1]}) beyond the log's {size} "
                                     "entries: the log was cut short, or the tree changed")
        level = 1
        while (1 << level) <= size and len(problems) < MAX_PROBLEMS:
            low = from_size >> level
            children = stream(conn, "SELECT idx, hash FROM tree_nodes WHERE level = :l AND idx >= :i ORDER BY idx",
                              {"l": level - 1, "i": 2 * low})
            with _scanning(book) as other:
                nodes = stream(other, "SELECT idx, hash FROM tree_nodes WHERE level = :l AND idx >= :i AND idx < :e "
                               "ORDER BY idx", {"l": level, "i": low, "e": size >> level})
                _check_level(level, low, size >> level, nodes, children, problems)
            level += 1
    return list(problems)


def _check_level(level: int, low: int, count: int, nodes: Iterator[tuple], children: Iterator[tuple],
                 problems: Problems) -> None:
    children = iter(children)
    expected = low
    for idx, digest in nodes:
        first_leaf = (idx << level) + 1
        if idx != expected:
            problems.add(first_leaf, None, f"the Merkle tree lacks node ({level}, {expected})")
            return
        left, right = next(children, None), next(children, None)
        if left is None or right is None or (left[0], right[0]) != (2 * idx, 2 * idx + 1):
            problems.add(first_leaf, None, f"the Merkle tree lacks a child of node ({level}, {idx})")
            return
        if bytes(digest) != merkle.node_hash(bytes(left[1]), bytes(right[1])):
            problems.add(first_leaf, None, f"the Merkle tree node ({level}, {idx}) is not the hash of its children: "
                                           "the tree was changed")
        expected += 1
    if expected != count:
        problems.add((expected << level) + 1, None, f"the Merkle tree lacks node ({level}, {expected})")


# --- the projections -------------------------------------------------------------------------------------------


def _grouped(rows: Iterator[tuple]) -> Iterator[tuple[str, list[tuple]]]:
    for run_id, group in groupby(rows, key=lambda row: row[0]):
        yield run_id, list(group)


def check_projections(book, run_ids: Iterable[str] | None = None) -> list[dict]:
    """Each run's projection rows against what its folded entries imply, one run at a time: every run (merging
    streams sorted by run id), or only `run_ids`. One problem per run that disagrees."""
    problems = Problems()
    if run_ids is None:
        _check_runs(book, None, problems)
    else:
        for chunk in chunks(sorted(set(run_ids))):
            _check_runs(book, chunk, problems)
            if len(problems) >= MAX_PROBLEMS:
                break
    return list(problems)


def _check_runs(book, run_ids: list[str] | None, problems: Problems) -> None:
    where, binds = "", {}
    if run_ids is not None:
        marks, binds = in_clause("r", run_ids)
        where = f" WHERE run_id IN ({marks})"
    queries = {
        "entries": f"SELECT run_id, seq, body, prev_hash, entry_hash FROM entries{where} ORDER BY run_id, seq",
        "runs": f"SELECT {', '.join(RUN_COLUMNS)} FROM runs{where} ORDER BY run_id",
        **{table: f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY run_id"
           for table, columns in PROJECTION_TABLES.items()},
    }
    with (_scanning(book) as c1, _scanning(book) as c2, _scanning(book) as c3, _scanning(book) as c4,
          _scanning(book) as c5, _scanning(book) as blob_conn):
        streams = {name: _grouped(stream(conn, sql, binds))
                   for (name, sql), conn in zip(queries.items(), (c1, c2, c3, c4, c5))}
        heads = {name: next(group, None) for name, group in streams.items()}
        while any(heads.values()) and len(problems) < MAX_PROBLEMS:
            run_id = min(head[0] for head in heads.values() if head)
            found = {}
            for name in streams:
                if heads[name] and heads[name][0] == run_id:
                    found[name] = heads[name][1]
                    heads[name] = next(streams[name], None)
                else:
                    found[name] = []
            _check_run(run_id, found, blob_conn, problems)


def _check_run(run_id: str, found: dict[str, list[tuple]], blob_conn, problems: Problems) -> None:
    if not found["entries"]:
        problems.add(None, run_id, "projection rows for a run that the log does not have")
        return
    try:
        record = fold_entries([row[1:] for row in found["entries"]])
    except ValueError:
        problems.add(found["entries"][0][1], run_id, "facts about a run whose launch is not in the log")
        return
    wanted = plan_inflation(record, ("objects",))
    if wanted:
        record = inflate_record(record, read_blobs(blob_conn, wanted))
    want = build_projection(record)
    seq = want.run["last_seq"]
    want_run = tuple(want.run[c] for c in RUN_COLUMNS)
    have_run = tuple(found["runs"][0]) if found["runs"] else None
    if have_run != want_run:
        changed = [c for c, a, b in zip(RUN_COLUMNS, have_run or [None] * len(RUN_COLUMNS), want_run) if a != b]
        problems.add(seq, run_id, f"the runs row disagrees with the log in: {', '.join(changed)}")
        return
    for table, columns in PROJECTION_TABLES.items():
        want_rows = sorted(tuple(row[c] for c in columns) for row in getattr(want, table))
        if sorted(tuple(row) for row in found[table]) != want_rows:
            problems.add(seq, run_id, f"the {table} rows disagree with the log")
            return


def runs_touched(book, after_seq: int) -> set[str]:
    """The runs with an entry after `after_seq`."""
    with _scanning(book) as conn:
        return {row[0] for row in stream(conn, "SELECT DISTINCT run_id FROM entries WHERE seq > :s", {"s": after_seq})}


# --- the guards ------------------------------------------------------------------------------------------------


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
    with _scanning(book) as conn:
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


# --- the whole check ------------------------------------------------------------------------------------------


def check_since(book, since: VerifiedHead, size: int) -> list[dict]:
    """That the log still holds the verified head, and its tree now extends the tree verified then (RFC 9162
    consistency proof): else nothing before it can be trusted to be what was verified."""
    problems = Problems()
    if since.size > size:
        problems.add(since.size, None, f"entries {size + 1} to {since.size} were deleted: the log verified before "
                                       f"ended at entry {since.size}, it now ends at entry {size}")
        return list(problems)
    if since.size == 0:
        return []
    head = entries_by_seq(book, [since.size]).get(since.size)
    if head is None or head["entry_hash"] != since.head_hash:
        problems.add(since.size, head["run_id"] if head else None,
                     f"entry {since.size} is not the entry verified before (hash {since.head_hash[:16]}…): the log "
                     "was rewritten up to it")
        return list(problems)
    _, old_root = book.tree_root(since.size)
    _, new_root = book.tree_root(size)
    _, path = book.consistency_proof(since.size, size)
    if old_root.hex() != since.root_hash or not merkle.verify_consistency(since.size, size, old_root, new_root, path):
        problems.add(since.size, None, f"the Merkle tree of the first {since.size} entries is not the one verified "
                                       "before: the log or its tree was rewritten")
    return list(problems)


def verify(book, projections: bool = True, since: VerifiedHead | None = None,
           remembered: VerifiedHead | None = None) -> VerifyReport:
    """Check the log (and with `projections` every projection row); from `since`, only what came after it. A
    `remembered` head (one verified before, kept outside the database) must still be in the log whatever the
    scope: a log cut short or rewritten before it is a valid log, but not the one verified then."""
    low, head_seq = book.seq_range()
    size = head_seq if low <= head_seq else 0
    start = since or VerifiedHead(0, ZERO_HASH, merkle.empty_root().hex())
    problems = check_since(book, since, size) if since else []
    if remembered and remembered != since and not problems:
        problems = check_since(book, remembered, size)
    count, last_seq, head_hash, found = check_entries(book, start.size + 1, size, start.head_hash) \
        if not problems else (0, size, ZERO_HASH, [])
    problems = sorted(problems + found, key=lambda p: p["seq"] or 0)[:MAX_PROBLEMS]
    if not problems:
        problems = check_tree(book, size, start.size)
    if projections and not problems:
        problems = check_projections(book, runs_touched(book, start.size) if since else None)
    problems = problems + check_guards(book)  # beside the log: whatever else was found
    root = book.tree_root(size)[1].hex() if not any(p.get("kind") != "guard" for p in problems) else None
    head_hash = head_hash if count else start.head_hash
    return VerifyReport(ok=not problems, entries=size, head_seq=last_seq if count else size, head_hash=head_hash,
                        verified_at=utc_now(), problems=problems, scope="incremental" if since else "full",
                        checked_from=start.size + 1, root_hash=root)


# --- the verifier's memory: the head it last found intact ---------------------------------------------------------


def verified_head_path(book) -> Path:
    """Where this machine keeps the head it last verified of this database: in LEDGER_HOME, outside the database,
    whose owner could otherwise rewrite both the log and the memory of it."""
    return book.settings.home / "verified" / f"{sha256_hex(book.where)[:16]}.json"


def load_verified_head(book) -> VerifiedHead | None:
    try:
        saved = json.loads(verified_head_path(book).read_text(encoding="utf-8"))
        if saved.get("ledger") != book.where:
            return None
        return VerifiedHead(int(saved["size"]), str(saved["head_hash"]), str(saved["root_hash"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: the next verify is a full one


def save_verified_head(book, report: VerifyReport) -> None:
    """Remember a head that verified, for the next `ledger verify` to start from (best effort: a read-only home
    only means the next verify is a full one)."""
    if not report.ok or report.root_hash is None:
        return
    path = verified_head_path(book)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps({"ledger": book.where, "size": report.entries, "head_hash": report.head_hash,
                                         "root_hash": report.root_hash, "verified_at": report.verified_at,
                                         "scope": report.scope}), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        pass
