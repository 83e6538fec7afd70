"""Anchors: the chain's head written somewhere the database's administrator cannot rewrite.

The hash chain proves that no entry was changed, but not that the newest entries were not deleted: a log cut after
entry N is a valid chain. An anchor is the head (seq, hash, time) copied out of the database, with the checkpoint of the
log's Merkle tree then (RFC 9162 root, C2SP checkpoint, signed with `--sign KEY`); a later
`ledger verify --anchor LOCATION` checks that the log still holds that entry with that hash, that its tree now
extends the anchored one (a consistency proof), and then only the entries after it.

    ledger anchor --to file:///var/backups/ledger/           a new anchor-<seq>-<time>.json in that directory
    ledger anchor --to s3://audit-bucket/ledger/anchors/     an object under Object Lock, where the bucket has it
    ledger verify --anchor s3://audit-bucket/ledger/anchors/ every anchor there (every version), against the log

On S3 the anchor is written with Object Lock retention when the bucket has Object Lock enabled: the bucket's default
mode and period, else COMPLIANCE for ten years (the EU AI Act keeps technical documentation for ten years), or what
`--mode`/`--retain-days` say. Under COMPLIANCE nobody, the root account included, can delete that object version
before the date. An audit report is an anchor too: its integrity section records the head when it was made.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from ledger import merkle
from ledger.audit.proofs import build_checkpoint, parse_checkpoint_text
from ledger.capture import aws_error_code, client_for
from ledger.errors import AnchorDamaged, LedgerError, NotFound, TamperDetected, UsageError
from ledger.record import utc_now
from ledger.store.entries import entries_by_seq
from ledger.store.integrity import VerifiedHead, VerifyReport, load_verified_head

ANCHOR_KIND = "ledger.audit.anchor"
ANCHOR_VERSION = 1
DEFAULT_RETENTION_DAYS = 3650
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")


# --- pure -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    scheme: str  # "file" | "s3"
    path: str = ""  # file
    bucket: str = ""  # s3
    key: str = ""  # s3
    version_id: str | None = None

    @property
    def is_collection(self) -> bool:
        """A directory or an S3 prefix: a new anchor gets its own name there; reading takes every anchor in it."""
        if self.scheme == "s3":
            return self.key == "" or self.key.endswith("/")
        return self.path.endswith("/") or Path(self.path).is_dir()

    def uri(self, key: str | None = None) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.key if key is None else key}"
        return Path(self.path if key is None else key).absolute().as_uri()


def parse_location(text: str) -> Location:
    """Pure: `file://PATH`, a plain path, or `s3://bucket/key` (`?versionId=V` reads one version)."""
    raw = (text or "").strip()
    if not raw:
        raise UsageError("no anchor location given", "write it like file:///backups/ledger/ or s3://bucket/anchors/")
    parsed = urlparse(raw)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UsageError(f"{raw!r} names no bucket", "write it like s3://bucket/anchors/")
        version = parse_qs(parsed.query).get("versionId", [None])[0]
        return Location("s3", bucket=parsed.netloc, key=unquote(parsed.path.lstrip("/")), version_id=version)
    if parsed.scheme == "file":
        host = parsed.netloc if parsed.netloc not in ("", "localhost") else ""
        path = unquote(host + parsed.path) if host else unquote(parsed.path)
        return Location("file", path=path + ("/" if raw.endswith("/") and not path.endswith("/") else ""))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise UsageError(f"cannot write or read anchors at {raw!r}", "use file://PATH or s3://bucket/key")
    return Location("file", path=raw)


def build_anchor(head: dict, entries: int, ledger_where: str | None, anchored_at: str,
                 checkpoint: dict | None = None) -> dict:
    """Pure: the anchor document. `head` is the newest entry: seq, entry_hash, run_id, kind, recorded_at;
    `checkpoint` the log's checkpoint then: {origin, tree_size, root_hash, checkpoint (the note text)}."""
    return {
        "kind": ANCHOR_KIND,
        "version": ANCHOR_VERSION,
        "anchored_at": anchored_at,
        "head": {k: head.get(k) for k in ("seq", "entry_hash", "run_id", "kind", "recorded_at")},
        "entries": entries,
        "ledger": ledger_where,
        "checkpoint": checkpoint,
        "check": "ledger verify --anchor LOCATION",
    }


def plan_anchor_name(seq: int, anchored_at: str) -> str:
    """Pure: the file or object name of a new anchor in a directory or prefix; sorts by seq, then time."""
    try:
        stamp = datetime.fromisoformat(anchored_at.replace("Z", "+00:00")).astimezone(timezone.utc)
        label = stamp.strftime("%Y%m%dT%H%M%S%fZ")
    except ValueError:
        label = re.sub(r"[^0-9A-Za-z]", "", anchored_at)
    return f"anchor-{seq:012d}-{label}.json"


