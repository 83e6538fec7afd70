"""Collecting an audit report from a ledger: the runs in scope (with their reproductions and originals), their
log entries, a verify of the whole log, through the store's queries."""

from __future__ import annotations

from collections.abc import Iterable

from ledger import merkle
from ledger.audit.proofs import build_checkpoint
from ledger.audit.report import build_report, parse_date_bound
from ledger.capture.environment import build_local_identity
from ledger.config import VERSION
from ledger.errors import NotFound
from ledger.store.entries import records_with_entries
from ledger.store.query import related_run_ids
from ledger.store.query import select_run_ids as select_filtered_run_ids


def select_run_ids(book, runs: Iterable[str] = (), project: str | None = None, since: str | None = None,
                   until: str | None = None) -> list[str]:
    """The runs a report covers before its reproductions are added: those named, else those the filters select
    (every run when there is no filter)."""
    named = [book.resolve(ref) for ref in runs]
    if named and not (project or since or until):
        return list(dict.fromkeys(named))
    selected = select_filtered_run_ids(book, project=project, since=parse_date_bound(since),
                                       until=parse_date_bound(until, end=True))
    if named:
        keep = set(selected)
        return [r for r in dict.fromkeys(named) if r in keep]
    return selected


def collect_report(book, runs: Iterable[str] = (), project: str | None = None, since: str | None = None,
                   until: str | None = None, *, verify: bool = True, checkpoint_key: str | None = None) -> dict:
    """Read the runs in scope (with their reproductions), their entries, verify the log, and build the report,
    with the log's checkpoint (signed with `checkpoint_key`, if given) and every entry's inclusion proof in it."""
    runs = list(runs or [])
    selected = select_run_ids(book, runs, project, since, until)
    if not selected:
        raise NotFound(f"no runs in {book.where} match {_describe_filters(runs, project, since, until)}",
                       "list runs with: ledger runs")
    records, entries = records_with_entries(book, related_run_ids(book, selected))
    result = book.verify() if verify else None  # after reading: the head covers every entry the report names
    checkpoint = build_checkpoint(book, size=book.head()[0], key_path=checkpoint_key)
    _, proofs = book.inclusion_proofs([e["seq"] for e in entries], checkpoint["tree_size"])
    for entry in entries:  # the leaf of the body as read now: a body changed in the database fails its proof
        entry["leaf_hash"] = merkle.entry_leaf_hash(entry["body"]).hex()
        entry["audit_path"] = [node.hex() for node in proofs[entry["seq"]]]
    return build_report(
        records, verify=result, entries=entries,
        scope={"runs": runs, "project": project, "since": since, "until": until},
        generated_by=build_local_identity(), ledger_where=book.where, ledger_version=VERSION, checkpoint=checkpoint,
    )


def _describe_filters(runs, project, since, until) -> str:
    parts = [f"runs {', '.join(runs)}"] if runs else []
    parts += [f"{name} {value}" for name, value in (("project", project), ("since", since), ("until", until)) if value]
    return " and ".join(parts) or "the filters"
