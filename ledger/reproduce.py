"""Reproduce a recorded run: preflight (what is still there, what drifted), relaunch pinned, verdict.

    observe_world        side effects: ask S3, ECR, git, the content store about the record's pins now
    plan_reproduction    pure: record + observations -> the preflight table and what is missing
    build_relaunch       pure: the recorded request, pinned, renamed <name>-r<N>, secrets put back
    build_verdict        pure: two outcomes -> IDENTICAL | EQUIVALENT | DIVERGED, with what differs and why
    reproduce            the whole thing, as `ledger reproduce` runs it
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ledger.errors import LedgerError, PlanFailed, UsageError
from ledger.record import REDACTED, Outcome, RunRecord, Verdict

DEFAULT_TOLERANCE = 1e-6


# --- the preflight ----------------------------------------------------------------------------------------------


@dataclass
class PinCheck:
    pin: str
    recorded: str
    now: str
    action: str
    status: str  # "ok" | "drift" | "missing"
    channel: str | None = None  # for data rows: the channel, and the object key of a per-object row
    key: str | None = None


@dataclass
class Plan:
    run_id: str
    backend: str
    checks: list[PinCheck] = field(default_factory=list)
    allow_drift: bool = False

    @property
    def missing(self) -> list[PinCheck]:
        return [c for c in self.checks if c.status == "missing"]

    @property
    def drifted(self) -> list[PinCheck]:
        return [c for c in self.checks if c.status == "drift"]

    @property
    def ok(self) -> bool:
        return not self.missing or self.allow_drift

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "backend": self.backend, "ok": self.ok, "allow_drift": self.allow_drift,
                "checks": [c.__dict__ for c in self.checks]}


def _short(value: Any, width: int = 19) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def plan_reproduction(record: RunRecord, world: dict[str, Any], backend: str, secrets: dict[str, str],
                      allow_drift: bool = False) -> Plan:
    """Pure: one row a pin. `world` is what observe_world saw; a key it lacks means "could not be asked"."""
    plan = Plan(run_id=record.run_id, backend=backend, allow_drift=allow_drift)
    add = plan.checks.append
    pins = record.pins

    image = world.get("image", {})
    if pins.image.source == "environment":
        changed = image.get("packages_changed", {})
        status = "ok" if image.get("fingerprint") == pins.image.digest else "drift"
        add(PinCheck("environment", _short(pins.image.digest), _short(image.get("fingerprint")),
                     "run in this environment" + (f"; {len(changed)} package(s) differ" if changed else ""), status))
        for name, (was, now) in sorted(changed.items())[:20]:
            add(PinCheck(f"package {name}", str(was), str(now), "differs from the recorded environment", "drift"))
    elif pins.image.digest:
        exists = image.get("digest_exists")
        add(PinCheck("image", _short(pins.image.digest), "present" if exists else
                     ("gone" if exists is False else "not checked"), "launch by digest",
                     "missing" if exists is False else "ok"))
        if image.get("tag_digest") and image["tag_digest"] != pins.image.digest:
            add(PinCheck("image tag", pins.image.uri or "", _short(image["tag_digest"]),
                         "the tag moved; the recorded digest is used", "drift"))
    else:
        add(PinCheck("image", pins.image.uri or "-", "not pinned", "launch by tag (as recorded)", "drift"))

    for name, pin in sorted(pins.data.items()):
        seen = world.get("data", {}).get(name, {})
        missing = seen.get("missing", [])
        changed = seen.get("changed", [])
        if missing:
            for key in missing[:50]:
                add(PinCheck(f"data {name}: {key}", "recorded version", "deleted", "cannot be restored", "missing",
                             channel=name, key=key))
        action = {"file": "restore from the content store", "s3": "read the recorded versions"}.get(
            seen.get("source", ""), "read as recorded")
        if changed:
            action = ("copy the recorded versions to a snapshot" if seen.get("source") == "s3" and backend ==
                      "sagemaker" else action)
        add(PinCheck(f"data {name}", f"{pin.object_count} object(s) {_short(pin.manifest_sha256, 12)}",
                     f"{len(changed)} changed" + (f", {len(missing)} gone" if missing else "") if changed or missing
                     else "unchanged", action, "drift" if changed and not missing else ("missing" if missing else
                                                                                        seen.get("status", "ok")),
                     channel=name))

    code = world.get("code", {})
    if pins.code.commit:
        reachable = code.get("commit_reachable")
        add(PinCheck("code commit", _short(pins.code.commit, 12), "reachable" if reachable else
                     ("unreachable" if reachable is False else "not checked"), "recorded in the ledger",
                     "drift" if reachable is False else "ok"))
        if code.get("tree_changed"):
            add(PinCheck("code work tree", f"{_short(pins.code.commit, 12)}" + (" +diff" if pins.code.dirty else ""),
                         code.get("tree_now", "changed"), "use the pinned source archive", "drift"))
    archive = pins.code.source_archive
    if archive and archive.uri:
        exists = world.get("archive", {}).get("exists")
        add(PinCheck("source archive", _short(archive.sha256, 12), "present" if exists else
                     ("gone" if exists is False else "not checked"), "stage the pinned archive",
                     "missing" if exists is False else "ok"))

    hardware = pins.hardware
    if hardware.instance_type:
        known = world.get("instance_known", True)
        add(PinCheck("instance type", hardware.instance_type, "known" if known else "unknown",
                     "same instance type" if backend == "sagemaker" else "run on this machine",
                     "ok" if known else "drift"))

    for key in sorted(getattr(record, "redacted_keys", None) or record.model_extra.get("redacted_keys", [])):
        name = key.split(".", 1)[1]
        supplied = name in secrets
        add(PinCheck(f"secret {key}", REDACTED, "supplied" if supplied else "not supplied",
                     "put back before launch" if supplied else f"give --secret {name}=VALUE or set ${name}",
                     "ok" if supplied else "missing"))
    return plan


def observe_world(record: RunRecord, session: Any = None) -> dict[str, Any]:
    """Side effects: the present state of everything the record pinned. A question that cannot be asked is left
    out, so the plan says "not checked" rather than guessing."""
    world: dict[str, Any] = {"data": {}}
    pins = record.pins
    if pins.image.source == "environment":
        from ledger.capture.environment import capture_environment

        env = capture_environment()
        old, new = pins.environment.packages, env.packages
        world["image"] = {"fingerprint": env.fingerprint, "packages_changed": {
            n: (old.get(n), new.get(n)) for n in set(old) | set(new) if old.get(n) != new.get(n)}}
    elif pins.image.digest and pins.image.source == "ecr":
        world["image"] = _observe_image(pins.image, session)
    for name, pin in pins.data.items():
        world["data"][name] = _observe_channel(pin, session)
    world["code"] = _observe_code(pins.code)
    archive = pins.code.source_archive
    if archive and archive.uri:
        world["archive"] = {"exists": _archive_exists(archive, session)}
    from ledger.capture.hardware import load_instance_catalogue

    instance = pins.hardware.instance_type
    world["instance_known"] = bool(instance) and (instance in load_instance_catalogue() or instance.startswith("local"))
    return world


def _observe_image(image, session) -> dict[str, Any]:
    from ledger.capture import client_for
    from ledger.capture.image import parse_image_uri

    try:
        ref = parse_image_uri(image.uri)
        ecr = client_for(session, "ecr", region_name=ref.region)
        found = ecr.batch_get_image(registryId=ref.account, repositoryName=ref.repository,
                                    imageIds=[{"imageDigest": image.digest}])
        result: dict[str, Any] = {"digest_exists": bool(found.get("images"))}
        if ref.tag:
            tagged = ecr.batch_get_image(registryId=ref.account, repositoryName=ref.repository,
                                         imageIds=[{"imageTag": ref.tag}]).get("images", [])
            result["tag_digest"] = tagged[0]["imageId"].get("imageDigest") if tagged else None
        return result
    except Exception:  # noqa: BLE001 - "not checked" is the honest answer
        return {}


def _observe_channel(pin, session) -> dict[str, Any]:
    """For S3: one paginated version listing of the channel's prefix; for files: the content store."""
    if pin.kind == "file" or (pin.snapshot_uri or "").startswith("ledger-cas://"):
        from ledger.content_store import open_content_store
        from ledger.capture.data import file_uri_path, hash_file_tree

        store = open_content_store()
        missing = [o.key for o in pin.objects if not store.has(o.etag)]
        changed: list[str] = []
        try:
            path = file_uri_path(pin.uri)
            now = {o.key: o.etag for o in hash_file_tree(path)} if path.exists() else {}
            changed = sorted({o.key for o in pin.objects if now.get(o.key) != o.etag} | (set(now) - {
                o.key for o in pin.objects}))
        except Exception:  # noqa: BLE001
            pass
        return {"source": "file", "missing": missing, "changed": changed}
    if not pin.uri.startswith("s3://") or not pin.objects:
        return {"source": "other", "status": "ok" if pin.pinned else "drift"}
    from ledger.capture import client_for
    from ledger.capture.data import parse_s3_uri

    try:
        bucket, _ = parse_s3_uri(pin.uri)
        prefix = os.path.commonprefix([o.key for o in pin.objects])
        s3 = client_for(session, "s3")
        versions: dict[str, set] = {}
        latest: dict[str, str | None] = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                versions.setdefault(v["Key"], set()).add(v["VersionId"])
                if v.get("IsLatest"):
                    latest[v["Key"]] = v["VersionId"]
            for marker in page.get("DeleteMarkers", []):
                if marker.get("IsLatest"):
                    latest[marker["Key"]] = None
    except Exception:  # noqa: BLE001
        return {"source": "s3", "status": "ok"}
    missing = [o.key for o in pin.objects if o.version_id and o.version_id not in versions.get(o.key, set())]
    changed = [o.key for o in pin.objects if latest.get(o.key, "absent") != o.version_id]
    return {"source": "s3", "missing": missing, "changed": changed}


