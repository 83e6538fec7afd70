"""`ledger verify`: recompute the chain, then check every projection row against the log.

The chain check reads each entry once and hashes it; it never parses a body (the canonical form lets us check
the kind, run id and time columns against the body with string comparisons), so it runs at hashing speed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from sqlalchemy import text

from ledger.record import ZERO_HASH, RunRecord, chain_hash, fold_entries, utc_now
from ledger.store.projection import build_projection


def check_chain(entries: Iterable[tuple]) -> tuple[int, int, str, list[dict]]:
    """Pure: (count, head seq, head hash, problems) for entries in seq order. Stops listing after the first 20."""
    problems: list[dict] = []
    expected_seq, prev, count, head_seq = 1, ZERO_HASH, 0, 0

    def problem(seq, run_id, what):
        if len(problems) < 20:
            problems.append({"seq": seq, "run_id": run_id, "problem": what})

    for seq, run_id, kind, body, prev_hash, entry_hash, recorded_at in entries:
        count += 1
        if seq != expected_seq:
            problem(seq, run_id, f"entry {expected_seq} is missing: entry {seq} follows entry {expected_seq - 1}"
                    if seq > expected_seq else f"entry {seq} is out of order after entry {expected_seq - 1}")
        elif prev_hash != prev:
            problem(seq, run_id, f"prev_hash does not match the hash of entry {seq - 1}: entries moved or replaced")
        if chain_hash(prev_hash, body) != entry_hash:
            problem(seq, run_id, "entry_hash does not match its body: the body or the hash was changed")
        elif not (body.startswith(f'{{"kind":"{kind}",')
                  and body.endswith(f',"recorded_at":"{recorded_at}","run_id":"{run_id}"}}')):
            problem(seq, run_id, "the kind, run_id or recorded_at column disagrees with the entry's body")
        prev, expected_seq, head_seq = entry_hash, seq + 1, seq
    return count, head_seq, prev, problems


def fold_all(entries: Iterable[tuple]) -> Iterator[RunRecord]:
    """Every run's current record, from (seq, run_id, kind, body, prev_hash, entry_hash, ...) in seq order."""
    by_run: dict[str, list[tuple]] = defaultdict(list)
    for seq, run_id, _kind, body, prev_hash, entry_hash, *_ in entries:
        by_run[run_id].append((seq, body, prev_hash, entry_hash))
    for run_id, run_entries in by_run.items():
        try:
            yield fold_entries(run_entries)
        except ValueError:
            continue  # facts without a launch: check_chain or the projection check reports them


def _rows(conn, sql: str) -> dict[str, list[tuple]]:
    grouped: dict[str, list[tuple]] = defaultdict(list)
    for row in conn.execute(text(sql)):
        grouped[row[0]].append(tuple(row))
    return grouped


def check_projections(ledger) -> list[dict]:
    """Compare each projection table with what the log implies; one problem per run that disagrees."""
    from ledger.store.ledger import RUN_COLUMNS

    expected = {r.run_id: build_projection(r) for r in fold_all(ledger.iter_entries())}
    with ledger._reading() as conn:
        actual_runs = _rows(conn, f"SELECT {', '.join(RUN_COLUMNS)} FROM runs")
        actual = {
            "params": _rows(conn, "SELECT run_id, key, value FROM params"),
            "metrics": _rows(conn, "SELECT run_id, key, value FROM metrics"),
            "data_objects": _rows(
                conn, "SELECT run_id, channel, key, bucket, version_id, etag, size FROM data_objects"
            ),
        }
    problems = []
    columns = {"params": ("run_id", "key", "value"), "metrics": ("run_id", "key", "value"),
               "data_objects": ("run_id", "channel", "key", "bucket", "version_id", "etag", "size")}
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


def verify(ledger, projections: bool = True):
    from ledger.store.ledger import VerifyReport

    count, head_seq, head_hash, problems = check_chain(ledger.iter_entries())
    if projections and not problems:
        problems = check_projections(ledger)
    return VerifyReport(ok=not problems, entries=count, head_seq=head_seq, head_hash=head_hash,
                        verified_at=utc_now(), problems=problems)