def plan_retention(lock_configuration: dict | None, mode: str | None, retain_days: int | None,
                   now: datetime) -> dict | None:
    """Pure: the Object Lock retention to put on a new anchor object, or None when the bucket has no Object Lock.

    The mode and period given win; else the bucket's default rule; else COMPLIANCE for DEFAULT_RETENTION_DAYS.
    """
    config = (lock_configuration or {}).get("ObjectLockConfiguration") or {}
    if config.get("ObjectLockEnabled") != "Enabled":
        return None
    default = (config.get("Rule") or {}).get("DefaultRetention") or {}
    chosen_mode = (mode or default.get("Mode") or "COMPLIANCE").upper()
    if chosen_mode not in LOCK_MODES:
        raise UsageError(f"unknown Object Lock mode {mode!r}", "use COMPLIANCE or GOVERNANCE")
    if retain_days is not None:
        days = int(retain_days)
    elif default.get("Days"):
        days = int(default["Days"])
    elif default.get("Years"):
        days = int(default["Years"]) * 365
    else:
        days = DEFAULT_RETENTION_DAYS
    if days < 1:
        raise UsageError(f"--retain-days {days} is not a retention period", "give one day or more")
    return {"mode": chosen_mode, "retain_until": (now + timedelta(days=days)).replace(microsecond=0), "days": days}


def parse_anchor_document(text: str | bytes, where: str) -> dict:
    """Pure: {seq, entry_hash, run_id, anchored_at, where, source} from an anchor file or an audit report's JSON."""
    try:
        document = json.loads(text)
    except ValueError:
        raise UsageError(f"{where} is not an anchor (not JSON)", "give a file written by ledger anchor, or an "
                         "audit report") from None
    if isinstance(document, dict) and document.get("kind") == ANCHOR_KIND:
        head = document.get("head") or {}
        source, anchored_at = "anchor", document.get("anchored_at")
    elif isinstance(document, dict) and document.get("kind") in ("ledger.audit-report", "ledger.audit-integrity"):
        head = (document.get("integrity") or document).get("head") or {}
        source, anchored_at = "audit report", document.get("generated_at")
    else:
        raise UsageError(f"{where} is not an anchor", "give a file written by ledger anchor, or an audit report")
    if not isinstance(head.get("seq"), int) or not re.fullmatch(r"[0-9a-f]{64}", str(head.get("entry_hash"))):
        raise UsageError(f"{where} holds no head (seq and 64-hex entry_hash)", "give a file written by ledger anchor")
    checkpoint = document.get("checkpoint") if isinstance(document.get("checkpoint"), dict) else None
    if checkpoint is not None:
        parsed = parse_checkpoint_text(str(checkpoint.get("checkpoint") or ""))
        if parsed.size != head["seq"]:
            raise UsageError(f"{where} has a checkpoint of {parsed.size} entries and a head at entry {head['seq']}",
                             "give a file written by ledger anchor")
        checkpoint = {"tree_size": parsed.size, "root_hash": parsed.root.hex(), "origin": parsed.origin}
    return {"seq": head["seq"], "entry_hash": head["entry_hash"], "run_id": head.get("run_id"),
            "anchored_at": anchored_at, "where": where, "source": source, "checkpoint": checkpoint}


def plan_claims_anchor(name: str, data: bytes) -> bool:
    """Pure: whether a document that does not parse as an anchor is a damaged one rather than some other file:
    it is named as `ledger anchor` names anchors, it is not JSON at all, or it says it is an anchor."""
    if re.fullmatch(r"anchor-[0-9]+-[0-9A-Za-z]+\.json", name.rsplit("/", 1)[-1].split("?", 1)[0]):
        return True
    try:
        document = json.loads(data)
    except ValueError:
        return True
    return isinstance(document, dict) and document.get("kind") == ANCHOR_KIND


