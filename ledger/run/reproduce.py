"""Reproduce a recorded run: preflight (what is still there, what drifted), relaunch pinned, verdict.

    reproduce            the whole thing, as `ledger reproduce` runs it, on the ledger handle it is given
    build_relaunch       pure: the recorded request, pinned, renamed <name>-r<N>, secrets put back
    observe_backend      can the backend run the relaunch at all? asked before anything is launched or recorded

The preflight is in preflight.py, the verdict in verdict.py.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from ledger.backends import get_backend
from ledger.capture import client_for
from ledger.capture.code import capture_source_archive
from ledger.capture.data import SNAPSHOT_PREFIX, build_s3_uri, build_version_id, parse_s3_uri, snapshot_channel
from ledger.capture.secrets import check_secret
from ledger.errors import LedgerError, PlanFailed, UsageError
from ledger.record import REDACTED, Outcome, RunRecord, Verdict
from ledger.run.launch import launch_job, parse_assignments, plan_recorded_set
from ledger.run.observers import notify_finished
from ledger.run.preflight import Plan, failure, observe_world, plan_reproduction
from ledger.run.verdict import build_compensation, build_substitutions, build_verdict, compare_artifacts


def observe_backend(book, record: RunRecord, backend: str, secrets: dict[str, str]) -> dict[str, Any] | None:
    """Can `backend` run the relaunch at all? Asked of the backend's own plan before anything is launched or
    recorded: {runs, why, hint}. None for a backend that cannot be asked."""
    if backend == "sagemaker":
        return {"runs": True}  # SageMaker accepted this request once; it is relaunched as it was sent
    if backend != "local":
        return None
    request = build_relaunch(record, build_reproduction_name(record.job_name, 1), secrets)
    pins = {name: pin.model_dump(mode="json") for name, pin in record.pins.data.items()}
    archive = record.pins.code.source_archive
    try:
        _, environment = get_backend("local", home=book.settings.home).plan(
            request, pins=pins, source_archive=archive.model_dump(mode="json") if archive else None,
            image=record.pins.image.uri, recorded=plan_recorded_set(record.pins))
    except LedgerError as error:
        return {"runs": False, "why": error.message, "hint": error.hint}
    return {"runs": True, "lock_sha256": environment.lock_sha256,
            "environment": f"{environment.describe()} (Python {environment.python_minor})"}


@dataclass
class Reproduction:
    plan: Plan
    record: RunRecord | None = None  # the reproduction run, when one was launched
    verdict: Verdict | None = None

    def to_dict(self) -> dict:
        return {"plan": self.plan.to_dict(), "run_id": self.record.run_id if self.record else None,
                "job_name": self.record.job_name if self.record else None,
                "verdict": self.verdict.model_dump(mode="json") if self.verdict else None}


def reproduce(book, run_ref: str, backend: str | None = None, dry_run: bool = False, allow_drift: bool = False,
              secrets: dict[str, str] | None = None, yes: bool = False, tolerances: dict[str, float] | None = None,
              session: Any = None, log: Callable[[str], None] | None = None,
              confirm: Callable[[Plan], bool] | None = None,
              show_plan: Callable[[Plan], None] | None = None) -> Reproduction:
    """Preflight, relaunch with the recorded pins, and record the verdict in `book`. Returns the plan (and, unless
    dry_run, the reproduction's record and verdict). Raises PlanFailed when pins are missing (unless
    allow_drift), and UsageError for a SageMaker launch that was not confirmed."""
    record = book.get(run_ref)
    backend = backend or record.backend
    secrets = {**_secrets_from_environment(record), **(secrets or {})}
    check_supplied_secrets(record, secrets)
    world = observe_world(book, record, session)
    world["backend"] = observe_backend(book, record, backend, secrets)
    plan = plan_reproduction(record, world, backend, secrets, allow_drift)
    if plan.blocked:
        raise PlanFailed(f"cannot reproduce {record.run_id}: the {backend} backend {plan.blocked[0].now}",
                         plan.blocked[0].action, plan=plan)
    if not plan.ok:
        named = ", ".join(f"{c.pin} ({c.now})" for c in plan.stopping[:5])
        raise PlanFailed(f"cannot reproduce {record.run_id}: {len(plan.stopping)} pin(s) can no longer be had or "
                         f"could not be checked: {named}",
                         "go on with what exists with --allow-drift; the verdict will name the drift", plan=plan)
    if show_plan:
        show_plan(plan)
    if dry_run:
        return Reproduction(plan)
    if backend == "sagemaker" and not yes and not (confirm and confirm(plan)):
        raise UsageError("a SageMaker relaunch costs money and was not confirmed", "add --yes to launch it")

    number = len(book.reproductions_of(record.run_id)) + 1
    inherited = record.pins.model_copy(deep=True)
    for check in plan.missing:  # --allow-drift: go on with what exists
        if check.channel and check.key:
            pin = inherited.data[check.channel]
            pin.objects = [o for o in pin.objects if o.key != check.key]
            pin.object_count, pin.total_bytes = len(pin.objects), sum(o.size or 0 for o in pin.objects)
    channel_uris, submit_directory = {}, None
    if backend == "sagemaker":  # an S3 URI names no version: what moved is read from a copy of what was recorded
        channel_uris = _snapshot_drifted(record, plan, inherited, session)
        channel_uris.update(_restore_code_channels(record, plan, session, book))
        submit_directory = _restore_source_archive(plan, inherited, session)
    request = build_relaunch(record, build_reproduction_name(record.job_name, number), secrets, channel_uris,
                             submit_directory)
    allowed = plan.missing + plan.unchecked
    extra = {"allowed_drift": [c.pin for c in allowed]} if allowed else {}
    new = launch_job(book, request, backend=backend, project=record.project, reproduction_of=record.run_id,
                     session=session, log=log, inherited=inherited, extra=extra)
    original, changed = _compared_original(record.outcome, new.outcome, session)
    uncompensated, compensated = build_compensation(record, plan.drifted + plan.missing + plan.unchecked)
    verdict = build_verdict(original, new.outcome, uncompensated, tolerances, changed, compensated=compensated,
                            substitutions=build_substitutions(record, new))
    if original is not record.outcome:
        verdict.recomputed = ("the original's contents digest was recomputed from its archive (the recorded sha256 "
                              "matches) under the current rule, which counts file modes and symlink targets")
    new = book.record_verdict(new.run_id, verdict)
    notify_finished(book, new)
    return Reproduction(plan, new, verdict)


def _compared_original(original: Outcome, reproduction: Outcome, session: Any) -> tuple[Outcome, list[str]]:
    """When the contents digests differ, read both archives: which paths differ, and the original's digest under
    the current rule (a record made by an older ledger digested names and bytes only)."""
    a, b = original.model_artifact, reproduction.model_artifact
    if not (a and b and a.uri and b.uri and a.tree_sha256 and b.tree_sha256) or a.tree_sha256 == b.tree_sha256:
        return original, []
    comparison = compare_artifacts(a, b, session)
    if comparison.original_tree and comparison.original_tree != a.tree_sha256 and \
            comparison.reproduction_tree == b.tree_sha256:
        artifact = a.model_copy(update={"tree_sha256": comparison.original_tree})
        return original.model_copy(update={"model_artifact": artifact}), comparison.changed
    return original, comparison.changed


def _secrets_from_environment(record: RunRecord) -> dict[str, str]:
    names = [key.split(".", 1)[1] for key in record.model_extra.get("redacted_keys", [])]
    return {name: os.environ[name] for name in names if name in os.environ}


def _snapshot_drifted(record: RunRecord, plan: Plan, inherited, session) -> dict[str, str]:
    """For a SageMaker relaunch, channels whose prefix differs in any way (changed, added or deleted objects), or
    could not be checked, are read from a snapshot of the recorded versions (S3DataSource has no version field);
    channels checked unchanged are read where they are."""
    moved = plan.drifted + plan.missing + plan.unchecked
    drifted = {c.channel for c in moved if c.channel and c.pin.startswith("data ")}
    uris = {}
    for name, pin in inherited.data.items():
        if pin.snapshot_uri and pin.snapshot_uri.startswith("s3://"):
            uris[name] = pin.snapshot_uri  # recorded in snapshot mode: already immutable
        elif name in drifted and pin.uri.startswith("s3://") and pin.objects:
            uri, gaps = snapshot_channel(pin, session)
            if uri is None:
                raise LedgerError(f"could not snapshot the recorded versions of channel {name}: "
                                  f"{gaps[0].why if gaps else 'unknown error'}", "check S3 permissions")
            pin.snapshot_uri = uris[name] = uri
    return uris


def _restore_code_channels(record: RunRecord, plan: Plan, session, book) -> dict[str, str]:
    """SDK 3.x code channels whose files moved are restored to `ledger-snapshots/<tree_sha256>/` in their own
    bucket, from the recorded versions or from the bytes kept in the ledger, and the relaunch reads them there."""
    status = {c.channel: c.status for c in plan.checks if c.pin.startswith("code channel") and ":" not in c.pin}
    uris: dict[str, str] = {}
    for name, channel in (record.pins.code.model_extra.get("code_channels") or {}).items():
        objects = channel.get("objects") or []
        restorable = bool(objects) and (channel.get("kept") or all(o.get("version_id") for o in objects))
        if status.get(name, "ok") in ("ok", "missing") or not restorable:
            continue  # unchanged: read where it is; else (--allow-drift) read as it is now, and its record says so
        bucket, prefix = parse_s3_uri(channel["uri"])
        root = f"{SNAPSHOT_PREFIX}{channel['tree_sha256']}/"
        try:
            s3 = client_for(session, "s3")
            for obj in objects:
                if channel.get("kept"):
                    s3.put_object(Bucket=bucket, Key=root + obj["key"], Body=book.get_blob(obj["sha256"]))
                else:
                    source_key = f"{prefix.rstrip('/')}/{obj['key']}" if prefix else obj["key"]
                    s3.copy_object(Bucket=bucket, Key=root + obj["key"], CopySource={
                        "Bucket": bucket, "Key": source_key, "VersionId": obj["version_id"]})
        except Exception as error:  # noqa: BLE001 - nothing was launched yet
            raise LedgerError(f"could not restore code channel {name} to s3://{bucket}/{root}: {failure(error)}",
                              "check s3:PutObject and s3:GetObjectVersion permissions") from None
        uris[name] = build_s3_uri(bucket, root)
    return uris


def _restore_source_archive(plan: Plan, inherited, session) -> str | None:
    """A source archive whose key holds a newer version is copied, by its recorded version, to
    `ledger-snapshots/<sha256>/sourcedir.tar.gz`; the relaunch reads that copy, and its record says so."""
    archive = inherited.code.source_archive
    row = next((c for c in plan.checks if c.pin == "source archive"), None)
    if row is None or row.status == "ok" or not archive or not (archive.uri or "").startswith("s3://"):
        return None
    if row.status == "missing" or not archive.version_id:  # --allow-drift: the key is read as it is now
        now, _ = capture_source_archive({"HyperParameters": {"sagemaker_submit_directory": archive.uri}}, session)
        inherited.code.source_archive = now or archive.model_copy(update={"sha256": None, "version_id": None})
        return None
    bucket, key = parse_s3_uri(archive.uri)
    target = f"{SNAPSHOT_PREFIX}{archive.sha256}/{key.rsplit('/', 1)[-1]}"
    try:
        copied = client_for(session, "s3").copy_object(
            Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key, "VersionId": archive.version_id})
    except Exception as error:  # noqa: BLE001 - nothing was launched yet
        raise LedgerError(f"could not copy the recorded source archive {archive.uri}: {failure(error)}",
                          "check s3:GetObjectVersion and s3:PutObject permissions") from None
    uri = build_s3_uri(bucket, target)
    inherited.code.source_archive = archive.model_copy(update={
        "uri": uri, "version_id": build_version_id(copied.get("VersionId")),
        "copied_from": {"uri": archive.uri, "version_id": archive.version_id}})
    return uri


def check_supplied_secrets(record: RunRecord, secrets: dict[str, str]) -> None:
    """Refuse a secret (from --secret or the environment) that is not the one the recorded job used: each
    redacted value keeps a salted digest in the record's `redactions` (records without one are not checked)."""
    redactions = record.model_extra.get("redactions")
    wrong = []
    for key in record.model_extra.get("redacted_keys", []):
        section, name = key.split(".", 1)
        if name in secrets:
            recorded = (record.request.get(section) or {}).get(name)
            if check_secret(redactions, key, recorded, secrets[name]) is False:
                wrong.append(name)
    if wrong:
        listed = ", ".join(wrong)
        raise UsageError(f"the secret given for {listed} is not the one run {record.run_id} used (its salted digest "
                         "differs)", f"give the value the original job used: --secret {wrong[0]}=VALUE or "
                         f"${wrong[0]}")


