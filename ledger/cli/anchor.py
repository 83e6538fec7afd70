"""`ledger anchor`: the verified head of the log written where the database cannot rewrite it."""

from __future__ import annotations

from typing import Optional

import typer

from ledger.audit.anchor import save_anchor
from ledger.cli.console import open_book, print_json, say


def anchor_command(
    to: str = typer.Option(..., "--to", help="file://PATH (a directory gets a new file) or s3://bucket/key "
                                             "(a key ending in / gets a new object)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="S3 Object Lock mode: COMPLIANCE or GOVERNANCE "
                                                            "(default: the bucket's, else COMPLIANCE)."),
    retain_days: Optional[int] = typer.Option(None, "--retain-days", help="S3 Object Lock retention in days "
                                                                          "(default: the bucket's, else 3650)."),
    sign: Optional[str] = typer.Option(None, "--sign", help="Sign the anchored checkpoint with this Ed25519 "
                                                            "private key (ledger audit keygen KEYFILE)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
):
    """Write the verified head of the log (seq, hash, time) and its checkpoint (the Merkle root) to a file or to S3,
    under Object Lock where the bucket has it. `ledger verify --anchor LOCATION` then catches a log whose newest
    entries were deleted or whose older ones were rewritten, and checks only the entries after the anchor."""
    written = save_anchor(open_book(), to, mode=mode, retain_days=retain_days, key_path=sign)
    if as_json:
        print_json(written.to_dict())
        return
    head = written.anchor["head"]
    say(f"Anchored entry {head['seq']} {head['entry_hash']} to {written.location}"
         + (f" (version {written.version_id})" if written.version_id else ""))
    if written.retention:
        until = written.to_dict()["retention"]["retain_until"]
        say(f"Object Lock: {written.retention['mode']} until {until}")
    for note in written.notes:
        say(f"note: {note}")




def register(app: typer.Typer) -> None:
    app.command("anchor")(anchor_command)
