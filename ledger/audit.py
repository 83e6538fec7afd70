"""Audit reports: what was trained, on what and by whom, and evidence that the records are intact.

    build_report      pure: the runs' records, their log entries and a verify result in; a report (plain JSON data) out
    collect_report    reads those from a ledger (the runs asked for, their reproductions), verifies, builds
    render_html       the report through Jinja2 (ledger/templates/audit.html.j2): one self-contained file
    render_markdown   the same sections as Markdown (ledger/templates/audit.md.j2)
    render_json       the report itself, with the full data manifests and package lists
    render_pdf        the HTML printed to PDF by WeasyPrint, or by headless Chromium where WeasyPrint cannot run
    check_report      a report's entry hashes against the log as it is now: names the first entry that changed

The report's `digest` is the sha256 of the canonical JSON of everything else in it; the HTML, Markdown and PDF
forms print it, and `ledger audit --sign` signs it (ledger/signing.py).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ledger.errors import LedgerError, NotFound, TamperDetected, UsageError
from ledger.record import RunRecord, canonical_json, chain_hash, digest, fold_entries, utc_now

REPORT_KIND = "ledger.audit-report"
INTEGRITY_KIND = "ledger.audit-integrity"
FORMAT_VERSION = 1
FORMATS = ("html", "pdf", "md", "json")
VERDICTS = ("IDENTICAL", "EQUIVALENT", "DIVERGED", "UNVERIFIABLE")
DEFAULT_MANIFEST_ROWS = 500
CHAIN_RULE = ("entry_hash = sha256(prev_hash + sha256(body)), as lowercase hex text; the first entry's prev_hash "
              "is 64 zeros")

# What a reviewer asks, where the EU AI Act (Regulation 2024/1689, Annex IV: technical documentation of a high-risk
# AI system) and the Federal Reserve's SR 11-7 (Supervisory Guidance on Model Risk Management, 2011) ask it, and
# which section of this report answers. Pointers to evidence, not a statement of compliance.
REVIEWER_MAP: tuple[dict[str, str], ...] = (
    {"question": "Which model is this: who trained it, when, from which version of the code?",
     "eu_ai_act": "Annex IV 1(a) provider and version; 2(a) methods and steps of development",
     "sr_11_7": "Documentation detailed enough for someone unfamiliar with the model (VI)",
     "section": "Runs: who and when, request, code (commit and diff digest)"},
    {"question": "What data was it trained and validated on, and where did the data come from?",
     "eu_ai_act": "Annex IV 2(d) training data: provenance, scope, main characteristics; 2(g) validation data",
     "sr_11_7": "Data quality and relevance, with appropriate documentation (IV)",
     "section": "Runs: data channels; Appendix A: data manifests (every object version)"},
    {"question": "Which software did it run, and on what computational resources?",
     "eu_ai_act": "Annex IV 1(c) versions of relevant software; 2(c) computational resources used to develop, "
                  "train, test and validate",
     "sr_11_7": "Model implementation (IV)",
     "section": "Runs: image by digest, hardware; Appendix B: environments"},
    {"question": "Which design choices and settings were used?",
     "eu_ai_act": "Annex IV 2(b) design specifications and key design choices",
     "sr_11_7": "Design, theory and logic of the model (IV)",
     "section": "Runs: hyperparameters, request"},
    {"question": "How was it tested, and can its result be reproduced?",
     "eu_ai_act": "Annex IV 2(g) validation and testing procedures, metrics, test logs dated and signed",
     "sr_11_7": "Validation: outcomes analysis, process verification (V)",
     "section": "Runs: outcome, metrics, reproductions and verdicts; Summary"},
    {"question": "What is not known about it, or could not be pinned?",
     "eu_ai_act": "Annex IV 2(b) assumptions made",
     "sr_11_7": "Limitations and key assumptions (VI)",
     "section": "Runs: gaps, each with its fix; Summary: runs with gaps"},
    {"question": "What changed from one run to the next?",
     "eu_ai_act": "Annex IV 6: relevant changes through the lifecycle",
     "sr_11_7": "Material changes are validated before use (V)",
     "section": "Runs in time order: commit, data manifests, hyperparameters (ledger diff A B compares two)"},
    {"question": "Are these records complete and unaltered since they were made?",
     "eu_ai_act": "Annex IV 2(g) logs and reports dated and signed",
     "sr_11_7": "Governance and controls over models and their documentation (VI)",
     "section": "Integrity: chain verified, head hash, every entry's hash; signature; anchors"},
)
REVIEWER_MAP_NOTE = ("This table points to evidence; it is not legal advice. Annex IV also asks for what a training "
                     "ledger does not hold, e.g. the intended purpose, risk management (Art. 9), human oversight "
                     "(2(e)) and post-market monitoring; SR 11-7 also expects independent validation and "
                     "ongoing monitoring.")


# --- pure: the report model -----------------------------------------------------------------------------------


def build_report(records: Iterable[RunRecord], *, verify: Any = None, entries: Iterable[Any] | None = None,
                 scope: dict | None = None, generated_at: str | None = None, generated_by: str | None = None,
                 ledger_where: str | None = None, ledger_version: str | None = None) -> dict:
    """Pure: the report of these runs (originals and reproductions) as plain JSON data, with its digest.

    `verify` is a VerifyReport (or its `to_dict()`) made when the report was; `entries` are the runs' log entries,
    each with seq, run_id, kind, recorded_at, prev_hash and entry_hash (EntryRow or dict); without them each run's
    newest entry (its `chain`) stands in.
    """
    records = list(records)
    if not records:
        raise NotFound("no runs to report on", "list runs with: ledger runs; or widen --project/--since/--until")
    by_id = {r.run_id: r for r in records}
    entry_rows = _entry_dicts(entries, records)
    by_run: dict[str, list[dict]] = defaultdict(list)
    for row in entry_rows:
        by_run[row["run_id"]].append(row)
    reproductions: dict[str, list[RunRecord]] = defaultdict(list)
    for record in records:
        if record.reproduction_of:
            reproductions[record.reproduction_of].append(record)
    for children in reproductions.values():
        children.sort(key=lambda r: (r.created_at, r.run_id))

    ordered = _report_order(records, by_id, reproductions)
    manifests, manifest_of = _build_manifests(ordered)
    environments, environment_of = _build_environments(ordered)
    runs = [
        build_run_section(record, by_run.get(record.run_id, []), reproductions.get(record.run_id, []),
                          by_id.get(record.reproduction_of or ""), manifest_of, environment_of)
        for record in ordered
    ]
    number = {run["run_id"]: i for i, run in enumerate(runs, 1)}  # the "#" a reader sees in the report
    for run in runs:
        run["number"] = number[run["run_id"]]
        run["reproduction_of_number"] = number.get(run["reproduction_of"] or "")
        for reproduction in run["reproductions"]:
            reproduction["number"] = number.get(reproduction["run_id"])
    report = {
        "kind": REPORT_KIND,
        "format_version": FORMAT_VERSION,
        "title": "Training audit report",
        "generated_at": generated_at or utc_now(),
        "generated_by": generated_by,
        "ledger": ledger_where,
        "ledger_version": ledger_version,
        "scope": build_scope(scope or {}, records),
        "summary": build_summary(records, reproductions),
        "reviewer_map": {"rows": [dict(row) for row in REVIEWER_MAP], "note": REVIEWER_MAP_NOTE},
        "runs": runs,
        "integrity": build_integrity(verify, entry_rows),
        "appendix": {"manifests": manifests, "environments": environments},
    }
    report["digest"] = report_digest(report)
    return report


def report_digest(report: dict) -> str:
    """sha256 of the canonical JSON of the report without its `digest`: what the HTML, PDF and Markdown print and
    what `--sign` signs."""
    return digest({k: v for k, v in report.items() if k != "digest"})


def _report_order(records: list[RunRecord], by_id: dict, reproductions: dict) -> list[RunRecord]:
    """Originals in time order, each followed by its reproductions (and theirs)."""
    ordered: list[RunRecord] = []
    seen: set[str] = set()

    def visit(record: RunRecord) -> None:
        if record.run_id in seen:
            return
        seen.add(record.run_id)
        ordered.append(record)
        for child in reproductions.get(record.run_id, []):
            visit(child)

    roots = [r for r in records if not r.reproduction_of or r.reproduction_of not in by_id]
    for record in sorted(roots, key=lambda r: (r.created_at, r.run_id)):
        visit(record)
    for record in sorted(records, key=lambda r: (r.created_at, r.run_id)):  # cycles, if a log ever had one
        visit(record)
    return ordered


def _entry_dicts(entries: Iterable[Any] | None, records: list[RunRecord]) -> list[dict]:
    keys = ("seq", "run_id", "kind", "recorded_at", "prev_hash", "entry_hash")
    if entries is None:
        rows = [{"seq": r.chain.seq, "run_id": r.run_id, "kind": None, "recorded_at": None,
                 "prev_hash": r.chain.prev_hash, "entry_hash": r.chain.entry_hash} for r in records if r.chain]
    else:
        rows = [{k: (e.get(k) if isinstance(e, dict) else getattr(e, k, None)) for k in keys} for e in entries]
    return sorted(rows, key=lambda e: e["seq"])


def build_scope(scope: dict, records: list[RunRecord]) -> dict:
    """What the report covers, in words and in data."""
    asked = list(scope.get("runs") or [])
    parts = []
    if asked:
        parts.append(f"runs {', '.join(asked)}")
    if scope.get("project"):
        parts.append(f"project {scope['project']}")
    if scope.get("since"):
        parts.append(f"launched from {scope['since']}")
    if scope.get("until"):
        parts.append(f"launched until {scope['until']}")
    originals = sum(1 for r in records if not r.reproduction_of)
    description = ("; ".join(parts) if parts else "every run in the ledger")
    created = sorted(r.created_at for r in records)
    return {
        "runs": asked,
        "project": scope.get("project"),
        "since": scope.get("since"),
        "until": scope.get("until"),
        "description": description,
        "included_runs": len(records),
        "originals": originals,
        "reproductions": len(records) - originals,
        "first_launched": created[0] if created else None,
        "last_launched": created[-1] if created else None,
        "projects": sorted({r.project for r in records}),
        "note": "Reproductions of the runs in scope, and the originals of reproductions in scope, are included.",
    }


def build_summary(records: list[RunRecord], reproductions: dict[str, list[RunRecord]]) -> dict:
    """Across runs: fully pinned or with gaps; originals by their newest reproduction's verdict; never reproduced."""
    originals = [r for r in records if not r.reproduction_of]
    repro_records = [r for r in records if r.reproduction_of]
    gap_kinds = Counter(gap.what for r in records for gap in r.pins.gaps)
    by_latest: Counter[str] = Counter()
    for record in originals:
        children = reproductions.get(record.run_id, [])
        if not children:
            by_latest["never reproduced"] += 1
            continue
        judged = [c for c in children if c.verdict]
        by_latest[judged[-1].verdict.result if judged else "no verdict yet"] += 1
    return {
        "runs": len(records),
        "originals": len(originals),
        "reproductions": len(repro_records),
        "fully_pinned": sum(1 for r in records if not r.pins.gaps and not build_unpinned_references(r)),
        "with_gaps": sum(1 for r in records if r.pins.gaps or build_unpinned_references(r)),
        "gap_kinds": dict(sorted(gap_kinds.items())),
        "status": dict(sorted(Counter(r.outcome.status or "unknown" for r in records).items())),
        "originals_by_verdict": {v: by_latest.get(v, 0) for v in VERDICTS},
        "originals_reproduced_without_verdict": by_latest.get("no verdict yet", 0),
        "never_reproduced": by_latest.get("never reproduced", 0),
        "reproductions_by_verdict": {
            **{v: sum(1 for r in repro_records if r.verdict and r.verdict.result == v) for v in VERDICTS},
            "no verdict": sum(1 for r in repro_records if not r.verdict),
        },
        "note": "An original counts under the verdict of its newest reproduction.",
    }