def parse_secrets(values: list[str]) -> dict[str, str]:
    return parse_assignments(values, "--secret")


def parse_tolerances(values: list[str]) -> dict[str, float]:
    try:
        return {k: float(v) for k, v in parse_assignments(values, "--tolerance").items()}
    except ValueError:
        raise UsageError("a --tolerance value is not a number", "write it like: --tolerance rmse=1e-4") from None


# --- the relaunch ------------------------------------------------------------------------------------------------


def build_relaunch(record: RunRecord, job_name: str, secrets: dict[str, str],
                   channel_uris: dict[str, str] | None = None, submit_directory: str | None = None) -> dict[str, Any]:
    """Pure: the recorded request as sent (image by digest), renamed, secrets put back, channels re-pointed, and
    the source archive re-pointed (a copy of its recorded version) when `submit_directory` is given."""
    request = copy.deepcopy(record.request)
    request["TrainingJobName"] = job_name
    for key in record.model_extra.get("redacted_keys", []):
        section, name = key.split(".", 1)
        if REDACTED in str(request.get(section, {}).get(name)) and name in secrets:  # whole, or a secret inside
            request[section][name] = secrets[name]
    for channel in request.get("InputDataConfig") or []:
        uri = (channel_uris or {}).get(channel.get("ChannelName"))
        if uri:
            channel["DataSource"]["S3DataSource"]["S3Uri"] = uri
    hyperparameters = request.get("HyperParameters") or {}
    if submit_directory and "sagemaker_submit_directory" in hyperparameters:
        was = hyperparameters["sagemaker_submit_directory"]  # SDK 2.x JSON-encodes it; keep the request's form
        hyperparameters["sagemaker_submit_directory"] = (json.dumps(submit_directory) if was.startswith('"')
                                                         else submit_directory)
    return request


def build_reproduction_name(job_name: str, number: int) -> str:
    suffix = f"-r{number}"
    return job_name[: 63 - len(suffix)] + suffix
