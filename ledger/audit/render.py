"""Rendering an audit report: HTML and Markdown through Jinja2 (ledger/audit/templates), the report itself as JSON,
and PDF printed from the HTML by WeasyPrint or headless Chromium.

    render_html       one self-contained file: inline CSS, no script that runs, nothing fetched
    render_markdown   the same sections as Markdown, every value HTML-escaped
    render_json       the report itself, with the full data manifests and package lists
    render_pdf        the HTML printed to PDF
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ledger.audit.report import DEFAULT_MANIFEST_ROWS, FORMATS, VERDICTS, build_integrity_block
from ledger.errors import LedgerError, UsageError
from ledger.record import canonical_json

_ENV = None


def _environment():
    global _ENV
    if _ENV is None:
        from jinja2 import Environment, PackageLoader, StrictUndefined

        env = Environment(
            loader=PackageLoader("ledger.audit", "templates"),
            autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        env.filters.update(when=format_when, size=format_size, short=format_short, md=format_md_cell,
                           duration=format_duration, value=format_value, wrap=format_wrap,
                           who=format_who, sentence=format_sentence)
        _ENV = env
    return _ENV


_MD_ENV = None


def _markdown_environment():
    """The templates' environment, with every value HTML-escaped on output (& < >, as the HTML form escapes
    them): Markdown passes raw HTML through to the page, so a job name or a hyperparameter could carry a script.
    Markup (the integrity block's tojson) is left as it is; a viewer shows each entity as its character."""
    global _MD_ENV
    if _MD_ENV is None:
        _MD_ENV = _environment().overlay(finalize=escape_md_html)
    return _MD_ENV


def escape_md_html(value: Any) -> Any:
    from markupsafe import Markup

    if not isinstance(value, str) or isinstance(value, Markup):
        return value
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_when(value: str | None) -> str:
    """'2026-11-27T20:19:01.790945Z' -> '2026-11-27 20:19:01 UTC'."""
    if not value:
        return "—"
    try:
        when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(run: dict) -> str:
    outcome = run["outcome"]
    try:
        start = datetime.fromisoformat(outcome["started_at"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(outcome["ended_at"].replace("Z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return "—"
    seconds = int((end - start).total_seconds())
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m {seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m {seconds % 60:02d}s"


def format_size(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{value} B"


def format_short(value: str | None, length: int = 12) -> str:
    if not value:
        return "—"
    value = str(value)
    return value if len(value) <= length + 1 else value[:length] + "…"


def format_value(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    return str(value)


_BREAK_AFTER = re.compile(r"(?<=[/:@.=,&?_-])")


def format_wrap(value: Any, every: int = 16):
    """HTML for a long unbroken token (a hash, a URI) with break opportunities (<wbr>) after separators and every
    `every` characters, so that tables lay out fast and wrap cleanly; copying the text copies it whole."""
    from markupsafe import Markup, escape

    text_ = format_value(value)
    if len(text_) <= every:
        return text_
    pieces = []
    for part in _BREAK_AFTER.split(text_):
        pieces.append("<wbr>".join(str(escape(part[i : i + every])) for i in range(0, len(part), every)))
    return Markup("<wbr>".join(pieces))


def format_who(value: str | None) -> str:
    """A caller, short: 'arn:aws:sts::1111:assumed-role/ds/maria' -> 'ds/maria'; user@host and others as they are."""
    if not value:
        return "—"
    match = re.match(r"^arn:aws[\w-]*:(?:sts|iam)::\d+:(?:assumed-role|user|role)/(.+)$", value)
    return match.group(1) if match else value


def format_sentence(value: str | None) -> str:
    """The first letter upper case, the rest as written (run ids stay as they are)."""
    text_ = format_value(value)
    return text_[:1].upper() + text_[1:]


def format_md_cell(value: Any) -> str:
    """A value safe inside a Markdown table cell."""
    text_ = format_value(value)
    return text_.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("*", "\\*").replace("_", "\\_")


def _view(report: dict, manifest_rows: int) -> dict:
    return {"r": report, "manifest_rows": manifest_rows, "verdicts": VERDICTS,
            "integrity_block": {**build_integrity_block(report), "content_sha256": CONTENT_SEAL}}


def render_html(report: dict, manifest_rows: int = DEFAULT_MANIFEST_ROWS) -> str:
    """The report as one self-contained HTML file: inline CSS, no script that runs, nothing fetched."""
    return seal_rendered(_environment().get_template("audit.html.j2").render(**_view(report, manifest_rows)))


def render_markdown(report: dict, manifest_rows: int = DEFAULT_MANIFEST_ROWS) -> str:
    """The report as Markdown; every value HTML-escaped, as in the HTML form (a Markdown viewer renders HTML)."""
    return seal_rendered(_markdown_environment().get_template("audit.md.j2").render(**_view(report, manifest_rows)))


# The HTML and Markdown forms carry `content_sha256` in their integrity block: the sha256 of the file's UTF-8
# bytes with those 64 hex digits written as zeros. `ledger audit check` recomputes it from the file, so an edited
# word is caught as the JSON form's recomputed digest catches it. The bytes are hashed rather than the report
# re-rendered from embedded data: a file made by one version of the templates stays checkable by the next, and
# the full data (every manifest object) need not be embedded twice. Like the JSON digest it binds no author: a
# signature (`ledger audit --sign`, `ledger audit verify --key`) does.
CONTENT_SEAL = "0" * 64
_SEAL_FIELD = '"content_sha256": "{}"'


def plan_content_sha256(data: bytes, sealed: str) -> str | None:
    """Pure: the content_sha256 of a rendered report's bytes that carry `sealed` in their (last) integrity
    block, or None when that field is not in them."""
    field_ = _SEAL_FIELD.format(sealed).encode()
    at = data.rfind(field_)
    if at < 0:
        return None
    blank = _SEAL_FIELD.format(CONTENT_SEAL).encode()
    return hashlib.sha256(data[:at] + blank + data[at + len(field_):]).hexdigest()


def seal_rendered(text_: str) -> str:
    """The rendered HTML or Markdown with its content_sha256 filled in (the placeholder is in its last block)."""
    blank = _SEAL_FIELD.format(CONTENT_SEAL)
    at = text_.rfind(blank)
    if at < 0:
        return text_
    sealed = plan_content_sha256(text_.encode("utf-8"), CONTENT_SEAL)
    return text_[:at] + _SEAL_FIELD.format(sealed) + text_[at + len(blank):]


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


PDF_ENGINES = ("auto", "weasyprint", "chromium")


def render_pdf(report_or_html: dict | str, engine: str = "auto", manifest_rows: int = DEFAULT_MANIFEST_ROWS) -> bytes:
    """The HTML report printed to PDF: WeasyPrint (needs Pango), else headless Chromium."""
    html = report_or_html if isinstance(report_or_html, str) else render_html(report_or_html, manifest_rows)
    if engine not in PDF_ENGINES:
        raise UsageError(f"unknown PDF engine {engine!r}", f"use one of: {', '.join(PDF_ENGINES)}")
    failures = []
    if engine in ("auto", "weasyprint"):
        try:
            return _pdf_with_weasyprint(html)
        except (ImportError, OSError) as err:  # not installed, or its system libraries (Pango) are missing
            failures.append(f"WeasyPrint: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
            if engine == "weasyprint":
                raise LedgerError(f"cannot print the PDF with {failures[0]}",
                                  "pip install weasyprint (and on Debian: apt-get install libpango-1.0-0 "
                                  "libpangoft2-1.0-0), or use --pdf-engine chromium") from None
    browser = find_chromium()
    if browser:
        return _pdf_with_chromium(html, browser)
    failures.append("Chromium: not found (chromium, chromium-browser or google-chrome on PATH)")
    raise LedgerError("cannot print the PDF: " + "; ".join(failures),
                      "pip install weasyprint (Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0) or install "
                      "Chromium; or write --format html and print that")


def _weasyprint_fetcher():
    """A URL fetcher that fetches nothing but data: URLs: the report is self-contained, and must stay so."""
    import weasyprint

    fetcher_class = getattr(weasyprint, "URLFetcher", None)  # WeasyPrint 68+
    if fetcher_class is not None:
        return fetcher_class(allowed_protocols=("data",))

    def refuse(url: str, *args, **kwargs):  # older WeasyPrint: a function
        if url.startswith("data:"):
            return weasyprint.default_url_fetcher(url, *args, **kwargs)
        raise ValueError(f"the audit report fetches nothing ({url})")

    return refuse


def _pdf_with_weasyprint(html: str) -> bytes:
    import logging

    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    return weasyprint.HTML(string=html, url_fetcher=_weasyprint_fetcher()).write_pdf()


def find_chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _pdf_with_chromium(html: str, browser: str) -> bytes:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ledger-pdf-") as tmp:
        page, out = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        page.write_text(html, encoding="utf-8")
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--no-first-run", "--disable-extensions",
                   f"--user-data-dir={Path(tmp) / 'profile'}", "--no-pdf-header-footer",
                   "--run-all-compositor-stages-before-draw", f"--print-to-pdf={out}", page.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise LedgerError("Chromium took over 5 minutes to print the PDF", "write --format html instead") from None
        if not out.exists() or out.stat().st_size == 0:
            tail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise LedgerError(f"Chromium did not print the PDF ({tail[0]})", "try --pdf-engine weasyprint")
        return out.read_bytes()


def render(report: dict, fmt: str, *, manifest_rows: int = DEFAULT_MANIFEST_ROWS, pdf_engine: str = "auto") -> bytes:
    """The report in one of FORMATS, as the bytes to write."""
    if fmt == "html":
        return render_html(report, manifest_rows).encode("utf-8")
    if fmt == "md":
        return render_markdown(report, manifest_rows).encode("utf-8")
    if fmt == "json":
        return render_json(report).encode("utf-8")
    if fmt == "pdf":
        return render_pdf(report, pdf_engine, manifest_rows)
    raise UsageError(f"unknown report format {fmt!r}", f"use one of: {', '.join(FORMATS)}")


def save_report(report: dict, path: str | Path, fmt: str, **options) -> Path:
    """Write the report; the file appears whole or not at all."""
    return save_whole(path, render(report, fmt, **options))


def save_whole(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that the file appears whole or not at all (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def format_from_path(path: str | Path) -> str | None:
    """Pure: the format a file name implies (report.html -> html), or None."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"htm": "html", "markdown": "md"}.get(suffix, suffix) if suffix in (*FORMATS, "htm", "markdown") else None