def plan_anchor_check(anchor: dict, row: dict | None, head_seq: int) -> dict | None:
    """Pure: the problem an anchor shows, or None. `row` is the entry the log holds now at the anchor's seq."""
    seq, recorded = anchor["seq"], anchor["entry_hash"]
    said = f"the {anchor['source']} at {anchor['where']} ({anchor.get('anchored_at') or 'undated'})"
    if seq == 0:
        return None
    if row is None:
        if head_seq < seq:
            first = head_seq + 1
            span = f"entry {seq} was" if first == seq else f"entries {first} to {seq} were"
            problem = (f"the log ends at entry {head_seq}, but {said} records entry {seq} with hash "
                       f"{recorded[:16]}…: {span} deleted")
        else:
            problem = f"entry {seq}, recorded by {said}, is missing from the log"
        return {"seq": seq, "run_id": anchor.get("run_id"), "problem": problem, "anchor": anchor["where"]}
    if row["entry_hash"] != recorded:
        return {"seq": seq, "run_id": row.get("run_id"),
                "problem": (f"entry {seq} has hash {row['entry_hash'][:16]}…, but {said} records {recorded[:16]}…: "
                            f"the log was rewritten at or before entry {seq}"),
                "anchor": anchor["where"]}
    return None


# --- writing --------------------------------------------------------------------------------------------------


@dataclass
class AnchorWritten:
    location: str
    anchor: dict
    retention: dict | None = None
    version_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        retention = dict(self.retention) if self.retention else None
        if retention and isinstance(retention.get("retain_until"), datetime):
            retention["retain_until"] = retention["retain_until"].isoformat().replace("+00:00", "Z")
        return {"location": self.location, "version_id": self.version_id, "anchor": self.anchor,
                "retention": retention, "notes": self.notes}


def _head_entry(book) -> tuple[dict, int]:
    """The newest entry, after checking the log (from the head verified last, if any): an anchor of a log that
    does not verify would vouch for it."""
    report = book.verify(check_projections=False, since=load_verified_head(book))
    if not report.ok:
        bad = report.first_bad
        where = f" at entry {bad['seq']} (run {bad['run_id']})" if bad.get("seq") is not None else ""
        raise TamperDetected(f"refusing to anchor: the log does not verify{where}: {bad['problem']}",
                             "run ledger verify, and restore the database")
    if report.head_seq == 0:
        raise NotFound(f"the ledger {book.where} is empty: there is no head to anchor", "record a run first")
    row = entries_by_seq(book, [report.head_seq]).get(report.head_seq)
    if row is None or row["entry_hash"] != report.head_hash:  # appended between the two reads: anchor what was verified
        return {"seq": report.head_seq, "entry_hash": report.head_hash, "run_id": None, "kind": None,
                "recorded_at": None}, report.entries
    return {"seq": report.head_seq, "entry_hash": row["entry_hash"], "run_id": row["run_id"], "kind": row["kind"],
            "recorded_at": row["recorded_at"]}, report.entries


def save_anchor(book, to: str, *, mode: str | None = None, retain_days: int | None = None,
                session: Any = None, key_path: str | None = None) -> AnchorWritten:
    """`ledger anchor --to LOCATION`: write the verified head, and the checkpoint of the log's tree then (signed
    with the Ed25519 key at `key_path`, if given), to a file or an S3 object."""
    location = parse_location(to)
    head, entries = _head_entry(book)
    anchored_at = utc_now()
    checkpoint = build_checkpoint(book, size=head["seq"], key_path=key_path)
    anchor = build_anchor(head, entries, book.where, anchored_at,
                          {k: checkpoint[k] for k in ("origin", "tree_size", "root_hash", "checkpoint", "verifier_key")})
    body = (json.dumps(anchor, indent=2, sort_keys=True) + "\n").encode("utf-8")
    if location.scheme == "s3":
        return _save_s3(location, anchor, body, mode, retain_days, session)
    if mode or retain_days:
        raise UsageError("--mode and --retain-days apply to S3 Object Lock only",
                         "anchor to s3://bucket/key, or leave them out")
    return _save_file(location, anchor, body)


def _save_file(location: Location, anchor: dict, body: bytes) -> AnchorWritten:
    path = Path(location.path)
    if location.is_collection:
        path = path / plan_anchor_name(anchor["head"]["seq"], anchor["anchored_at"])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(body)
        os.chmod(tmp, 0o444)  # a reminder, not a protection: a file anchor is as safe as the place it is kept
        os.replace(tmp, path)
    except OSError as err:
        raise LedgerError(f"cannot write the anchor {path}: {err.strerror}", "choose a writable place") from None
    notes = ["a file anchor is only as safe as where it is kept: keep a copy out of reach of the database's "
             "administrators, or anchor to S3 under Object Lock"]
    return AnchorWritten(location=path.absolute().as_uri(), anchor=anchor, notes=notes)


def _s3(session: Any = None):
    return client_for(session, "s3")


