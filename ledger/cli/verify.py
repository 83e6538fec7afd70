"""`ledger verify`: the hash chain, the Merkle tree, the blobs and every projection checked against the log; from
the head this machine verified last, only what is new (`--full` for everything); with --anchor, from the newest
anchored checkpoint, proven by a consistency proof."""

from __future__ import annotations

from typing import Optional

import typer

from ledger.audit.anchor import check_anchors, plan_start, read_all_anchors
from ledger.cli.console import JSON_OPTION, open_book, out, print_json
from ledger.errors import DatabaseDamaged, TamperDetected
from ledger.store.integrity import load_verified_head, save_verified_head


def verify_command(as_json: bool = JSON_OPTION,
                   full: bool = typer.Option(False, "--full", help="Check every entry again, not only those after "
                                                                   "the head verified last."),
                   chain_only: bool = typer.Option(False, "--chain-only", help="Skip the projection check."),
                   anchor: Optional[str] = typer.Option(None, "--anchor", help="Start from the newest checkpoint "
                                                        "anchored at file://PATH or s3://bucket/key (or an audit "
                                                        "report), and check the log against every anchor there.")):
    """Check the log and every projection against it. Exit 3 when something was altered."""
    try:
        book = open_book()
        anchors = read_all_anchors(anchor) if anchor else []
        remembered = load_verified_head(book)
        since = None if full else (plan_start(anchors) if anchor else remembered)
        report = book.verify(check_projections=not chain_only, since=since, remembered=remembered)
        if anchor:
            report = check_anchors(book, report, anchors)
    except DatabaseDamaged as error:  # a log that cannot be read cannot be vouched for: exit 3, as tampering
        raise TamperDetected(error.message, error.hint) from None
    if report.ok and not chain_only:
        save_verified_head(book, report)
    if as_json:
        print_json(report.to_dict())
    elif report.ok:
        checked = ("every entry" if report.checked_from == 1 else
                   f"entries {report.checked_from} to {report.head_seq} after the head verified before "
                   "(--full checks every entry)" if report.checked_from <= report.head_seq else
                   "no new entry since the head verified before (--full checks every entry)")
        out.print(f"OK: {report.entries} entries, chain and Merkle tree intact ({checked}); head seq "
                  f"{report.head_seq} {report.head_hash}; root {report.root_hash}", markup=False, highlight=False)
    if not report.ok:
        bad = report.first_bad
        if bad.get("kind") == "guard":  # the chain may be intact, but nothing stops the next edit
            raise TamperDetected(f"TAMPERED: {bad['problem']}", "find out who removed it, then restore the "
                                 "trigger as the ledger's first migration (0001) creates it, and verify again")
        where = f" at entry {bad['seq']} (run {bad['run_id']})" if bad.get("seq") is not None else ""
        raise TamperDetected(f"TAMPERED{where}: {bad['problem']}",
                             "restore the database from a backup; `ledger db rebuild` repairs projections only")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
