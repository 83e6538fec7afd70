"""`ledger checkpoint` and `ledger proof`: the log's checkpoint, and RFC 9162 proofs anyone can check offline.

    ledger checkpoint [--sign KEY] [-o FILE]       the C2SP checkpoint of the log now (signed with an Ed25519 key)
    ledger proof RUN [--sign KEY] [--json]         every entry of a run with its inclusion proof
    ledger proof --consistency M [N] [--json]      the log of N entries (default: now) extends the log of M
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ledger.audit.proofs import build_checkpoint, build_consistency_proof, build_run_proof
from ledger.cli.console import JSON_OPTION, open_book, print_json, say
from ledger.errors import UsageError

SIGN_OPTION = typer.Option(None, "--sign", help="Sign the checkpoint with this Ed25519 private key "
                                               "(ledger audit keygen KEYFILE).")


def checkpoint_command(sign: Optional[str] = SIGN_OPTION,
                       output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the checkpoint "
                                                             "(a C2SP signed note) to this file."),
                       as_json: bool = JSON_OPTION):
    """Print the checkpoint of the log: its origin, size and Merkle root (RFC 9162), as a C2SP tlog-checkpoint."""
    made = build_checkpoint(open_book(), key_path=sign)
    if output:
        output.write_text(made["checkpoint"], encoding="utf-8")
    if as_json:
        print_json(made)
        return
    if not output:
        print(made["checkpoint"], end="")
    else:
        say(f"Wrote the checkpoint of {made['tree_size']} entries (root {made['root_hash']}) to {output}")
    if made["verifier_key"]:
        say(f"verifier key: {made['verifier_key']}")


def proof_command(run: Optional[str] = typer.Argument(None, metavar="RUN",
                                                     help="A run (id, unique prefix or job name); with "
                                                          "--consistency, the larger tree size N."),
                  consistency: Optional[int] = typer.Option(None, "--consistency", metavar="M",
                                                            help="Prove that the log now (or of N entries) "
                                                                 "extends the log of M entries."),
                  sign: Optional[str] = SIGN_OPTION,
                  as_json: bool = JSON_OPTION):
    """Print RFC 9162 proofs: that each entry of a run is in the log's Merkle tree, or that the log of N entries
    extends the log of M (append-only)."""
    book = open_book()
    if consistency is not None:
        if run is not None and not run.isdigit():
            raise UsageError(f"{run!r} is not a tree size", "write it like: ledger proof --consistency 100 250")
        proof = build_consistency_proof(book, consistency, int(run) if run is not None else None)
        if as_json:
            print_json(proof)
            return
        say(f"The log of {proof['second']} entries (root {proof['second_hash']}) extends the log of "
            f"{proof['first']} (root {proof['first_hash']}); proof of {len(proof['path'])} hashes:")
        for node in proof["path"]:
            say(f"  {node}")
        return
    if run is None:
        raise UsageError("no run given", "name a run: ledger proof RUN; or ledger proof --consistency M [N]")
    proof = build_run_proof(book, run, key_path=sign)
    if as_json:
        print_json(proof)
        return
    say(f"Run {proof['run_id']}: {len(proof['entries'])} entries in the log of {proof['tree_size']} entries, "
        f"root {proof['root_hash']}")
    for entry in proof["entries"]:
        say(f"  entry {entry['seq']} (leaf {entry['leaf_index']}): {len(entry['audit_path'])} hashes")
    say("--json prints the proof whole; README 'Checking a proof' says how to check it")


def register(app: typer.Typer) -> None:
    app.command("checkpoint")(checkpoint_command)
    app.command("proof")(proof_command)