def _observe_code(code) -> dict[str, Any]:
    root = code.model_extra.get("repo_root")
    if not root or not code.commit:
        return {}
    try:
        import git

        repo = git.Repo(root)
        try:
            repo.commit(code.commit)
            reachable = True
        except (ValueError, git.BadName):
            reachable = False
        head = repo.head.commit.hexsha
        from ledger.record import sha256_hex

        diff = repo.git.diff("HEAD", "--binary", "--no-color", "--no-ext-diff", "--no-textconv",
                             stdout_as_string=False, strip_newline_in_stdout=False)
        diff_sha = sha256_hex(diff) if diff else None
        changed = head != code.commit or diff_sha != code.diff_sha256
        return {"commit_reachable": reachable, "tree_changed": changed,
                "tree_now": f"{head[:12]}" + (" +diff" if diff else "")}
    except Exception:  # noqa: BLE001
        return {}


def _archive_exists(archive, session) -> bool | None:
    from ledger.content_store import CAS_PREFIX, open_content_store, parse_cas_uri

    try:
        if archive.uri.startswith(CAS_PREFIX):
            return open_content_store().has(parse_cas_uri(archive.uri))
        if archive.uri.startswith("s3://"):
            from ledger.capture import client_for
            from ledger.capture.data import parse_s3_uri

            bucket, key = parse_s3_uri(archive.uri)
            extra = {"VersionId": archive.version_id} if archive.version_id else {}
            client_for(session, "s3").head_object(Bucket=bucket, Key=key, **extra)
            return True
    except Exception as error:  # noqa: BLE001
        code = str(getattr(error, "response", {}).get("Error", {}).get("Code", ""))
        return False if code in ("404", "NoSuchKey", "NoSuchVersion", "400") else None
    return None


