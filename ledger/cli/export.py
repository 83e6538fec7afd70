"""`ledger export` and `ledger sign-model`: a run's facts in the standards other tools check.

    ledger export RUN... --format slsa|openlineage|cyclonedx|model-card [-o FILE] [--sign KEY] [--to URL]
    ledger sign-model RUN --key KEY [--model-dir DIR] [-o SIGNATURE]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ledger.audit.exports import FORMATS, save_export, save_model_signature
from ledger.audit.model_signature import build_verify_command
from ledger.cli.console import err, open_book, print_json, say


def export_command(
    runs: List[str] = typer.Argument(..., metavar="RUN...", help="Runs to export (id, unique prefix or job name)."),
    fmt: str = typer.Option(..., "--format", "-f", help=" | ".join(FORMATS) + "."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="The file to write (default: stdout)."),
    sign: Optional[str] = typer.Option(None, "--sign", help="Ed25519 private key (ledger audit keygen): signs SLSA "
                                                            "envelopes (DSSE); other formats get FILE.sig."),
    to: Optional[str] = typer.Option(None, "--to", help="openlineage: POST the events to this lineage server "
                                                        "(URL/api/v1/lineage), e.g. Marquez."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON (with -o or --to)."),
):
    """Export runs as SLSA provenance (in-toto, DSSE), OpenLineage events, a CycloneDX ML-BOM or a SageMaker Model
    Card, and record each export as a fact of its runs (the audit report lists them)."""
    export = save_export(open_book(), runs, fmt.lower(), output=output, sign=sign, to=to)
    if export.destination == "-":
        sys.stdout.write(export.data.decode("utf-8"))
        sys.stdout.flush()
        for note in export.notes:
            err.print(f"note: {note}", markup=False, highlight=False)
        return
    if as_json:
        print_json(export.to_dict())
        return
    signed = f", signed by key {export.signed_by}" if export.signed_by else ""
    say(f"Exported {len(export.runs)} run(s) as {export.format} to {export.destination} "
        f"(sha256 {export.sha256}{signed})")
    if export.signature_file:
        say(f"Signature: {export.signature_file}")
    for note in export.notes:
        say(f"note: {note}")


def sign_model_command(
    run: str = typer.Argument(..., help="The run whose model to sign (id, unique prefix or job name)."),
    key: str = typer.Option(..., "--key", help="EC private key, P-256/384/521 (ledger audit keygen KEYFILE "
                                               "--algorithm ecdsa-p256)."),
    model_dir: Optional[str] = typer.Option(None, "--model-dir", help="Where to unpack the model's files "
                                                                      "(default: ./<job name>-model)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="The signature file (default: MODEL_DIR.sig)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
):
    """Sign a run's model files with OpenSSF model signing (model-signing's private-key method), after checking the
    archive against the recorded sha256; `model_signing verify key` checks the signature."""
    export = save_model_signature(open_book(), run, key, model_dir=model_dir, signature=output)
    if as_json:
        print_json(export.to_dict())
        return
    say(f"Signed the files of {export.model_dir} (the model of run {export.runs[0]}) with key {export.signed_by}: "
        f"{export.destination}")
    public = key + ".pub" if Path(key + ".pub").exists() else "PUBLIC_KEY.pem"
    say(f"Verify: {build_verify_command(export.model_dir, export.destination, public)}")
    for note in export.notes:
        say(f"note: {note}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
    app.command("sign-model")(sign_model_command)
