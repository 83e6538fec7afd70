"""`ledger audit`: reports, their signatures, and checks of a report against the log.

    ledger audit [RUN...] [--project P] [--since DATE] [--until DATE] --format html|pdf|md|json -o FILE [--sign KEY]
    ledger audit verify FILE --key PUBKEY        the Ed25519 signature of a report or export (FILE.sig, or the DSSE
                                                 envelopes of an SLSA export); exit 3 when it fails
    ledger audit check FILE                      a report's entry hashes against the log now; exit 3 naming the entry
    ledger audit keygen KEYFILE [--algorithm A]  a new key pair: KEYFILE and KEYFILE.pub (Ed25519, or ecdsa-p256)
"""

from __future__ import annotations

from typing import List, Optional

import typer
from typer.core import TyperGroup

from ledger import audit
from ledger.audit import dsse
from ledger.audit.model_signature import load_model_signing_key
from ledger.audit.signing import (
    check_report_signature,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    read_file,
    require_valid_signature,
    sign_report_file,
)
from ledger.cli.console import open_book, print_json, say
from ledger.errors import TamperDetected, UsageError


class AuditGroup(TyperGroup):
    """`ledger audit RUN... -o FILE` is `ledger audit report RUN... -o FILE`: anything that is not a subcommand's
    name goes to `report`, so the short form of the contract works beside `verify`, `check` and `keygen`."""

    default_command = "report"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


audit_app = typer.Typer(
    cls=AuditGroup,
    no_args_is_help=True,
    help="Audit reports: what was trained, on what, by whom, and that the records are intact. "
         "`ledger audit [RUN...] -o FILE` is short for `ledger audit report [RUN...] -o FILE`.",
)


