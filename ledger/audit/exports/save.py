"""Exporting runs: the records read from the ledger (and the model archives where a format lists the model's
files), the document built, written (a file, stdout, or an OpenLineage endpoint), signed, and recorded as a later
fact of each run (a `run.annotated` entry under `exports`), so that the audit report links a run to its exports.

    save_export          one format, one or more runs: build, write, sign, record
    save_model_signature   `ledger sign-model`: the model's files unpacked and signed (OpenSSF model signing)
    build_autolog_exports  `ledger.autolog(export=...)`: an observer a format, writing each run's exports as it ends
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from ledger.audit.dsse import build_bundle, build_envelope
from ledger.audit.exports.common import extract_model, read_model_files, require_model_artifact
from ledger.audit.render import save_whole
from ledger.audit.report import build_exports
from ledger.audit.signing import key_id, load_private_key, sign_report_file
from ledger.config import VERSION
from ledger.errors import LedgerError, ReadOnlyStore, UsageError
from ledger.record import RunRecord, utc_now

FORMATS = ("slsa", "openlineage", "cyclonedx", "model-card")
SUFFIXES = {"slsa": ".intoto.jsonl", "openlineage": ".openlineage.jsonl", "cyclonedx": ".cdx.json",
            "model-card": ".model-card.json"}
ONE_RUN_FORMATS = ("cyclonedx", "model-card")  # each describes one model
STDOUT = "-"


@dataclass
class Export:
    """What an export wrote, where, and which runs it covers."""

    format: str
    runs: list[str]
    destination: str  # a file path, an OpenLineage endpoint URL, or "-" for stdout
    sha256: str  # of the bytes written (or sent: the events as JSON lines)
    data: bytes = b""  # what was written
    signed_by: str | None = None  # the key id of the signer (DSSE signatures, or a FILE.sig)
    signature_file: str | None = None
    model_dir: str | None = None  # sign-model: the folder of the model's files that the signature covers
    recorded: bool = True  # False on a read-only ledger: the export could not be recorded as a fact of the runs
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "data"}


def check_export_options(fmt: str, run_count: int, has_output: bool, sign: str | None, to: str | None):
    """Bad options fail here, before any work: the format, the runs, --to and --sign. Returns the signing key."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}", f"use --format {' | '.join(FORMATS)}")
    if not run_count:
        raise UsageError("no run given", "name runs by id, unique prefix or job name")
    if fmt in ONE_RUN_FORMATS and run_count > 1:
        raise UsageError(f"a {fmt} export describes one model; {run_count} runs were given",
                         "export one run at a time")
    if to and fmt != "openlineage":
        raise UsageError(f"--to sends OpenLineage events; {fmt} is written to a file", "use -o FILE")
    if to and has_output:
        raise UsageError("give either --to URL or -o FILE, not both", "")
    if sign and fmt != "slsa" and not has_output:
        raise UsageError(f"--sign writes FILE.sig beside the {fmt} export, and there is no FILE", "add -o FILE")
    return load_private_key(sign) if sign else None


def save_export(book, runs: list[str], fmt: str, output: str | Path | None = None, sign: str | None = None,
                to: str | None = None, session: Any = None) -> Export:
    """Export `runs` as `fmt` to `output` (a file), `to` (an OpenLineage endpoint) or, with neither, into the
    returned Export's data (the command prints it). `sign` is an Ed25519 private key: SLSA envelopes carry its
    DSSE signature; the other formats get FILE.sig (`ledger audit verify FILE --key KEY.pub`)."""
    runs = list(dict.fromkeys(runs))
    key = check_export_options(fmt, len(runs), bool(output), sign, to)
    records = [book.get(ref) for ref in runs]
    destination = to or (str(Path(output).absolute()) if output else STDOUT)
    if fmt == "openlineage":
        data = _send_openlineage(records, output, to)
    else:
        data = _build_document(book, records, fmt, key, output, session)
        if output:
            save_whole(output, data)
    export = Export(format=fmt, runs=[r.run_id for r in records], destination=destination,
                    sha256=hashlib.sha256(data).hexdigest(), data=data)
    if key is not None:
        export.signed_by = key_id(key.public_key())
        if fmt != "slsa":
            export.signature_file = str(sign_report_file(output, sign, None, fmt).absolute())
    _record(book, export)
    return export


def save_model_signature(book, run: str, key: str, model_dir: str | Path | None = None,
                         signature: str | Path | None = None, session: Any = None) -> Export:
    """`ledger sign-model`: the run's model archive (checked against the recorded sha256) unpacked into
    `model_dir` (default ./<job name>-model) and its files signed with OpenSSF model signing and the EC key `key`;
    the bundle goes to `signature` (default MODEL_DIR.sig), and is recorded as a fact of the run."""
    from ledger.audit.model_signature import load_model_signing_key, sign_model_dir

    load_model_signing_key(key)  # a wrong key fails before the archive is read
    record = book.get(run)
    artifact = require_model_artifact(record)
    folder = Path(model_dir or f"{record.job_name}-model").absolute()
    target = Path(signature).absolute() if signature else folder.with_name(folder.name + ".sig")
    extract_model(artifact, folder, session)
    signed_by = sign_model_dir(folder, key, target)
    data = target.read_bytes()
    export = Export(format="model-signing", runs=[record.run_id], destination=str(target),
                    sha256=hashlib.sha256(data).hexdigest(), data=data, signed_by=signed_by, model_dir=str(folder))
    _record(book, export)
    return export


