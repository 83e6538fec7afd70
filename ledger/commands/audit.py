"""`ledger audit` (report, verify, check, keygen), `ledger lineage` and `ledger anchor`.

    ledger audit [RUN...] [--project P] [--since DATE] [--until DATE] --format html|pdf|md|json -o FILE [--sign KEY]
    ledger audit verify FILE --key PUBKEY        the Ed25519 signature of a report (FILE.sig); exit 3 when it fails
    ledger audit check FILE                      a report's entry hashes against the log now; exit 3 naming the entry
    ledger audit keygen KEYFILE                  a new Ed25519 key pair: KEYFILE and KEYFILE.pub
    ledger lineage s3://bucket/key [--version-id V]   the runs that read that object (version), and their models
    ledger lineage --artifact URI                what went into a model
    ledger anchor --to file://PATH | s3://bucket/key  write the verified head; `ledger verify --anchor` checks it
"""

from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

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


def _say(line: str) -> None:
    from ledger.cli import out

    out.print(line, markup=False, highlight=False)


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
    sign: Optional[str] = typer.Option(None, "--sign", help="Sign the report with this Ed25519 private key; "
                                                            "writes FILE.sig."),
    pdf_engine: str = typer.Option("auto", "--pdf-engine", help="auto | weasyprint | chromium."),
    manifest_rows: int = typer.Option(500, "--manifest-rows", help="Objects listed per manifest in HTML, PDF and "
                                                                  "Markdown (the JSON lists all)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
):
    """Write an audit report of runs: who, when, request, image, code, data, hyperparameters, hardware, outcome,
    gaps, reproductions and verdicts, a summary, and the integrity of the log (exit 3 if it does not verify)."""
    from ledger import audit
    from ledger.cli import _open, _print_json

    fmt = (fmt or audit.format_from_path(output) or "").lower()
    if fmt not in audit.FORMATS:
        raise UsageError(f"no report format given for {output}" if not fmt else f"unknown report format {fmt!r}",
                         f"add --format {' | '.join(audit.FORMATS)}, or name the file report.html, .pdf, .md or .json")
    if manifest_rows < 0:
        raise UsageError("--manifest-rows cannot be negative", "give 0 to list no objects, or more")
    if sign:  # fail before the work, not after it
        from ledger.signing import load_private_key

        load_private_key(sign)
    book = _open()
    report = audit.collect_report(book, runs or [], project=project, since=since, until=until)
    path = audit.save_report(report, output, fmt, manifest_rows=manifest_rows, pdf_engine=pdf_engine)
    signature = None
    if sign:
        from ledger.signing import sign_report_file

        signature = sign_report_file(path, sign, report["digest"], fmt)
    integrity, summary = report["integrity"], report["summary"]
    if as_json:
        _print_json({"path": str(path), "format": fmt, "digest": report["digest"], "runs": summary["runs"],
                     "signature": str(signature) if signature else None, "verified": integrity["ok"],
                     "head": integrity["head"], "problems": integrity["problems"]})
    else:
        state = "intact" if integrity["ok"] else "FAILED verification"
        _say(f"Wrote {path} ({fmt}): {summary['runs']} run(s) ({summary['originals']} original, "
             f"{summary['reproductions']} reproduction(s); {summary['with_gaps']} with gaps); ledger {state}, head "
             f"{integrity['head']['seq']} {integrity['head']['entry_hash'][:16]}…; report sha256:{report['digest']}")
        if signature:
            _say(f"Signed: {signature}")
    if not integrity["ok"]:
        bad = integrity["problems"][0]
        where = f"entry {bad['seq']} (run {bad['run_id']}): " if bad.get("seq") is not None else ""
        raise TamperDetected(f"the report was written, but the ledger did not verify: {where}{bad['problem']}",
                             "the report shows the failure; run ledger verify")