@audit_app.command("report")
def report_command(
    runs: Optional[List[str]] = typer.Argument(None, metavar="RUN",
                                               help="Runs to report on (id, unique prefix or job name); "
                                                    "none: every run the filters select."),
    project: Optional[str] = typer.Option(None, help="Only runs of this project."),
    since: Optional[str] = typer.Option(None, help="Only runs launched at or after this date or time (UTC)."),
    until: Optional[str] = typer.Option(None, help="Only runs launched up to this date (inclusive) or before this time."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="html | pdf | md | json (default: from -o's suffix)."),
    output: str = typer.Option(..., "--output", "-o", help="The file to write."),
    sign: Optional[str] = typer.Option(None, "--sign", help="Sign the report with this Ed25519 private key "
                                                            "(writes FILE.sig), and the log's checkpoint in it."),
    pdf_engine: str = typer.Option("auto", "--pdf-engine", help="auto | weasyprint | chromium."),
    manifest_rows: int = typer.Option(500, "--manifest-rows", help="Objects listed per manifest in HTML, PDF and "
                                                                  "Markdown (the JSON lists all)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
):
    """Write an audit report of runs: who, when, request, image, code, data, hyperparameters, hardware, outcome,
    gaps, reproductions and verdicts, a summary, and the integrity of the log (exit 3 if it does not verify)."""
    fmt = (fmt or audit.format_from_path(output) or "").lower()
    if fmt not in audit.FORMATS:
        raise UsageError(f"no report format given for {output}" if not fmt else f"unknown report format {fmt!r}",
                         f"add --format {' | '.join(audit.FORMATS)}, or name the file report.html, .pdf, .md or .json")
    if manifest_rows < 0:
        raise UsageError("--manifest-rows cannot be negative", "give 0 to list no objects, or more")
    if sign:  # fail before the work, not after it
        load_private_key(sign)
    book = open_book()
    report = audit.collect_report(book, runs or [], project=project, since=since, until=until, checkpoint_key=sign)
    path = audit.save_report(report, output, fmt, manifest_rows=manifest_rows, pdf_engine=pdf_engine)
    signature = None
    if sign:
        signature = sign_report_file(path, sign, report["digest"], fmt)
    integrity, summary = report["integrity"], report["summary"]
    if as_json:
        print_json({"path": str(path), "format": fmt, "digest": report["digest"], "runs": summary["runs"],
                     "signature": str(signature) if signature else None, "verified": integrity["ok"],
                     "head": integrity["head"], "problems": integrity["problems"]})
    else:
        state = "intact" if integrity["ok"] else "FAILED verification"
        say(f"Wrote {path} ({fmt}): {summary['runs']} run(s) ({summary['originals']} original, "
             f"{summary['reproductions']} reproduction(s); {summary['with_gaps']} with gaps); ledger {state}, head "
             f"{integrity['head']['seq']} {integrity['head']['entry_hash'][:16]}…; report sha256:{report['digest']}")
        if signature:
            say(f"Signed: {signature}")
    if not integrity["ok"]:
        bad = integrity["problems"][0]
        where = f"entry {bad['seq']} (run {bad['run_id']}): " if bad.get("seq") is not None else ""
        raise TamperDetected(f"the report was written, but the ledger did not verify: {where}{bad['problem']}",
                             "the report shows the failure; run ledger verify")


@audit_app.command("verify")
def verify_report_command(
    file: str = typer.Argument(..., help="The report or export (its signature is FILE.sig), or an SLSA bundle "
                                         "(DSSE envelopes)."),
    key: str = typer.Option(..., "--key", help="The signer's Ed25519 public key (PEM or OpenSSH)."),
    signature: Optional[str] = typer.Option(None, "--signature", help="The signature file, if not FILE.sig."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Check the Ed25519 signature of a report or an export: exit 3 when the file or the signature was changed, or
    another key signed. An SLSA export (`ledger export --format slsa --sign KEY`) is checked envelope by envelope."""
    data = read_file(file, "file")
    if signature is None and dsse.is_bundle(data):
        statements = dsse.verify_bundle(data, load_public_key(key))
        if as_json:
            print_json({"ok": True, "file": file, "key_id": key_id(load_public_key(key)), "statements": statements})
        else:
            kinds = ", ".join(s.get("predicateType", "?") for s in statements)
            say(f"Signature OK: every envelope of {file} ({len(statements)}: {kinds}) is signed by key "
                f"{key_id(load_public_key(key))}")
        return
    check = check_report_signature(file, key, signature)
    if as_json:
        print_json(check.to_dict())
    require_valid_signature(check)
    if not as_json:
        statement = check.statement
        digest = f" (report sha256:{statement['report_digest']})" if statement.get("report_digest") else ""
        say(f"Signature OK: {file} is the file key {check.key_id} signed at {statement.get('signed_at')}{digest}")


@audit_app.command("check")
def check_report_command(
    file: str = typer.Argument(..., help="A report (JSON, HTML or Markdown) made by ledger audit."),
    offline: bool = typer.Option(False, "--offline", help="Check the report with no database: the checkpoint and "
                                                          "every entry's inclusion proof it carries."),
    key: Optional[str] = typer.Option(None, "--key", help="With --offline: the ledger's checkpoint verifier key "
                                                          "(NAME+HASH+KEY, from ledger checkpoint --sign)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Check that the log still holds every entry a report names, unchanged: exit 3 naming the first that is not.
    Entries recorded after the report (a later verdict) are listed, not failures. With --offline, check the report
    against the checkpoint and proofs it carries, without the database."""
    block, report = audit.load_report_integrity(file)
    if offline:
        result = audit.check_report_offline(block, report, key)
    else:
        if key:
            raise UsageError("--key goes with --offline", "add --offline, or leave --key out")
        result = audit.check_report(open_book(), block)
    if as_json:
        print_json(result)
    if not result["ok"]:
        bad = result["first_bad"]
        where = f"entry {bad['seq']} (run {bad['run_id']})" if bad.get("seq") is not None else f"run {bad['run_id']}"
        raise TamperDetected(f"CHANGED since the report: {where}: {bad['problem']}",
                             "the log no longer matches the report; restore the database from a backup" if not offline
                             else "the report is not what the ledger recorded: ask for the original report")
    if as_json:
        return
    if offline:
        checkpoint = result["checkpoint"]
        say(f"OK: the {result['entries_checked']} entries the report of {result['report_generated_at']} names are in "
            f"the log of {checkpoint['tree_size']} entries with root {checkpoint['root_hash']} (its checkpoint); "
            f"{result['sections_checked']} run section(s) say what their entries say; checkpoint signature "
            f"{checkpoint['signature']}")
        if not result["content_checked"]:
            say("  not checked: the report's own text (it carries no content digest)")
        return
    say(f"OK: the {result['entries_checked']} entries the report of {result['report_generated_at']} names are "
        f"unchanged (head then: entry {result['report_head'].get('seq')}); {result['appended_since']} "
        f"entries recorded since")
    for fact in result["newer_facts"]:
        say(f"  since the report: entry {fact['seq']} {fact['kind']} of run {fact['run_id']} "
            f"({fact['recorded_at']})")
    if not result["content_checked"]:
        say("  not checked: the report's own text (it carries no content digest: made by an older ledger); "
            "check its signature with ledger audit verify FILE --key PUBKEY")


@audit_app.command("keygen")
def keygen_command(
    keyfile: str = typer.Argument(..., help="Where to write the private key; the public key goes to KEYFILE.pub."),
    algorithm: str = typer.Option("ed25519", "--algorithm", help="ed25519 (reports, exports) or ecdsa-p256 "
                                                                 "(ledger sign-model: OpenSSF model signing)."),
):
    """Make a key pair for signing reports and exports: KEYFILE (private, mode 0600) and KEYFILE.pub."""
    private, public = generate_keypair(keyfile, algorithm=algorithm)
    key = load_private_key(private) if algorithm == "ed25519" else load_model_signing_key(private)
    say(f"Wrote {private} (private: keep it secret) and {public} (give it to reviewers); key id "
         f"{key_id(key.public_key())}")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
