"""Terminal views for the command line. Pure: records, run tables and preflight plans in, Rich renderables out."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ledger.audit.report import build_exports
from ledger.record import RunRecord


def _facts(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(Text(name), Text("-" if value in (None, "", [], {}) else str(value)))
    return table


def render_record(record: RunRecord) -> Group:
    pins, outcome = record.pins, record.outcome
    parts = [
        _facts(f"Run {record.run_id}", [
            ("job name", record.job_name), ("project", record.project), ("backend", record.backend),
            ("created", record.created_at), ("by", record.created_by), ("reproduces", record.reproduction_of),
            ("verdict", record.verdict.result if record.verdict else None),
            ("mlflow run", (record.model_extra.get("annotations") or {}).get("mlflow_run_id")),
        ]),
        _facts("Image", [("requested", pins.image.uri), ("ran", pins.image.stood_in() or "the requested image"),
                         ("stand-in fingerprint" if pins.image.stood_in() else "digest", pins.image.digest),
                         ("pinned", pins.image.pinned_uri), ("source", pins.image.source)]),
        _facts("Code", [("repo", pins.code.repo_url), ("commit", pins.code.commit), ("branch", pins.code.branch),
                        ("dirty", pins.code.dirty), ("diff sha256", pins.code.diff_sha256),
                        ("untracked", ", ".join(pins.code.untracked)),
                        ("source archive", pins.code.source_archive.uri if pins.code.source_archive else None)]),
    ]
    data = Table(title="Data", title_justify="left")
    for column in ("channel", "uri", "objects", "bytes", "manifest sha256", "pinned", "snapshot"):
        data.add_column(column, overflow="fold")
    for name, channel in sorted(pins.data.items()):
        data.add_row(*map(Text, (name, channel.uri, str(channel.object_count), str(channel.total_bytes),
                                 (channel.manifest_sha256 or "-")[:16], "yes" if channel.pinned else "no",
                                 channel.snapshot_uri or "")))
    parts.append(data)
    parts.append(_facts("Hyperparameters", sorted(pins.hyperparameters.items())))
    hw = pins.hardware
    parts.append(_facts("Hardware", [("requested", hw.describe_requested()), ("ran", hw.describe_ran(record.backend)),
                                     ("ran: observed", (hw.ran or {}).get("how"))]))
    env = pins.environment
    parts.append(_facts("Environment", [("python", env.python), ("platform", env.platform),
                                        ("packages", len(env.packages)), ("fingerprint", env.fingerprint)]))
    artifact = outcome.model_artifact
    parts.append(_facts("Outcome", [
        ("status", outcome.status), ("arn", outcome.arn), ("started", outcome.started_at),
        ("ended", outcome.ended_at), ("billable seconds", outcome.billable_seconds),
        ("failure", outcome.failure_reason),
        *[(f"metric {k}", v) for k, v in sorted(outcome.metrics.items())],
        ("model", artifact.uri if artifact else None), ("model tree sha256", artifact.tree_sha256 if artifact else None),
    ]))
    gaps = Table(title=f"Gaps ({len(pins.gaps)})", title_justify="left")
    for column in ("what", "why", "fix"):
        gaps.add_column(column, overflow="fold")
    for gap in pins.gaps:
        gaps.add_row(Text(gap.what), Text(gap.why), Text(gap.fix))
    parts.append(gaps)
    if record.verdict:
        parts.append(render_verdict(record.verdict))
    exports = build_exports(record)
    if exports:
        parts.append(_facts(f"Exports ({len(exports)})", [
            (e.get("format"), f"{e.get('destination')} (sha256 {str(e.get('sha256'))[:16]}…"
                              + (f", signed by key {e['signed_by']}" if e.get("signed_by") else "") + ")")
            for e in exports]))
    if record.chain:
        parts.append(_facts("Chain", [("seq", record.chain.seq), ("entry hash", record.chain.entry_hash)]))
    return Group(*parts)


def describe_fact(fact) -> str:
    """One line for a verdict's difference or drift: what, original -> reproduction, and why."""
    if not isinstance(fact, dict):
        return str(fact)
    if "what" in fact:  # a difference
        what, was, now = fact["what"], fact.get("original"), fact.get("reproduction")
    else:  # drift or a substitution
        what, was, now = fact.get("pin") or "?", fact.get("recorded"), fact.get("now")
    line = f"{what}: {'-' if was is None else was} -> {'-' if now is None else now}"
    for key in ("reason", "by"):
        if fact.get(key):
            line += f" ({fact[key]})"
    if fact.get("files"):
        line += f" files: {', '.join(fact['files'][:10])}"
    return line


def render_verdict(verdict) -> Table:
    rows = [("differs", describe_fact(d)) for d in verdict.differences]
    rows += [(f"{e.get('kind') or 'drift'} that could explain it", describe_fact(e)) for e in verdict.explained_by]
    rows += [("compensated drift", describe_fact(c)) for c in verdict.compensated]
    return _facts(f"Verdict: {verdict.result}", rows or [("differs", "nothing")])


def _missing(value) -> bool:
    return value is None or value != value  # None, or NaN (pandas' missing value)


def _number(value) -> str:
    return "" if _missing(value) else f"{float(value):.6g}"


def _text(value, empty: str = "") -> str:
    return empty if _missing(value) else str(value)


def render_runs(frame, max_metrics: int = 3) -> Table:
    """The runs DataFrame as a table; the run id never wraps, since users copy it."""
    table = Table(title=f"{len(frame)} run(s)", title_justify="left")
    table.add_column("run id", no_wrap=True, min_width=26)
    for column in ("job name", "project", "status", "created", "gaps", "verdict"):
        table.add_column(column, overflow="fold")
    metric_columns = [c for c in frame.columns if c.startswith("metrics.")][:max_metrics]
    for column in metric_columns:
        table.add_column(column.removeprefix("metrics."), justify="right")
    for row in frame.to_dict("records"):
        table.add_row(*map(Text, (
            row["run_id"], row["job_name"], row["project"], _text(row["status"], "-"),
            row["created_at"].strftime("%Y-%m-%d %H:%M:%S"), str(row["gap_count"]), _text(row["verdict"]),
            *[_number(row[c]) for c in metric_columns],
        )))
    return table


def render_plan(plan) -> Table:
    table = Table(title=f"Preflight for {plan.run_id} on {plan.backend}", title_justify="left")
    for column in ("pin", "recorded", "now", "action"):
        table.add_column(column, overflow="fold")
    style = {"ok": "", "drift": "yellow", "missing": "red", "unchecked": "red", "blocked": "red"}
    for check in plan.checks:
        table.add_row(Text(check.pin), Text(check.recorded), Text(check.now), Text(check.action),
                      style=style[check.status])
    return table