def build_request_summary(request: dict) -> list[dict]:
    """The CreateTrainingJob request, as a reviewer reads it: [{name, value}] in a fixed order, empty ones left out."""
    algorithm = request.get("AlgorithmSpecification") or {}
    resources = request.get("ResourceConfig") or {}
    stopping = request.get("StoppingCondition") or {}
    hyper = request.get("HyperParameters") or {}
    channels = [c.get("ChannelName") for c in request.get("InputDataConfig") or [] if isinstance(c, dict)]
    tags = [f"{t.get('Key')}={t.get('Value', '')}" for t in request.get("Tags") or [] if isinstance(t, dict)]
    instance = None
    if resources.get("InstanceType"):
        instance = f"{resources.get('InstanceCount', 1)} × {resources['InstanceType']}"
        if resources.get("VolumeSizeInGB"):
            instance += f", {resources['VolumeSizeInGB']} GB volume"
    elif resources.get("InstanceGroups"):
        instance = ", ".join(f"{g.get('InstanceCount')} × {g.get('InstanceType')}" for g in resources["InstanceGroups"])
    program = hyper.get("sagemaker_program")
    rows = [
        ("Training job name", request.get("TrainingJobName")),
        ("Training image (as sent)", algorithm.get("TrainingImage") or algorithm.get("AlgorithmName")),
        ("Input mode", algorithm.get("TrainingInputMode")),
        ("Entry point", program.strip('"') if isinstance(program, str) else algorithm.get("ContainerEntrypoint")),
        ("Execution role", request.get("RoleArn")),
        ("Input channels", ", ".join(str(c) for c in channels) or None),
        ("Output path", (request.get("OutputDataConfig") or {}).get("S3OutputPath")),
        ("Instances", instance),
        ("Max runtime", f"{stopping['MaxRuntimeInSeconds']} s" if stopping.get("MaxRuntimeInSeconds") else None),
        ("Metric definitions", ", ".join(m.get("Name", "?") for m in algorithm.get("MetricDefinitions") or []) or None),
        ("Network isolation", "on" if request.get("EnableNetworkIsolation") else None),
        ("VPC", "yes" if request.get("VpcConfig") else None),
        ("Managed spot training", "on" if request.get("EnableManagedSpotTraining") else None),
        ("Environment variables", ", ".join(sorted(request.get("Environment") or {})) or None),
        ("Tags", ", ".join(tags) or None),
        ("Request digest", f"sha256:{digest(request)}" if request else None),
    ]
    return [{"name": name, "value": str(value)} for name, value in rows if value not in (None, "")]


