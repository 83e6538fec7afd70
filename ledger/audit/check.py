"""Checking an audit report: its file read back (JSON, HTML or Markdown, the content digest recomputed), then its
entries against the log as it is now (`check_report`), or with no database at all against the checkpoint and the
inclusion proofs the report carries (`check_report_offline`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ledger import merkle
from ledger.audit.proofs import parse_checkpoint_text
from ledger.audit.render import plan_content_sha256
from ledger.audit.report import INTEGRITY_KIND, REPORT_KIND, build_integrity_block, plan_report_check, report_digest
from ledger.errors import NotFound, TamperDetected, UsageError
from ledger.record import chain_hash, fold_entries
from ledger.store.entries import entries_after, entries_by_seq
from ledger.store.integrity import check_chain


def check_report(book, block: dict) -> dict:
    """`ledger audit check`: a report's entries and head against the log now, plus the chain itself."""
    seqs = {int(e["seq"]) for e in block.get("included_entries") or []}
    seqs |= {int(block["head"]["seq"])} if (block.get("head") or {}).get("seq") else set()
    current = entries_by_seq(book, seqs)
    head = book.head()
    report_head = int((block.get("head") or {}).get("seq") or 0)
    newer = entries_after(book, report_head, {e["run_id"] for e in block.get("included_entries") or []})
    _count, _head_seq, _head_hash, chain_problems = check_chain(book.iter_entries())
    return plan_report_check(block, current, head, chain_problems, newer)


_HTML_BLOCK = re.compile(r'<script type="application/json" id="ledger-audit-integrity">(.*?)</script>', re.S)
_MD_BLOCK = re.compile(r"<!-- ledger-audit-integrity (\{.*?\}) -->", re.S)


def load_report_integrity(path: str | Path) -> tuple[dict, dict | None]:
    """(integrity block, whole report or None) from a report file: JSON, HTML or Markdown. A JSON report whose
    digest no longer matches its content was edited: that is refused."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise NotFound(f"cannot read {path}: {err.strerror}", "give the path of a report made by ledger audit") from None
    if raw.startswith(b"%PDF"):
        raise UsageError(f"{path} is a PDF; its hashes are printed, not machine-readable",
                         "check the JSON, HTML or Markdown form of the same report (ledger audit --format json)")
    text_ = raw.decode("utf-8", errors="replace")
    stripped = text_.lstrip()
    if stripped.startswith("{"):
        try:
            report = json.loads(text_)
        except ValueError as err:
            raise UsageError(f"{path} is not valid JSON ({err})", "give a report made by ledger audit") from None
        if report.get("kind") != REPORT_KIND:
            raise UsageError(f"{path} is not an audit report (kind {report.get('kind')!r})",
                             "give a report made by ledger audit")
        if report_digest(report) != report.get("digest"):
            raise TamperDetected(f"{path} was changed after it was made: its content no longer matches its digest "
                                f"{str(report.get('digest'))[:16]}…",
                                "ask for the original report, or make a new one with ledger audit")
        return {**build_integrity_block(report), "content_checked": True}, report
    match = _HTML_BLOCK.search(text_) or _MD_BLOCK.search(text_)
    if not match:
        raise UsageError(f"{path} holds no ledger audit data", "give a JSON, HTML or Markdown report made by ledger audit")
    try:
        block = json.loads(match.group(1))
    except ValueError as err:
        raise TamperDetected(f"the integrity data in {path} is damaged ({err})", "ask for the original report") from None
    if block.get("kind") != INTEGRITY_KIND:
        raise UsageError(f"{path} holds no ledger audit data", "give a report made by ledger audit")
    sealed = block.get("content_sha256")
    if sealed is not None and plan_content_sha256(raw, str(sealed)) != sealed:
        raise TamperDetected(f"{path} was changed after it was made: its content no longer matches its "
                             f"content_sha256 {str(sealed)[:16]}…",
                             "ask for the original report, or make a new one with ledger audit")
    return {**block, "content_checked": sealed is not None}, None


# --- checking a report offline: the checkpoint and the proofs it carries, no database ----------------------------


def plan_record_facts(record) -> dict:
    """Pure: what a report says of a run that its entries' bodies say directly (no blob needed): who, when, what
    was sent, the pins' digests, the outcome and the verdict."""
    pins, outcome = record.pins, record.outcome
    artifact = outcome.model_artifact
    return {
        "run_id": record.run_id, "job_name": record.job_name, "project": record.project, "backend": record.backend,
        "created_at": record.created_at, "created_by": record.created_by, "reproduction_of": record.reproduction_of,
        "image_digest": pins.image.digest, "code_commit": pins.code.commit, "diff_sha256": pins.code.diff_sha256,
        "manifests": {name: channel.manifest_sha256 for name, channel in sorted(pins.data.items())},
        "hyperparameters": dict(sorted(pins.hyperparameters.items())),
        "status": outcome.status, "metrics": dict(sorted(outcome.metrics.items())),
        "model_sha256": artifact.sha256 if artifact else None,
        "model_tree_sha256": artifact.tree_sha256 if artifact else None,
        "verdict": record.verdict.result if record.verdict else None,
    }


