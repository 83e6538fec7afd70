"""Checking an audit report: its file read back (JSON, HTML or Markdown, the content digest recomputed) and its
entries against the log as it is now."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ledger.audit.render import plan_content_sha256
from ledger.audit.report import INTEGRITY_KIND, REPORT_KIND, build_integrity_block, plan_report_check, report_digest
from ledger.errors import NotFound, TamperDetected, UsageError
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