def build_pinning_changes(original: dict | None, sent: dict) -> list[str]:
    """The paths of the request that pinning rewrote before it was sent (empty when it was sent as built)."""
    if not original:
        return []
    changed: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{path}[{i}]")
        elif a != b:
            changed.append(path or "(request)")

    walk(original, sent, "")
    return changed


def build_code_channels(record: RunRecord) -> list[dict]:
    """The SDK 3.x code channels the run read: where, their content digest, and how they are pinned."""
    from ledger.capture.code import plan_code_channel_pinned

    rows = []
    for name, channel in sorted((record.pins.code.model_extra.get("code_channels") or {}).items()):
        objects = channel.get("objects") or []
        versioned = bool(objects) and all(o.get("version_id") for o in objects)
        rows.append({
            "channel": name, "uri": channel.get("uri"), "tree_sha256": channel.get("tree_sha256"),
            "object_count": channel.get("object_count", 0), "total_bytes": channel.get("total_bytes", 0),
            "pinned": plan_code_channel_pinned(channel),
            "how": "by version id" if versioned else ("a copy kept in the ledger" if channel.get("kept") else
                                                      "by content digest only: nothing to restore it from"),
        })
    return rows


def build_unpinned_references(record: RunRecord) -> list[str]:
    """References the run read that are not pinned although no gap says so (records made before the ledger named
    them): a code channel with neither versions nor a kept copy, a data channel not pinned. Pure."""
    named = [gap.what for gap in record.pins.gaps]
    found = []
    for row in build_code_channels(record):
        what = f"code channel {row['channel']}"
        if not row["pinned"] and not any(w.startswith(what) for w in named):
            found.append(f"{what} ({row['uri']}): {row['how']}")
    for name, channel in sorted(record.pins.data.items()):
        what = f"data channel {name}"
        if not channel.pinned and not any(w.startswith(what) for w in named):
            found.append(f"{what} ({channel.uri}): not pinned to versions or a kept copy")
    return found