@audit_app.command("verify")
def verify_report_command(
    file: str = typer.Argument(..., help="The report file (its signature is FILE.sig)."),
    key: str = typer.Option(..., "--key", help="The signer's Ed25519 public key (PEM or OpenSSH)."),
    signature: Optional[str] = typer.Option(None, "--signature", help="The signature file, if not FILE.sig."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Check a report's Ed25519 signature: exit 3 when the file or the signature was changed, or another key signed."""
    from ledger.cli import _print_json
    from ledger.signing import check_report_signature, require_valid_signature

    check = check_report_signature(file, key, signature)
    if as_json:
        _print_json(check.to_dict())
    require_valid_signature(check)
    if not as_json:
        statement = check.statement
        _say(f"Signature OK: {file} is the file key {check.key_id} signed at {statement.get('signed_at')} "
             f"(report sha256:{statement.get('report_digest')})")


@audit_app.command("check")
def check_report_command(
    file: str = typer.Argument(..., help="A report (JSON, HTML or Markdown) made by ledger audit."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
):
    """Check that the log still holds every entry a report names, unchanged: exit 3 naming the first that is not.
    Entries recorded after the report (a later verdict) are listed, not failures."""
    from ledger import audit
    from ledger.cli import _open, _print_json

    block, _report = audit.load_report_integrity(file)
    result = audit.check_report(_open(), block)
    if as_json:
        _print_json(result)
    if not result["ok"]:
        bad = result["first_bad"]
        raise TamperDetected(f"CHANGED since the report: entry {bad['seq']} (run {bad['run_id']}): {bad['problem']}",
                             "the log no longer matches the report; restore the database from a backup")
    if not as_json:
        _say(f"OK: the {result['entries_checked']} entries the report of {result['report_generated_at']} names are "
             f"unchanged (head then: entry {result['report_head'].get('seq')}); {result['appended_since']} "
             f"entries recorded since")
        for fact in result["newer_facts"]:
            _say(f"  since the report: entry {fact['seq']} {fact['kind']} of run {fact['run_id']} "
                 f"({fact['recorded_at']})")
        if not result["content_checked"]:
            _say("  not checked: the report's own text (it carries no content digest: made by an older ledger); "
                 "check its signature with ledger audit verify FILE --key PUBKEY")


@audit_app.command("keygen")
def keygen_command(
    keyfile: str = typer.Argument(..., help="Where to write the private key; the public key goes to KEYFILE.pub."),
):
    """Make an Ed25519 key pair for signing reports: KEYFILE (private, mode 0600) and KEYFILE.pub."""
    from ledger.signing import generate_keypair, key_id, load_public_key

    private, public = generate_keypair(keyfile)
    _say(f"Wrote {private} (private: keep it secret) and {public} (give it to reviewers); key id "
         f"{key_id(load_public_key(public))}")


def lineage_command(
    uri: Optional[str] = typer.Argument(None, help="s3://bucket/key (a key ending in / is a prefix)."),
    version_id: Optional[str] = typer.Option(None, "--version-id", help="Only runs that read this version."),
    artifact: Optional[str] = typer.Option(None, "--artifact", help="A model artifact URI (or its tree sha256): "
                                                                    "show what went into it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """Which runs read an S3 object (version) and which models they made; or, with --artifact, what went into a model."""
    from ledger import lineage
    from ledger.cli import _open, _print_json, out

    if bool(uri) == bool(artifact):
        raise UsageError("give an S3 object or --artifact URI, not both" if uri else "give an S3 object or --artifact",
                         "ledger lineage s3://bucket/key [--version-id V]; ledger lineage --artifact s3://…/model.tar.gz")
    book = _open()
    if artifact:
        if version_id:
            raise UsageError("--version-id goes with an S3 object, not --artifact", "leave it out")
        result = lineage.inputs_of_artifact(book, artifact)
        if as_json:
            _print_json(result)
            return
        for run in result["made_by"]:
            _print_inputs(out, run, artifact)
        return
    result = lineage.runs_that_read(book, uri, version_id)
    if as_json:
        _print_json(result)
        return
    if not result["runs"]:
        what = f"{uri} (version {version_id})" if version_id else uri
        _say(f"No recorded run read {what}.")
        return
    title = f"{len(result['runs'])} run(s) read {uri}" + (f" version {version_id}" if version_id else "")
    table = Table(title=title, title_justify="left")
    table.add_column("run id", no_wrap=True)
    for column in ("job, launched, by", "read", "model artifact"):
        table.add_column(column, overflow="fold")
    for row in lineage.as_rows(result):
        model = row["model_uri"] or "-"
        if row["model_tree_sha256"]:
            model += f"\ntree {row['model_tree_sha256'][:16]}…"
        who = f"{row['job_name']}\n{row['created_at'] or '-'}\n{row['created_by'] or '-'}\n{row['status'] or 'no outcome'}"
        table.add_row(*map(Text, (row["run_id"], who, row["read"], model)))
    out.print(table)
    if len(result["versions"]) > 1 and not version_id:
        _say("Versions read: " + ", ".join(f"{v['version_id']} by {v['runs']} run(s)" for v in result["versions"]))


def _print_inputs(out, run: dict, artifact: str, indent: str = "") -> None:
    def say(line: str) -> None:
        out.print(indent + line, markup=False, highlight=False)

    say(f"{artifact} was made by run {run['run_id']} ({run['job_name']}), launched {run['created_at']} by "
        f"{run['created_by']}: {run['status'] or 'no outcome'}")
    if run["image"].get("stood_in"):
        say(f"  image   {run['image']['stood_in']}")
    else:
        say(f"  image   {run['image']['uri'] or '-'}  digest {run['image']['digest'] or '-'}")
    code = run["code"]
    say(f"  code    {code['repo_url'] or '-'} @ {code['commit'] or '-'}" + (f" + diff {code['diff_sha256']}"
                                                                           if code["diff_sha256"] else ""))
    for channel in run["data"]:
        say(f"  data    {channel['channel']}: {channel['uri']}  {channel['object_count']} objects, manifest "
            f"{channel['manifest_sha256'] or '-'}")
        for obj in channel["objects"][:20]:
            made = f"  <- model of run {', '.join(obj['made_by'])}" if obj.get("made_by") else ""
            say(f"            {obj['key']}  version {obj.get('version_id') or '-'}{made}")
        if len(channel["objects"]) > 20:
            say(f"            … {len(channel['objects']) - 20} more (--json lists all)")
    if run["hyperparameters"]:
        say("  params  " + ", ".join(f"{k}={v}" for k, v in run["hyperparameters"].items()))
    for gap in run["gaps"]:
        say(f"  GAP     {gap['what']}: {gap['why']}")
    for parent in run["upstream"]:
        _print_inputs(out, parent, "  an input", indent + "    ")


def anchor_command(
    to: str = typer.Option(..., "--to", help="file://PATH (a directory gets a new file) or s3://bucket/key "
                                             "(a key ending in / gets a new object)."),
    mode: Optional[str] = typer.Option(None, "--mode", help="S3 Object Lock mode: COMPLIANCE or GOVERNANCE "
                                                            "(default: the bucket's, else COMPLIANCE)."),
    retain_days: Optional[int] = typer.Option(None, "--retain-days", help="S3 Object Lock retention in days "
                                                                          "(default: the bucket's, else 3650)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
):
    """Write the verified head of the log (seq, hash, time) to a file or to S3, under Object Lock where the bucket
    has it. `ledger verify --anchor LOCATION` then catches a log whose newest entries were deleted."""
    from ledger.anchor import save_anchor
    from ledger.cli import _open, _print_json

    written = save_anchor(_open(), to, mode=mode, retain_days=retain_days)
    if as_json:
        _print_json(written.to_dict())
        return
    head = written.anchor["head"]
    _say(f"Anchored entry {head['seq']} {head['entry_hash']} to {written.location}"
         + (f" (version {written.version_id})" if written.version_id else ""))
    if written.retention:
        until = written.to_dict()["retention"]["retain_until"]
        _say(f"Object Lock: {written.retention['mode']} until {until}")
    for note in written.notes:
        _say(f"note: {note}")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
    app.command("lineage")(lineage_command)
    app.command("anchor")(anchor_command)
