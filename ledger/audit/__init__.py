"""The audit layer: reports a reviewer reads, and the evidence that the records are intact. It reads the store
through its queries and records nothing.

    report.py    the report model (pure): runs, data manifests, environments, integrity, the reviewer map
    collect.py   a report's runs read from a ledger, the log verified
    render.py    HTML, Markdown, JSON and PDF, through the templates in templates/
    check.py     a report read back and checked against the log as it is now
    anchor.py    the chain head written where the database cannot rewrite it, and checked against
    signing.py   Ed25519 signatures of reports

`from ledger import audit` gives the report API below in one name.
"""

from ledger.audit.check import check_report, check_report_offline, load_report_integrity
from ledger.audit.collect import collect_report, select_run_ids
from ledger.audit.render import (
    CONTENT_SEAL,
    PDF_ENGINES,
    find_chromium,
    format_from_path,
    plan_content_sha256,
    render,
    render_html,
    render_json,
    render_markdown,
    render_pdf,
    save_report,
)
from ledger.audit.report import (
    FORMATS,
    build_pinning_changes,
    build_report,
    build_request_summary,
    parse_date_bound,
    plan_report_check,
    report_digest,
)

__all__ = [
    "CONTENT_SEAL", "FORMATS", "PDF_ENGINES", "build_pinning_changes", "build_report", "build_request_summary",
    "check_report", "check_report_offline", "collect_report", "find_chromium", "format_from_path", "load_report_integrity",
    "parse_date_bound", "plan_content_sha256", "plan_report_check", "render", "render_html", "render_json",
    "render_markdown", "render_pdf", "report_digest", "save_report", "select_run_ids",
]