def _dump(part: Any) -> dict:
    return part.model_dump(mode="json") if part is not None and hasattr(part, "model_dump") else (part or {})


def build_run_section(record: RunRecord, entries: list[dict], reproductions: list[RunRecord],
                      original: RunRecord | None, manifest_of: dict, environment_of: dict) -> dict:
    """One run: who and when, request, image, code, data, hyperparameters, hardware, outcome, gaps, reproductions."""
    pins, outcome = record.pins, record.outcome
    artifact = outcome.model_artifact
    code = _dump(pins.code)
    code.pop("repo_root", None)  # a path on the launching machine: not evidence, and noise to a reviewer
    code["untracked_count"] = code.get("untracked_count", len(pins.code.untracked))
    data = []
    for name, channel in sorted(pins.data.items()):
        data.append({
            "channel": name,
            "uri": channel.uri,
            "kind": channel.kind,
            "object_count": channel.object_count,
            "total_bytes": channel.total_bytes,
            "manifest_sha256": channel.manifest_sha256,
            "pinned": channel.pinned,
            "versioned_objects": sum(1 for o in channel.objects if o.version_id),
            "snapshot_uri": channel.snapshot_uri,
            "manifest_ref": manifest_of.get((record.run_id, name)),
        })
    environment = pins.environment
    return {
        "run_id": record.run_id,
        "job_name": record.job_name,
        "project": record.project,
        "backend": record.backend,
        "created_at": record.created_at,
        "created_by": record.created_by,
        "role": "reproduction" if record.reproduction_of else "original",
        "reproduction_of": record.reproduction_of,
        "reproduction_of_job": original.job_name if original else None,
        "record_digest": record.digest(),
        "request": build_request_summary(record.request),
        "pinned_before_sending": build_pinning_changes(record.original_request, record.request),
        "image": {**_dump(pins.image), "stood_in": pins.image.stood_in()},
        "code": code,
        "data": data,
        "hyperparameters": dict(sorted(pins.hyperparameters.items())),
        "hardware": {**_dump(pins.hardware), "requested_line": pins.hardware.describe_requested(),
                     "ran_line": pins.hardware.describe_ran(record.backend)},
        "environment": {
            "python": environment.python,
            "platform": environment.platform,
            "fingerprint": environment.fingerprint,
            "package_count": len(environment.packages),
            "ref": environment_of.get(record.run_id),
        },
        "outcome": {
            "status": outcome.status,
            "arn": outcome.arn,
            "started_at": outcome.started_at,
            "ended_at": outcome.ended_at,
            "billable_seconds": outcome.billable_seconds,
            "failure_reason": outcome.failure_reason,
            "metrics": dict(sorted(outcome.metrics.items())),
            "model_artifact": _dump(artifact) if artifact else None,
        },
        "code_channels": build_code_channels(record),
        "gaps": [_dump(gap) for gap in pins.gaps],
        "unpinned": build_unpinned_references(record),
        "fully_pinned": not pins.gaps and not build_unpinned_references(record),
        "verdict": _dump(record.verdict) if record.verdict else None,
        "reproductions": [
            {"run_id": r.run_id, "job_name": r.job_name, "created_at": r.created_at, "status": r.outcome.status,
             "verdict": r.verdict.result if r.verdict else None,
             "differences": list(r.verdict.differences) if r.verdict else [],
             "explained_by": list(r.verdict.explained_by) if r.verdict else [],
             "compensated": list(r.verdict.compensated) if r.verdict else []}
            for r in reproductions
        ],
        "entries": [{"seq": e["seq"], "kind": e["kind"], "recorded_at": e["recorded_at"],
                     "entry_hash": e["entry_hash"]} for e in entries],
    }


