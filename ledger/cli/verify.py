"""`ledger verify`: the hash chain, the blobs and every projection checked against the log; with --anchor, the log
against the heads written where the database cannot rewrite them."""

from __future__ import annotations

from typing import Optional

import typer

from ledger.audit.anchor import check_anchors
from ledger.cli.console import JSON_OPTION, open_book, out, print_json
from ledger.errors import DatabaseDamaged, TamperDetected


def verify_command(as_json: bool = JSON_OPTION,
                   chain_only: bool = typer.Option(False, "--chain-only", help="Skip the projection check."),
                   anchor: Optional[str] = typer.Option(None, "--anchor", help="Also check the log against the "
                                                        "anchors at file://PATH or s3://bucket/key (or an audit report).")):
    """Check the hash chain and every projection against the log. Exit 3 when something was altered."""
    try:
        book = open_book()
        report = book.verify(check_projections=not chain_only)
        if anchor:
            report = check_anchors(book, report, anchor)
    except DatabaseDamaged as error:  # a log that cannot be read cannot be vouched for: exit 3, as tampering
        raise TamperDetected(error.message, error.hint) from None
    if as_json:
        print_json(report.to_dict())
    elif report.ok:
        out.print(f"OK: {report.entries} entries, chain intact; head seq {report.head_seq} {report.head_hash}")
    if not report.ok:
        bad = report.first_bad
        if bad.get("kind") == "guard":  # the chain may be intact, but nothing stops the next edit
            raise TamperDetected(f"TAMPERED: {bad['problem']}", "find out who removed it, then restore the "
                                 "trigger as the ledger's first migration (0001) creates it, and verify again")
        raise TamperDetected(
            f"TAMPERED at entry {bad['seq']} (run {bad['run_id']}): {bad['problem']}",
            "restore the database from a backup; `ledger db rebuild` repairs projections only",
        )


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