def _aws_failure(err: Exception, doing: str) -> LedgerError:
    code = aws_error_code(err)
    hint = {"NoSuchBucket": "create the bucket first (with Object Lock, to make anchors undeletable)",
            "AccessDenied": "the credentials need s3:PutObject, s3:GetObject, s3:ListBucketVersions and "
                            "s3:GetBucketObjectLockConfiguration on the bucket"}.get(code, "check the bucket and "
                                                                                         "your AWS credentials")
    return LedgerError(f"cannot {doing}: {code}: {str(err).splitlines()[0][:200]}", hint)


def _save_s3(location: Location, anchor: dict, body: bytes, mode: str | None, retain_days: int | None,
             session: Any) -> AnchorWritten:
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = _s3(session)
    key = location.key
    if location.is_collection:
        key = f"{key}{plan_anchor_name(anchor['head']['seq'], anchor['anchored_at'])}"
    notes: list[str] = []
    try:
        lock = s3.get_object_lock_configuration(Bucket=location.bucket)
    except ClientError as err:
        lock = None
        code = aws_error_code(err)
        if code == "NoSuchBucket":
            raise _aws_failure(err, f"write the anchor to s3://{location.bucket}") from None
        if code != "ObjectLockConfigurationNotFoundError":
            notes.append(f"could not read the bucket's Object Lock configuration ({code}): written without retention")
    except BotoCoreError as err:
        raise _aws_failure(err, f"reach s3://{location.bucket}") from None
    retention = plan_retention(lock, mode, retain_days, datetime.now(timezone.utc))
    if retention is None and (mode or retain_days):
        raise UsageError(f"s3://{location.bucket} has no Object Lock: --mode/--retain-days cannot apply",
                         "create the bucket with Object Lock enabled (ObjectLockEnabledForBucket=True)")
    if retention is None and not notes:
        notes.append(f"s3://{location.bucket} has no Object Lock: this anchor can be deleted or overwritten; "
                     "anchor to a bucket created with Object Lock to make it undeletable")
    extra: dict[str, Any] = {}
    if retention:
        extra = {"ObjectLockMode": retention["mode"], "ObjectLockRetainUntilDate": retention["retain_until"],
                 "ChecksumAlgorithm": "SHA256"}
    try:
        put = s3.put_object(Bucket=location.bucket, Key=key, Body=body, ContentType="application/json", **extra)
        version_id = put.get("VersionId")
        if retention:  # what S3 holds, from head_object (moto's get_object_retention is not reliable)
            head = s3.head_object(Bucket=location.bucket, Key=key, **({"VersionId": version_id} if version_id else {}))
            if head.get("ObjectLockMode") != retention["mode"]:
                notes.append(f"S3 reports Object Lock mode {head.get('ObjectLockMode')!r} on the anchor, "
                             f"not {retention['mode']}")
            if head.get("ObjectLockRetainUntilDate"):
                retention["retain_until"] = head["ObjectLockRetainUntilDate"]
    except (ClientError, BotoCoreError) as err:
        raise _aws_failure(err, f"write the anchor to s3://{location.bucket}/{key}") from None
    return AnchorWritten(location=f"s3://{location.bucket}/{key}", anchor=anchor, retention=retention,
                         version_id=version_id if version_id not in (None, "null") else None, notes=notes)


# --- reading and checking -------------------------------------------------------------------------------------


def read_anchors(where: str, session: Any = None) -> list[dict]:
    """Every anchor at a location: a file, every *.json in a directory, an S3 object (every version of it) or
    every object version under an S3 prefix. Audit reports (JSON, HTML, Markdown) count as anchors. One that
    cannot be read is AnchorDamaged (plan_claims_anchor), never skipped: a garbled anchor must not pass."""
    location = parse_location(where)
    documents = _read_s3(location, session) if location.scheme == "s3" else _read_files(location)
    anchors = []
    for name, data in documents:
        try:
            if name.endswith((".html", ".htm", ".md")) or data.lstrip()[:1] == b"<":
                anchors.append(_anchor_from_report(name, data))
            else:
                anchors.append(parse_anchor_document(data, name))
        except UsageError as error:
            if plan_claims_anchor(name, data):
                raise AnchorDamaged(f"anchor damaged: {name}: {error.message}",
                                    "the log cannot be checked against it: restore it from a copy (or an older S3 "
                                    "version), or move it away and write a new one with ledger anchor") from None
            if not location.is_collection:
                raise
            # in a directory or prefix, other JSON files are not anchors: skip them
    if not anchors:
        raise NotFound(f"no anchor at {where}", "write one with: ledger anchor --to " + where)
    return anchors


def _anchor_from_report(name: str, data: bytes) -> dict:
    import tempfile

    from ledger.audit.check import load_report_integrity

    suffix = ".md" if name.endswith(".md") else ".html"
    with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
        tmp.write(data)
        tmp.flush()
        block, _ = load_report_integrity(tmp.name)
    return parse_anchor_document(json.dumps(block), name)