def _build_manifests(records: list[RunRecord]) -> tuple[list[dict], dict]:
    """Each distinct data manifest once (runs that read the same object versions share it), with every object."""
    from ledger.capture.data import plan_manifest_sha256

    manifests: dict[str, dict] = {}
    ref_of: dict[tuple[str, str], str] = {}
    for record in records:
        for name, channel in sorted(record.pins.data.items()):
            key = channel.manifest_sha256 or f"{record.run_id}/{name}"
            ref_of[(record.run_id, name)] = key
            found = manifests.get(key)
            if found is None:
                recomputed = plan_manifest_sha256(channel.objects) if channel.objects else None
                found = manifests[key] = {
                    "ref": key,
                    "manifest_sha256": channel.manifest_sha256,
                    "digest_matches_objects": (recomputed == channel.manifest_sha256) if recomputed else None,
                    "uris": [],
                    "kind": channel.kind,
                    "object_count": channel.object_count,
                    "total_bytes": channel.total_bytes,
                    "objects": [o.model_dump(mode="json") for o in channel.objects],
                    "used_by": [],
                }
            if channel.uri not in found["uris"]:
                found["uris"].append(channel.uri)
            found["used_by"].append({"run_id": record.run_id, "job_name": record.job_name, "channel": name})
    return list(manifests.values()), ref_of