# --- the relaunch ------------------------------------------------------------------------------------------------


def build_relaunch(record: RunRecord, job_name: str, secrets: dict[str, str],
                   channel_uris: dict[str, str] | None = None) -> dict[str, Any]:
    """Pure: the recorded request as sent (image by digest), renamed, secrets put back, channels re-pointed."""
    request = copy.deepcopy(record.request)
    request["TrainingJobName"] = job_name
    for key in record.model_extra.get("redacted_keys", []):
        section, name = key.split(".", 1)
        if request.get(section, {}).get(name) == REDACTED and name in secrets:
            request[section][name] = secrets[name]
    for channel in request.get("InputDataConfig") or []:
        uri = (channel_uris or {}).get(channel.get("ChannelName"))
        if uri:
            channel["DataSource"]["S3DataSource"]["S3Uri"] = uri
    return request


def build_reproduction_name(job_name: str, number: int) -> str:
    suffix = f"-r{number}"
    return job_name[: 63 - len(suffix)] + suffix


# --- the verdict -------------------------------------------------------------------------------------------------


def build_verdict(original: Outcome, reproduction: Outcome, drifted: list[PinCheck],
                  tolerances: dict[str, float] | None = None, changed_files: list[str] | None = None) -> Verdict:
    """Pure. IDENTICAL: the model artifacts' contents are equal. EQUIVALENT: they differ, but every final metric is
    within its relative tolerance. DIVERGED: anything else, with what differs and the drift that could explain it."""
    tolerances = tolerances or {}
    explained_by = [{"pin": c.pin, "recorded": c.recorded, "now": c.now} for c in drifted]
    differences: list[dict] = []
    if reproduction.status != "Completed":
        differences.append({"what": "status", "original": original.status, "reproduction": reproduction.status,
                            "reason": reproduction.failure_reason})
        return Verdict(result="DIVERGED", differences=differences, explained_by=explained_by)
    a = original.model_artifact.tree_sha256 if original.model_artifact else None
    b = reproduction.model_artifact.tree_sha256 if reproduction.model_artifact else None
    if a and a == b:
        return Verdict(result="IDENTICAL", differences=[], explained_by=[])
    if a != b:
        differences.append({"what": "model artifact", "original": a, "reproduction": b,
                            **({"files": changed_files} if changed_files else {})})
    metric_differences = []
    for name in sorted(set(original.metrics) | set(reproduction.metrics)):
        x, y = original.metrics.get(name), reproduction.metrics.get(name)
        tolerance = tolerances.get(name, tolerances.get("*", DEFAULT_TOLERANCE))
        if x is None or y is None:
            metric_differences.append({"what": f"metric {name}", "original": x, "reproduction": y})
            continue
        relative = abs(x - y) / max(abs(x), abs(y), 1e-300)
        if relative > tolerance:
            metric_differences.append({"what": f"metric {name}", "original": x, "reproduction": y,
                                       "relative_difference": relative, "tolerance": tolerance})
    compared = set(original.metrics) & set(reproduction.metrics)
    if compared and not metric_differences:
        return Verdict(result="EQUIVALENT", differences=differences, explained_by=explained_by)
    if not compared and not metric_differences:
        differences.append({"what": "metrics", "original": None, "reproduction": None,
                            "reason": "no final metric to compare"})
    return Verdict(result="DIVERGED", differences=differences + metric_differences, explained_by=explained_by)