def plan_section_facts(section: dict) -> dict:
    """Pure: the same facts as a report's run section states them."""
    outcome, artifact = section["outcome"], section["outcome"].get("model_artifact") or {}
    return {
        "run_id": section["run_id"], "job_name": section["job_name"], "project": section["project"],
        "backend": section["backend"], "created_at": section["created_at"], "created_by": section["created_by"],
        "reproduction_of": section["reproduction_of"], "image_digest": section["image"].get("digest"),
        "code_commit": section["code"].get("commit"), "diff_sha256": section["code"].get("diff_sha256"),
        "manifests": {d["channel"]: d["manifest_sha256"] for d in section["data"]},
        "hyperparameters": section["hyperparameters"], "status": outcome["status"], "metrics": outcome["metrics"],
        "model_sha256": artifact.get("sha256"), "model_tree_sha256": artifact.get("tree_sha256"),
        "verdict": (section.get("verdict") or {}).get("result"),
    }


def check_report_offline(block: dict, report: dict | None, verifier_key: str | None = None) -> dict:
    """Pure: a report checked with nothing but itself (and the ledger's verifier key, to check the checkpoint's
    signature): each included entry's leaf must be in the checkpointed tree (RFC 9162 inclusion proof); in the
    JSON form, which carries the bodies, each body must hash to its leaf and entry hash, and each run section
    must say what its bodies say."""
    checkpoint = block.get("checkpoint")
    if not checkpoint:
        raise UsageError("this report carries no checkpoint (it was made by an older ledger): it can only be "
                         "checked against the ledger", "check it with: ledger audit check FILE (without --offline)")
    parsed = parse_checkpoint_text(checkpoint["checkpoint"], verifier_key)
    problems: list[dict] = []

    def problem(seq, run_id, what):
        problems.append({"seq": seq, "run_id": run_id, "problem": what})

    if (block.get("head") or {}).get("seq") not in (None, parsed.size):
        problem(None, None, f"the report's head (entry {block['head']['seq']}) is not its checkpoint's tree size "
                            f"({parsed.size})")
    bodies = {e["seq"]: e for e in (report or {}).get("integrity", {}).get("included_entries", []) if "body" in e}
    entries = block.get("included_entries") or []
    for entry in entries:
        seq, run_id = int(entry["seq"]), entry.get("run_id")
        if "audit_path" not in entry:
            problem(seq, run_id, f"entry {seq} carries no inclusion proof")
            continue
        leaf = bytes.fromhex(entry.get("leaf_hash") or "00")
        full = bodies.get(seq)
        if full is not None:
            body = full["body"]
            if merkle.entry_leaf_hash(body) != leaf:
                problem(seq, run_id, f"the body of entry {seq} does not hash to its leaf: the body was changed")
                continue
            if chain_hash(full["prev_hash"], body) != full["entry_hash"]:
                problem(seq, run_id, f"the body of entry {seq} does not hash to its entry hash: the body was changed")
                continue
        path = [bytes.fromhex(node) for node in entry["audit_path"]]
        if not merkle.verify_inclusion(leaf, seq - 1, parsed.size, path, parsed.root):
            problem(seq, run_id, f"entry {seq} is not in the log the checkpoint describes (root "
                                 f"{parsed.root.hex()[:16]}…): its body or its proof was changed")
    if report is not None and not problems:
        problems += _check_sections(report, bodies)
    problems.sort(key=lambda p: (p["seq"] is None, p["seq"] or 0))
    return {
        "ok": not problems,
        "offline": True,
        "report_digest": block.get("report_digest"),
        "report_generated_at": block.get("generated_at"),
        "content_checked": bool(block.get("content_checked")),
        "checkpoint": {"origin": parsed.origin, "tree_size": parsed.size, "root_hash": parsed.root.hex(),
                       "signature": "verified with the key given" if verifier_key else
                       "not checked: give the ledger's verifier key with --key"},
        "entries_checked": len(entries),
        "sections_checked": len((report or {}).get("runs") or []) if report is not None else 0,
        "problems": problems,
        "first_bad": problems[0] if problems else None,
    }


def _check_sections(report: dict, bodies: dict[int, dict]) -> list[dict]:
    """Each run section of a JSON report against the record its included bodies fold into."""
    by_run: dict[str, list[tuple]] = {}
    for seq, entry in sorted(bodies.items()):
        by_run.setdefault(entry["run_id"], []).append((seq, entry["body"], entry["prev_hash"], entry["entry_hash"]))
    problems = []
    for section in report.get("runs") or []:
        run_entries = by_run.get(section["run_id"])
        if not run_entries:
            problems.append({"seq": None, "run_id": section["run_id"], "problem": "the report has no entries of "
                             "this run to check its section against"})
            continue
        stated, recorded = plan_section_facts(section), plan_record_facts(fold_entries(run_entries))
        differing = sorted(k for k in stated if stated[k] != recorded[k])
        if differing:
            problems.append({"seq": run_entries[-1][0], "run_id": section["run_id"], "problem": "the report says "
                             f"of this run what its entries do not: {', '.join(differing)}"})
    return problems