def _build_environments(records: list[RunRecord]) -> tuple[list[dict], dict]:
    environments: dict[str, dict] = {}
    ref_of: dict[str, str] = {}
    for record in records:
        env = record.pins.environment
        if not (env.packages or env.python):
            continue
        key = env.fingerprint or digest(env.model_dump(mode="json"))
        ref_of[record.run_id] = key
        found = environments.setdefault(key, {
            "ref": key, "fingerprint": env.fingerprint, "python": env.python, "platform": env.platform,
            "packages": dict(sorted(env.packages.items())), "used_by": [],
        })
        found["used_by"].append(record.run_id)
    return list(environments.values()), ref_of


def build_integrity(verify: Any, entries: list[dict]) -> dict:
    """The verify result at report time, the head, and every included entry's seq and hash."""
    result = verify.to_dict() if hasattr(verify, "to_dict") else verify
    return {
        "verified": result is not None,
        "ok": result.get("ok") if result else None,
        "verified_at": result.get("verified_at") if result else None,
        "entries_in_log": result.get("entries") if result else None,
        "head": result.get("head") if result else None,
        "problems": list(result.get("problems") or []) if result else [],
        "rule": CHAIN_RULE,
        "included_entries": entries,
        "check_later": "ledger audit check REPORT   (the JSON, HTML or Markdown form of this report)",
    }


def build_integrity_block(report: dict) -> dict:
    """What `ledger audit check` needs, embedded in the HTML and Markdown forms (the JSON form is the report)."""
    integrity = report["integrity"]
    return {
        "kind": INTEGRITY_KIND,
        "report_digest": report.get("digest"),
        "generated_at": report.get("generated_at"),
        "head": integrity.get("head"),
        "ok": integrity.get("ok"),
        "included_entries": [{k: e[k] for k in ("seq", "run_id", "kind", "entry_hash")}
                             for e in integrity["included_entries"]],
    }


# --- pure: checking a report against the log as it is now ----------------------------------------------------


def plan_report_check(block: dict, current: dict[int, dict], current_head: tuple[int, str],
                      chain_problems: list[dict], newer: list[dict] | None = None) -> dict:
    """Pure. Compare a report's entries (and head) with the entries the log holds now at the same seqs.

    `current` maps seq -> {run_id, kind, body, prev_hash, entry_hash} as stored now. An entry is changed when its
    stored hash differs from the report's, or its body no longer hashes to it; missing when the seq is gone.
    Entries appended after the report are not problems: they are listed in `newer`.
    """
    problems: list[dict] = []
    wanted = list(block.get("included_entries") or [])
    head = block.get("head") or {}
    if head.get("seq"):
        wanted.append({"seq": head["seq"], "run_id": None, "kind": None, "entry_hash": head["entry_hash"],
                       "is_head": True})
    seen: set[int] = set()
    for item in sorted(wanted, key=lambda e: e["seq"]):
        seq = int(item["seq"])
        if seq in seen:
            continue
        seen.add(seq)
        row = current.get(seq)
        what = f"{item.get('kind') or 'entry'} of run {item.get('run_id')}" if item.get("run_id") else "head entry"
        run_id = item.get("run_id") or (row or {}).get("run_id")
        if row is None:
            if seq > current_head[0]:
                problem = (f"missing: the log now ends at entry {current_head[0]}, but the report's {what} is "
                           f"entry {seq}: entries after {current_head[0]} were deleted")
            else:
                problem = f"missing: the report's {what} (entry {seq}) is no longer in the log"
        elif row["entry_hash"] != item["entry_hash"]:
            problem = (f"changed since the report: the report's {what} has hash {item['entry_hash'][:16]}…, "
                       f"the log now has {row['entry_hash'][:16]}… (rewritten at or before this entry)")
        elif chain_hash(row["prev_hash"], row["body"]) != item["entry_hash"]:
            problem = f"changed since the report: the body of the report's {what} no longer hashes to its hash"
        elif item.get("run_id") and row["run_id"] != item["run_id"]:
            problem = f"changed since the report: entry {seq} now belongs to run {row['run_id']}"
        else:
            continue
        problems.append({"seq": seq, "run_id": run_id, "problem": problem})
    for problem in chain_problems:
        if not any(p["seq"] == problem.get("seq") for p in problems):
            problems.append(dict(problem))
    problems.sort(key=lambda p: (p["seq"] is None, p["seq"] or 0))
    return {
        "ok": not problems,
        "report_digest": block.get("report_digest"),
        "report_generated_at": block.get("generated_at"),
        "report_head": head,
        "current_head": {"seq": current_head[0], "entry_hash": current_head[1]},
        "entries_checked": len(seen),
        "appended_since": max(0, current_head[0] - int(head.get("seq") or 0)),
        "newer_facts": list(newer or []),
        "content_checked": bool(block.get("content_checked")),  # the report's own text (its digest) was checked
        "problems": problems,
        "first_bad": problems[0] if problems else None,
    }