def artifact_changed_files(a: str | None, b: str | None, session: Any = None) -> list[str]:
    """Which files differ between two model archives (file:// or s3://); empty when either cannot be read."""
    if not a or not b:
        return []
    import tempfile
    from pathlib import Path

    from ledger.content_store import extract_tar, sha256_file

    try:
        with tempfile.TemporaryDirectory() as tmp:
            trees = []
            for i, uri in enumerate((a, b)):
                archive = Path(tmp) / f"{i}.tar.gz"
                _fetch(uri, archive, session)
                root = Path(tmp) / str(i)
                extract_tar(archive, root)
                trees.append({p.relative_to(root).as_posix(): sha256_file(p) for p in root.rglob("*") if p.is_file()})
            return sorted(k for k in set(trees[0]) | set(trees[1]) if trees[0].get(k) != trees[1].get(k))
    except Exception:  # noqa: BLE001
        return []


def _fetch(uri: str, dest, session) -> None:
    import shutil

    if uri.startswith("s3://"):
        from ledger.capture import client_for
        from ledger.capture.data import parse_s3_uri

        bucket, key = parse_s3_uri(uri)
        client_for(session, "s3").download_file(bucket, key, str(dest))
    else:
        from ledger.content_store import local_path_of

        shutil.copyfile(local_path_of(uri), dest)


# --- the whole thing ---------------------------------------------------------------------------------------------