def _build_document(book, records: list[RunRecord], fmt: str, key, output, session) -> bytes:
    if fmt == "slsa":
        return build_bundle(build_envelope(statement, key) for statement in _statements(book, records, session))
    record = records[0]
    if fmt == "cyclonedx":
        from ledger.audit.exports.cyclonedx_bom import build_bom

        return build_bom(record, utc_now(), _provenance_of(record, output)).encode("utf-8")
    from ledger.audit.exports.model_card import build_model_card_content

    return json.dumps(build_model_card_content(record), indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def _statements(book, records: list[RunRecord], session) -> list[bytes]:
    """Each run's provenance statement; after a reproduction's, the statement of its verdict."""
    from ledger.audit.exports.slsa import (
        build_provenance_statement,
        build_verdict_statement,
        check_statement,
        statement_bytes,
    )

    statements = []
    for record in records:
        files = read_model_files(require_model_artifact(record), session)
        statements.append(build_provenance_statement(record, files))
        if record.reproduction_of and record.verdict:
            judged = [e.recorded_at for e in book.entries(record.run_id) if e.kind == "run.verdict"]
            statements.append(build_verdict_statement(record, book.get(record.reproduction_of), files,
                                                      judged[-1] if judged else None))
    for statement in statements:
        check_statement(statement)
    return [statement_bytes(statement) for statement in statements]


def _provenance_of(record: RunRecord, output) -> dict | None:
    """The run's newest SLSA export written to a file, as the BOM's reference: its path relative to the BOM's
    folder (they travel together) and its sha256."""
    files = [e for e in build_exports(record) if e.get("format") == "slsa" and e.get("destination", STDOUT) != STDOUT
             and not str(e["destination"]).startswith(("http://", "https://"))]
    if not files:
        return None
    newest = files[-1]
    base = Path(output).absolute().parent if output else Path.cwd()
    return {"url": quote(Path(os.path.relpath(newest["destination"], base)).as_posix()), "sha256": newest["sha256"]}


def _send_openlineage(records: list[RunRecord], output, to: str | None) -> bytes:
    from ledger.audit.exports import openlineage_events as lineage

    events = [event for record in records for event in lineage.build_events(record)]
    if not output and not to:
        from openlineage.client.serde import Serde

        return "".join(Serde.to_json(event) + "\n" for event in events).encode("utf-8")
    if output:
        save_whole(output, b"")  # a new file: the file transport appends one event a line
        return "".join(line + "\n" for line in lineage.send_events(events, lineage.build_file_transport(output)))\
            .encode("utf-8")
    transport = lineage.build_http_transport(to)
    try:
        sent = lineage.send_events(events, transport)
    except LedgerError:
        raise
    except Exception as error:  # noqa: BLE001 - requests' errors, an HTTP status: one line naming the endpoint
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise LedgerError(f"could not send OpenLineage events to {to}: {type(error).__name__}: {reason}",
                          f"check that a lineage server runs there ({to.rstrip('/')}/api/v1/lineage takes the "
                          "events), or write them to a file with -o FILE") from None
    return "".join(line + "\n" for line in sent).encode("utf-8")


def _record(book, export: Export) -> None:
    """The export as a later fact of each run it covers: one run.annotated entry a run, never a rewrite."""
    fact = {"format": export.format, "destination": export.destination, "sha256": export.sha256,
            "signed_by": export.signed_by, "signature_file": export.signature_file, "exported_at": utc_now(),
            "ledger_version": VERSION, **({"model_dir": export.model_dir} if export.model_dir else {})}
    try:
        for run_id in export.runs:
            book.annotate(run_id, {"exports": {f"{export.format} {export.destination}": fact}})
    except ReadOnlyStore:
        export.recorded = False
        export.notes.append("the ledger is read-only: this export is not recorded as a fact of the runs")


# --- autolog(export=...) ------------------------------------------------------------------------------------------


def build_autolog_exports(export) -> dict[str, Callable]:
    """Observers for `ledger.autolog(export=...)`, one a format, named "export <format>". `export` is a format,
    a list of formats, or {"formats": [...], "dir": DIR, "sign": KEY, "to": URL}: each run's exports are written
    to DIR (default LEDGER_HOME/exports) as <job name><suffix> as the run finishes; OpenLineage events go to URL
    when one is given. Bad options fail here, when autolog() is called, not when a job ends."""
    options = {"formats": [export]} if isinstance(export, str) else (
        dict(export) if isinstance(export, dict) else {"formats": list(export)})
    unknown = set(options) - {"formats", "dir", "sign", "to"}
    if unknown:
        raise UsageError(f"unknown export option(s) {sorted(unknown)}", "use formats, dir, sign and to")
    formats = [options["formats"]] if isinstance(options.get("formats"), str) else list(options.get("formats") or [])
    if not formats:
        raise UsageError("autolog(export=...) names no format", f"give one or more of {', '.join(FORMATS)}")
    to = options.get("to")

    def plan(fmt: str) -> tuple[str | None, str | None]:
        """(to, sign) of one format: only OpenLineage events are sent; events sent are not signed."""
        sent = to if fmt == "openlineage" else None
        return sent, None if sent else options.get("sign")

    for fmt in formats:
        check_export_options(fmt, 1, not plan(fmt)[0], plan(fmt)[1], plan(fmt)[0])

    def observer(fmt: str) -> Callable:
        def write_export(book, record: RunRecord) -> None:
            sent, sign = plan(fmt)
            folder = Path(options.get("dir") or book.settings.home / "exports")
            output = None if sent else folder / f"{record.job_name}{SUFFIXES[fmt]}"
            done = save_export(book, [record.run_id], fmt, output=output, sign=sign, to=sent)
            print(f"ledger: exported {record.run_id} as {fmt} to {done.destination}", file=sys.stderr, flush=True)
        return write_export

    return {f"export {fmt}": observer(fmt) for fmt in formats}