# --- side effects: collecting a report from a ledger, and checking one ----------------------------------------


def parse_date_bound(text: str | None, *, end: bool = False) -> str | None:
    """Pure: a --since/--until value (a date or an ISO time; UTC unless it says otherwise) as the UTC text the
    ledger stores. A date alone as --until means the whole of that day."""
    if not text:
        return None
    raw = text.strip()
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"cannot read the date {text!r}", "write it like 2026-11-27 or 2026-11-27T14:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        when += timedelta(days=1)
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _chunks(items: list, size: int = 500):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _in_clause(prefix: str, values: list) -> tuple[str, dict]:
    marks = ",".join(f":{prefix}{i}" for i in range(len(values)))
    return marks, {f"{prefix}{i}": v for i, v in enumerate(values)}


def select_run_ids(book, runs: Iterable[str] = (), project: str | None = None, since: str | None = None,
                   until: str | None = None) -> list[str]:
    """The runs a report covers before its reproductions are added: those named, else those the filters select
    (every run when there is no filter)."""
    from sqlalchemy import text

    named = [book.resolve(ref) for ref in runs]
    if named and not (project or since or until):
        return list(dict.fromkeys(named))
    clauses, binds = [], {}
    if project:
        clauses.append("project = :project")
        binds["project"] = project
    if since:
        clauses.append("created_at >= :since")
        binds["since"] = parse_date_bound(since)
    if until:
        clauses.append("created_at < :until")
        binds["until"] = parse_date_bound(until, end=True)
    sql = "SELECT run_id FROM runs" + (f" WHERE {' AND '.join(clauses)}" if clauses else "") + " ORDER BY run_id"
    with book._reading() as conn:
        selected = [row[0] for row in conn.execute(text(sql), binds)]
    if named:
        keep = set(selected)
        return [r for r in dict.fromkeys(named) if r in keep]
    return selected


def _with_related(conn, run_ids: list[str]) -> list[str]:
    """Add the reproductions of these runs and the originals of those that are reproductions, until closed."""
    from sqlalchemy import text

    included = dict.fromkeys(run_ids)
    frontier = list(run_ids)
    while frontier:
        found: list[str] = []
        for chunk in _chunks(frontier):
            marks, binds = _in_clause("r", chunk)
            rows = conn.execute(text(f"SELECT run_id, reproduction_of FROM runs WHERE reproduction_of IN ({marks}) "
                                     f"OR run_id IN ({marks})"), binds)
            for run_id, original in rows:
                for candidate in (run_id, original):
                    if candidate and candidate not in included:
                        included[candidate] = None
                        found.append(candidate)
        frontier = found
    return list(included)