@dataclass
class Reproduction:
    plan: Plan
    record: RunRecord | None = None  # the reproduction run, when one was launched
    verdict: Verdict | None = None

    def to_dict(self) -> dict:
        return {"plan": self.plan.to_dict(), "run_id": self.record.run_id if self.record else None,
                "job_name": self.record.job_name if self.record else None,
                "verdict": self.verdict.model_dump(mode="json") if self.verdict else None}


def reproduce(run_ref: str, backend: str | None = None, dry_run: bool = False, allow_drift: bool = False,
              secrets: dict[str, str] | None = None, yes: bool = False, tolerances: dict[str, float] | None = None,
              session: Any = None, log: Callable[[str], None] | None = None,
              confirm: Callable[[Plan], bool] | None = None,
              show_plan: Callable[[Plan], None] | None = None) -> Reproduction:
    """Preflight, relaunch with the recorded pins, and record the verdict. Returns the plan (and, unless
    dry_run, the reproduction's record and verdict). Raises PlanFailed when pins are missing (unless
    allow_drift), and UsageError for a SageMaker launch that was not confirmed."""
    from ledger.launch import launch_job
    from ledger.store.ledger import open_ledger

    book = open_ledger()
    record = book.get(run_ref)
    backend = backend or record.backend
    secrets = {**_secrets_from_environment(record), **(secrets or {})}
    check_supplied_secrets(record, secrets)
    plan = plan_reproduction(record, observe_world(record, session), backend, secrets, allow_drift)
    if not plan.ok:
        named = ", ".join(f"{c.pin} ({c.now})" for c in plan.missing[:5])
        raise PlanFailed(f"cannot reproduce {record.run_id}: {len(plan.missing)} pin(s) can no longer be had: {named}",
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
    channel_uris = {}
    if backend == "sagemaker":
        channel_uris = _snapshot_drifted(record, plan, inherited, session)
    request = build_relaunch(record, build_reproduction_name(record.job_name, number), secrets, channel_uris)
    extra = {"allowed_drift": [c.pin for c in plan.missing]} if plan.missing else {}
    new = launch_job(request, backend=backend, project=record.project, reproduction_of=record.run_id,
                     session=session, log=log, inherited=inherited, extra=extra)
    changed = []
    if (new.outcome.model_artifact and record.outcome.model_artifact and new.outcome.model_artifact.tree_sha256
            != record.outcome.model_artifact.tree_sha256):
        changed = artifact_changed_files(record.outcome.model_artifact.uri, new.outcome.model_artifact.uri, session)
    verdict = build_verdict(record.outcome, new.outcome, plan.drifted + plan.missing, tolerances, changed)
    new = open_ledger().record_verdict(new.run_id, verdict)
    return Reproduction(plan, new, verdict)


def _secrets_from_environment(record: RunRecord) -> dict[str, str]:
    names = [key.split(".", 1)[1] for key in record.model_extra.get("redacted_keys", [])]
    return {name: os.environ[name] for name in names if name in os.environ}


def _snapshot_drifted(record: RunRecord, plan: Plan, inherited, session) -> dict[str, str]:
    """For a SageMaker relaunch, channels whose objects changed are read from a snapshot of the recorded
    versions (S3DataSource has no version field); unchanged channels are read where they are."""
    from ledger.capture.data import snapshot_channel

    drifted = {c.channel for c in plan.drifted + plan.missing if c.channel}
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


def check_supplied_secrets(record: RunRecord, secrets: dict[str, str]) -> None:
    """Refuse a secret (from --secret or the environment) that is not the one the recorded job used: each
    redacted value keeps a salted digest in the record's `redactions` (records without one are not checked)."""
    from ledger.capture.secrets import check_secret

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
    from ledger.launch import parse_assignments

    return parse_assignments(values, "--secret")


def parse_tolerances(values: list[str]) -> dict[str, float]:
    from ledger.launch import parse_assignments

    try:
        return {k: float(v) for k, v in parse_assignments(values, "--tolerance").items()}
    except ValueError:
        raise UsageError("a --tolerance value is not a number", "write it like: --tolerance rmse=1e-4") from None