def _read_files(location: Location) -> list[tuple[str, bytes]]:
    path = Path(location.path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
    elif path.exists():
        files = [path]
    else:
        raise NotFound(f"no anchor at {path}", "give the file or directory that ledger anchor wrote to")
    return [(p.absolute().as_uri(), p.read_bytes()) for p in files]


def _read_s3(location: Location, session: Any) -> list[tuple[str, bytes]]:
    from botocore.exceptions import BotoCoreError, ClientError

    s3 = _s3(session)
    bucket = location.bucket
    try:
        if location.version_id:
            versions = [(location.key, location.version_id)]
        else:
            versions = []
            try:
                pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=location.key)
                for page in pages:
                    for version in page.get("Versions", []):
                        key = version["Key"]
                        if (location.is_collection and key.endswith(".json")) or key == location.key:
                            versions.append((key, version.get("VersionId")))
            except ClientError as err:
                if aws_error_code(err) != "AccessDenied" or location.is_collection:
                    raise
                versions = [(location.key, None)]  # no permission to list versions: read the current object
        documents = []
        for key, version_id in versions:
            args = {"Bucket": bucket, "Key": key}
            if version_id and version_id != "null":
                args["VersionId"] = version_id
            body = s3.get_object(**args)["Body"].read()
            label = f"s3://{bucket}/{key}" + (f"?versionId={version_id}" if version_id and version_id != "null" else "")
            documents.append((label, body))
        return documents
    except (ClientError, BotoCoreError) as err:
        raise _aws_failure(err, f"read the anchor at {location.uri()}") from None


def read_all_anchors(where: str | list[str], session: Any = None) -> list[dict]:
    return [a for location in ([where] if isinstance(where, str) else where) for a in read_anchors(location, session)]


def plan_start(anchors: list[dict]) -> VerifiedHead | None:
    """Pure: the newest anchored checkpoint, where `ledger verify --anchor` starts: what came before it is proven by
    a consistency proof against the anchored root, what came after is checked entry by entry."""
    with_checkpoint = [a for a in anchors if a.get("checkpoint")]
    if not with_checkpoint:
        return None
    newest = max(with_checkpoint, key=lambda a: a["seq"])
    return VerifiedHead(newest["seq"], newest["entry_hash"], newest["checkpoint"]["root_hash"])


def check_anchor_checkpoint(book, anchor: dict, head_seq: int) -> dict | None:
    """The problem an anchored checkpoint shows, or None: the tree now must extend the anchored tree, proven by an
    RFC 9162 consistency proof from the stored tree against the anchored root."""
    checkpoint = anchor.get("checkpoint")
    if not checkpoint or anchor["seq"] > head_seq or anchor["seq"] == 0:
        return None  # no checkpoint, or a log cut short (plan_anchor_check names it)
    _, path = book.consistency_proof(anchor["seq"], head_seq)
    _, root_now = book.tree_root(head_seq)
    if merkle.verify_consistency(anchor["seq"], head_seq, bytes.fromhex(checkpoint["root_hash"]), root_now, path):
        return None
    return {"seq": anchor["seq"], "run_id": anchor.get("run_id"), "anchor": anchor["where"],
            "problem": (f"the Merkle tree of the first {anchor['seq']} entries is not the one anchored at "
                        f"{anchor['where']} (root {checkpoint['root_hash'][:16]}…): the consistency proof fails, the "
                        "log was rewritten at or before that entry")}


def check_anchors(book, report, anchors: list[dict]):
    """`ledger verify --anchor`: the verify report with a problem for every anchor the log no longer matches
    (listed first: an anchor is the outside witness that catches a log cut short or rewritten)."""
    rows = entries_by_seq(book, {a["seq"] for a in anchors})
    head_seq = book.head()[0]
    found = [p for a in anchors if (p := plan_anchor_check(a, rows.get(a["seq"]), head_seq)
                                    or check_anchor_checkpoint(book, a, head_seq))]
    checked = [{**a, "ok": not any(p["anchor"] == a["where"] for p in found)} for a in anchors]
    problems = found + list(report.problems)
    fields = {k: getattr(report, k) for k in ("entries", "head_seq", "head_hash", "verified_at", "scope",
                                              "checked_from", "root_hash")}
    return AnchoredVerifyReport(ok=not problems, problems=problems, anchors=checked, **fields)


@dataclass
class AnchoredVerifyReport(VerifyReport):
    """A VerifyReport that also lists the anchors it was checked against (`ledger verify --anchor --json`)."""

    anchors: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "anchors": self.anchors}