def read_runs_with_entries(book, run_ids: list[str]) -> tuple[list[RunRecord], list[dict]]:
    """These runs' records, folded from the log, and their entries; a few queries however many runs."""
    from sqlalchemy import text

    by_run: dict[str, list[tuple]] = defaultdict(list)
    entries: list[dict] = []
    with book._reading() as conn:
        for chunk in _chunks(run_ids):
            marks, binds = _in_clause("r", chunk)
            rows = conn.execute(text("SELECT seq, run_id, kind, body, prev_hash, entry_hash, recorded_at FROM entries "
                                     f"WHERE run_id IN ({marks}) ORDER BY seq"), binds)
            for seq, run_id, kind, body, prev_hash, entry_hash, recorded_at in rows:
                by_run[run_id].append((seq, body, prev_hash, entry_hash))
                entries.append({"seq": seq, "run_id": run_id, "kind": kind, "recorded_at": recorded_at,
                                "prev_hash": prev_hash, "entry_hash": entry_hash})
    records = []
    for run_id in run_ids:
        if run_id not in by_run:
            raise NotFound(f"no entries for run {run_id} in {book.where}", "check the database with: ledger verify")
        records.append(fold_entries(sorted(by_run[run_id])))
    return records, sorted(entries, key=lambda e: e["seq"])


def collect_report(book, runs: Iterable[str] = (), project: str | None = None, since: str | None = None,
                   until: str | None = None, *, verify: bool = True) -> dict:
    """Read the runs in scope (with their reproductions), their entries, verify the log, and build the report."""
    from ledger import __version__
    from ledger.capture.environment import build_local_identity

    runs = list(runs or [])
    selected = select_run_ids(book, runs, project, since, until)
    if not selected:
        raise NotFound(f"no runs in {book.where} match {_describe_filters(runs, project, since, until)}",
                       "list runs with: ledger runs")
    with book._reading() as conn:
        included = _with_related(conn, selected)
    records, entries = read_runs_with_entries(book, included)
    result = book.verify() if verify else None  # after reading: the head covers every entry the report names
    return build_report(
        records, verify=result, entries=entries,
        scope={"runs": runs, "project": project, "since": since, "until": until},
        generated_by=build_local_identity(), ledger_where=book.where, ledger_version=__version__,
    )


def _describe_filters(runs, project, since, until) -> str:
    parts = [f"runs {', '.join(runs)}"] if runs else []
    parts += [f"{name} {value}" for name, value in (("project", project), ("since", since), ("until", until)) if value]
    return " and ".join(parts) or "the filters"


def check_report(book, block: dict) -> dict:
    """`ledger audit check`: a report's entries and head against the log now, plus the chain itself."""
    from sqlalchemy import text

    from ledger.store.integrity import check_chain

    seqs = sorted({int(e["seq"]) for e in block.get("included_entries") or []}
                  | ({int(block["head"]["seq"])} if (block.get("head") or {}).get("seq") else set()))
    current: dict[int, dict] = {}
    with book._reading() as conn:
        for chunk in _chunks(seqs):
            marks, binds = _in_clause("s", chunk)
            rows = conn.execute(text(f"SELECT seq, run_id, kind, body, prev_hash, entry_hash FROM entries "
                                     f"WHERE seq IN ({marks})"), binds)
            for seq, run_id, kind, body, prev_hash, entry_hash in rows:
                current[seq] = {"run_id": run_id, "kind": kind, "body": body, "prev_hash": prev_hash,
                                "entry_hash": entry_hash}
        head = book._head(conn)
        report_head = int((block.get("head") or {}).get("seq") or 0)
        run_ids = sorted({e["run_id"] for e in block.get("included_entries") or []})
        newer = []
        for chunk in _chunks(run_ids):
            marks, binds = _in_clause("r", chunk)
            rows = conn.execute(text(f"SELECT seq, run_id, kind, recorded_at FROM entries WHERE seq > :after "
                                     f"AND run_id IN ({marks}) ORDER BY seq"), {**binds, "after": report_head})
            newer += [{"seq": s, "run_id": r, "kind": k, "recorded_at": t} for s, r, k, t in rows]
    _count, _head_seq, _head_hash, chain_problems = check_chain(book.iter_entries())
    return plan_report_check(block, current, head, chain_problems, sorted(newer, key=lambda e: e["seq"]))


# --- reading a report back ------------------------------------------------------------------------------------

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


# --- rendering ------------------------------------------------------------------------------------------------

_ENV = None


def _environment():
    global _ENV
    if _ENV is None:
        from jinja2 import Environment, PackageLoader, StrictUndefined

        env = Environment(
            loader=PackageLoader("ledger", "templates"),
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
    import hashlib

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
    import os

    data = render(report, fmt, **options)
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
