"""Reproduce a recorded run: preflight (what is still there, what drifted), relaunch pinned, verdict.

    observe_world        side effects: ask S3, ECR, git, the content store about the record's pins now
    plan_reproduction    pure: record + observations -> the preflight table and what is missing
    build_relaunch       pure: the recorded request, pinned, renamed <name>-r<N>, secrets put back
    build_verdict        pure: two outcomes -> IDENTICAL | EQUIVALENT | DIVERGED | UNVERIFIABLE, what differs, why
    reproduce            the whole thing, as `ledger reproduce` runs it
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ledger.capture.data import build_version_id
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
    status: str  # "ok" | "drift" | "missing" | "unchecked" (the question failed) | "blocked" (cannot run at all)
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
    def unchecked(self) -> list[PinCheck]:
        return [c for c in self.checks if c.status == "unchecked"]

    @property
    def blocked(self) -> list[PinCheck]:
        return [c for c in self.checks if c.status == "blocked"]

    @property
    def stopping(self) -> list[PinCheck]:
        """What stops the plan: a backend that cannot run the request always; what is missing or could not be
        checked, unless --allow-drift."""
        return self.blocked + ([] if self.allow_drift else self.missing + self.unchecked)

    @property
    def ok(self) -> bool:
        return not self.stopping

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "backend": self.backend, "ok": self.ok, "allow_drift": self.allow_drift,
                "checks": [c.__dict__ for c in self.checks]}


def _short(value: Any, width: int = 19) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _not_checked(seen: dict[str, Any] | None, default: str) -> str:
    return "not checked: " + ((seen or {}).get("error") or default)


def plan_reproduction(record: RunRecord, world: dict[str, Any], backend: str, secrets: dict[str, str],
                      allow_drift: bool = False) -> Plan:
    """Pure: one row a pin. `world` is what observe_world saw; a key it lacks, or an `error`, means "could not be
    asked": that row is "not checked" (status unchecked), never "ok"."""
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
    elif pins.image.digest and backend == "local":  # this backend runs the job in this Python, not in the image
        add(PinCheck("image", _short(pins.image.digest), "not used on this backend",
                     "run in this Python environment instead", "drift"))
    elif pins.image.digest:
        exists = image.get("digest_exists")
        add(PinCheck("image", _short(pins.image.digest), "present" if exists else
                     ("gone" if exists is False else _not_checked(image, f"{pins.image.source} image not asked")),
                     "launch by digest", "ok" if exists else ("missing" if exists is False else "unchecked")))
        if image.get("tag_digest") and image["tag_digest"] != pins.image.digest:
            add(PinCheck("image tag", pins.image.uri or "", _short(image["tag_digest"]),
                         "the tag moved; the recorded digest is used", "drift"))
    else:
        add(PinCheck("image", pins.image.uri or "-", "not pinned", "launch by tag (as recorded)", "drift"))

    for name, pin in sorted(pins.data.items()):
        _plan_data_channel(add, name, pin, world.get("data", {}).get(name), backend)

    code = world.get("code", {})
    if pins.code.commit:
        reachable = code.get("commit_reachable")
        add(PinCheck("code commit", _short(pins.code.commit, 12), "reachable" if reachable else
                     ("unreachable" if reachable is False else _not_checked(code, "git was not asked")),
                     "recorded in the ledger", "ok" if reachable else ("drift" if reachable is False else "unchecked")))
        if code.get("tree_changed"):
            add(PinCheck("code work tree", f"{_short(pins.code.commit, 12)}" + (" +diff" if pins.code.dirty else ""),
                         code.get("tree_now", "changed"), "use the pinned source archive", "drift"))
    archive = pins.code.source_archive
    if archive and archive.uri:
        seen = world.get("archive", {})
        exists = seen.get("exists")
        if exists is None:
            add(PinCheck("source archive", _short(archive.sha256, 12), _not_checked(seen, "not asked"),
                         "stage the pinned archive", "unchecked"))
        elif exists is False:
            add(PinCheck("source archive", _short(archive.sha256, 12), seen.get("why") or "gone",
                         "cannot be restored", "missing"))
        elif seen.get("moved"):
            add(PinCheck("source archive", _short(archive.sha256, 12), "the key holds a newer version",
                         "copy the recorded version to a snapshot" if backend == "sagemaker" else
                         "stage the recorded version", "drift"))
        else:
            add(PinCheck("source archive", _short(archive.sha256, 12), "present", "stage the pinned archive", "ok"))
    for name, channel in sorted((pins.code.model_extra.get("code_channels") or {}).items()):
        _plan_code_channel(add, name, channel, world.get("code_channels", {}).get(name))

    hardware = pins.hardware
    if hardware.instance_type:
        known = world.get("instance_known", True)
        add(PinCheck("instance type", hardware.instance_type, "known" if known else "unknown",
                     "same instance type" if backend == "sagemaker" else "run on this machine",
                     "ok" if known else "drift"))

    runs = world.get("backend")
    if runs is not None:
        add(PinCheck("backend", backend, "can run the request" if runs.get("runs") else
                     f"cannot run it: {runs.get('why')}", "launch" if runs.get("runs") else
                     (runs.get("hint") or "choose another backend"), "ok" if runs.get("runs") else "blocked"))

    for key in sorted(getattr(record, "redacted_keys", None) or record.model_extra.get("redacted_keys", [])):
        name = key.split(".", 1)[1]
        supplied = name in secrets
        add(PinCheck(f"secret {key}", REDACTED, "supplied" if supplied else "not supplied",
                     "put back before launch" if supplied else f"give --secret {name}=VALUE or set ${name}",
                     "ok" if supplied else "missing"))
    put_back = set(getattr(record, "redacted_keys", None) or record.model_extra.get("redacted_keys", []))
    redactions = (record.model_extra.get("redactions") or {}).get("values") or []
    for path in sorted({v.get("path") for v in redactions if v.get("path")} - put_back):  # Tags, arguments
        add(PinCheck(f"secret {path}", REDACTED, "cannot be put back", "the relaunch would send the placeholder "
                     "there", "missing"))
    return plan


ROWS_PER_CHANNEL = 50  # per-object rows shown for one channel; the channel row counts them all


def _plan_data_channel(add, name: str, pin, seen: dict[str, Any] | None, backend: str) -> None:
    """The rows of one data channel: one per object that is gone, changed, deleted or added, then the channel's."""
    recorded = f"{pin.object_count} object(s) {_short(pin.manifest_sha256, 12)}"
    if seen is None or seen.get("error"):
        add(PinCheck(f"data {name}", recorded, _not_checked(seen, "not asked"), "read the recorded versions",
                     "unchecked", channel=name))
        return
    missing = seen.get("missing", [])
    why = seen.get("missing_why", {})
    for key in missing[:ROWS_PER_CHANNEL]:
        add(PinCheck(f"data {name}: {key}", "recorded version", why.get(key, "deleted"), "cannot be restored",
                     "missing", channel=name, key=key))
    moved = {what: seen.get(what, []) for what in ("changed", "deleted", "added")}
    for what, keys in moved.items():
        for key in keys[:ROWS_PER_CHANNEL]:
            add(PinCheck(f"data {name}: {key}", "not recorded" if what == "added" else "recorded version", what,
                         "not read" if what == "added" else "the recorded version is read", "drift",
                         channel=name, key=key))
    drifted = any(moved.values())
    action = {"file": "restore from the content store", "s3": "read the recorded versions"}.get(
        seen.get("source", ""), "read as recorded")
    if (pin.snapshot_uri or "").startswith("s3://"):
        action = "read the recorded snapshot"
    elif drifted and seen.get("source") == "s3" and backend == "sagemaker":
        action = "copy the recorded versions to a snapshot"
    counts = [f"{len(keys)} {what}" for what, keys in moved.items() if keys] + (
        [f"{len(missing)} gone"] if missing else [])
    status = "missing" if missing else ("drift" if drifted else seen.get("status", "ok"))
    add(PinCheck(f"data {name}", recorded, ", ".join(counts) or "unchanged", action, status, channel=name))


def _plan_code_channel(add, name: str, channel: dict[str, Any], seen: dict[str, Any] | None) -> None:
    """The rows of one SDK 3.x code channel, compared by the content digest of each file."""
    from ledger.capture.code import plan_code_channel_pinned

    pin = f"code channel {name}"
    recorded = f"{channel.get('object_count', 0)} file(s) {_short(channel.get('tree_sha256'), 12)}"
    if seen is None or seen.get("error"):
        add(PinCheck(pin, recorded, _not_checked(seen, "not asked"), "read the recorded files", "unchecked",
                     channel=name))
        return
    moved = {what: seen.get(what, []) for what in ("changed", "deleted", "added")}
    for what, keys in moved.items():
        for key in keys[:ROWS_PER_CHANNEL]:
            add(PinCheck(f"{pin}: {key}", "not recorded" if what == "added" else "recorded file", what,
                         "the recorded files are read", "drift", channel=name))
    counts = ", ".join(f"{len(keys)} {what}" for what, keys in moved.items() if keys)
    if not counts:
        add(PinCheck(pin, recorded, "unchanged", "read where it is", "ok", channel=name))
    elif not plan_code_channel_pinned(channel) or seen.get("kept_missing"):
        why = (f"{seen['kept_missing']} kept file(s) are not in the ledger" if seen.get("kept_missing") else
               "no version ids and no kept copy")
        add(PinCheck(pin, recorded, counts, f"cannot be restored: {why}", "missing", channel=name))
    else:
        add(PinCheck(pin, recorded, counts, "restore the recorded files to a snapshot", "drift", channel=name))


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
        world["archive"] = _observe_archive(archive, session)
    code_channels = pins.code.model_extra.get("code_channels") or {}
    if code_channels:
        world["code_channels"] = {name: _observe_code_channel(channel, session)
                                  for name, channel in code_channels.items()}
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
    except Exception as error:  # noqa: BLE001 - "not checked" is the honest answer
        return {"error": _failure(error)}


def _failure(error: Exception) -> str:
    from ledger.capture import aws_error_code

    return f"{aws_error_code(error)}: {error}"[:200]




def _observe_channel(pin, session) -> dict[str, Any]:
    """For S3: one paginated version listing of the channel's whole prefix (an object added there is read too);
    for files: the content store."""
    if pin.kind == "file" or (pin.snapshot_uri or "").startswith("ledger-cas://"):
        from ledger.content_store import open_content_store
        from ledger.capture.data import file_uri_path, hash_file_tree

        store = open_content_store()
        missing = [o.key for o in pin.objects if not store.has(o.etag)]
        try:
            path = file_uri_path(pin.uri)
            now = {o.key: o.etag for o in hash_file_tree(path)} if path.exists() else {}
        except Exception as error:  # noqa: BLE001
            return {"source": "file", "error": f"{type(error).__name__}: {error}"}
        changed = sorted({o.key for o in pin.objects if now.get(o.key) != o.etag} | (set(now) - {
            o.key for o in pin.objects}))
        return {"source": "file", "missing": missing, "changed": changed}
    if not pin.uri.startswith("s3://") or not pin.objects:
        return {"source": "other", "status": "ok" if pin.pinned else "drift"}
    from ledger.capture import client_for
    from ledger.capture.data import SNAPSHOT_PREFIX, parse_s3_uri

    try:
        bucket, uri_prefix = parse_s3_uri(pin.uri)
        whole_prefix = pin.kind in (None, "S3Prefix")  # a manifest names its objects; a prefix reads all of them
        prefix = uri_prefix if whole_prefix else os.path.commonprefix([o.key for o in pin.objects])
        s3 = client_for(session, "s3")
        versions: dict[str, set] = {}
        latest: dict[str, dict | None] = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                version_id = build_version_id(v.get("VersionId"))
                versions.setdefault(v["Key"], set()).add(version_id)
                if v.get("IsLatest"):
                    latest[v["Key"]] = {"version_id": version_id, "etag": (v.get("ETag") or "").strip('"'),
                                        "size": v.get("Size")}
            for marker in page.get("DeleteMarkers", []):
                if marker.get("IsLatest"):
                    latest[marker["Key"]] = None
    except Exception as error:  # noqa: BLE001 - "not checked", never "ok"
        return {"source": "s3", "error": _failure(error)}
    return {"source": "s3", **plan_channel_drift(pin.objects, versions, latest, whole_prefix,
                                                 ignore=SNAPSHOT_PREFIX if not uri_prefix.startswith(
                                                     SNAPSHOT_PREFIX) else None)}


def plan_channel_drift(objects, versions: dict[str, set], latest: dict[str, dict | None], whole_prefix: bool,
                       ignore: str | None = None) -> dict[str, Any]:
    """Pure: the recorded objects against a listing of their prefix now. An object recorded with a version id is
    gone when that version is; changed or deleted (still restorable) when the latest is another. One recorded
    without (an unversioned bucket) is compared by ETag and size, and cannot be restored once they differ."""
    missing, why, changed, deleted = [], {}, [], []
    for o in objects:
        now = latest.get(o.key)
        if o.version_id:
            if o.version_id not in versions.get(o.key, set()):
                missing.append(o.key)
                why[o.key] = "the recorded version was deleted"
            elif now is None:
                deleted.append(o.key)
            elif now["version_id"] != o.version_id:
                changed.append(o.key)
        elif now is None:
            missing.append(o.key)
            why[o.key] = "deleted; the bucket keeps no versions"
        elif (now["etag"], now["size"]) != (o.etag, o.size):
            missing.append(o.key)
            why[o.key] = "overwritten; the bucket keeps no versions"
    recorded = {o.key for o in objects}
    added = sorted(k for k, now in latest.items() if now is not None and k not in recorded and whole_prefix
                   and not (ignore and k.startswith(ignore)))
    return {"missing": missing, "missing_why": why, "changed": changed, "deleted": deleted, "added": added}


def _observe_code(code) -> dict[str, Any]:
    root = code.model_extra.get("repo_root")
    if not code.commit:
        return {}
    if not root:
        return {"error": "the record names no repository to ask"}
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

        from ledger.capture.code import DIFF_OPTIONS, build_stored_diff

        diff = repo.git.diff("HEAD", *DIFF_OPTIONS, stdout_as_string=False, strip_newline_in_stdout=False)
        diff_sha = sha256_hex(build_stored_diff(diff)[0]) if diff else None  # the record digests the redacted diff
        changed = head != code.commit or diff_sha != code.diff_sha256
        return {"commit_reachable": reachable, "tree_changed": changed,
                "tree_now": f"{head[:12]}" + (" +diff" if diff else "")}
    except Exception as error:  # noqa: BLE001 - "not checked", never "ok"
        return {"error": f"git failed: {type(error).__name__}: {error}"[:200]}


def _observe_archive(archive, session) -> dict[str, Any]:
    """Is the recorded source archive still there, and does its key still hold it? {exists, moved, why} or
    {error}. A versioned archive is asked for by version id; an unversioned one is read and hashed (it is small)."""
    from ledger.content_store import CAS_PREFIX, open_content_store, parse_cas_uri

    gone = ("404", "NoSuchKey", "NoSuchVersion", "400", "NotFound")
    try:
        if archive.uri.startswith(CAS_PREFIX):
            return {"exists": open_content_store().has(parse_cas_uri(archive.uri)), "moved": False}
        if archive.uri.startswith("file://"):
            from ledger.capture.data import file_uri_path
            from ledger.content_store import sha256_file, tree_sha256

            path = file_uri_path(archive.uri)
            recorded = archive.model_extra.get("tree_sha256") if path.is_dir() else archive.sha256
            if not path.exists():
                return {"exists": False}
            now = tree_sha256(path) if path.is_dir() else sha256_file(path)
            return {"exists": now == recorded, "why": None if now == recorded else "changed; nothing kept"}
        if not archive.uri.startswith("s3://"):
            return {"error": "a source the ledger cannot ask"}
        from botocore.exceptions import ClientError

        from ledger.capture import aws_error_code, client_for
        from ledger.capture.data import parse_s3_uri

        bucket, key = parse_s3_uri(archive.uri)
        s3 = client_for(session, "s3")
        try:
            if archive.version_id:
                s3.head_object(Bucket=bucket, Key=key, VersionId=archive.version_id)
            else:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                from ledger.record import sha256_hex

                same = sha256_hex(body) == archive.sha256
                return {"exists": same, "moved": False,
                        "why": None if same else "overwritten; the bucket keeps no versions"}
        except ClientError as error:
            if aws_error_code(error) in gone:
                return {"exists": False}
            raise
        try:
            latest = build_version_id(s3.head_object(Bucket=bucket, Key=key).get("VersionId"))
        except ClientError as error:
            if aws_error_code(error) not in gone:
                raise
            latest = None  # deleted: the key's latest is a delete marker
        return {"exists": True, "moved": latest != archive.version_id}
    except Exception as error:  # noqa: BLE001 - "not checked", never "ok"
        return {"error": _failure(error)}


def _observe_code_channel(channel: dict[str, Any], session) -> dict[str, Any]:
    """The files under a code channel's prefix now, each hashed (code is small), against the recorded digests;
    and whether the kept copy the relaunch would restore is in the ledger."""
    from ledger.capture import client_for
    from ledger.capture.code import plan_tree_sha256
    from ledger.capture.data import parse_s3_uri
    from ledger.record import sha256_hex

    try:
        bucket, prefix = parse_s3_uri(channel.get("uri") or "")
        s3 = client_for(session, "s3")
        now: dict[str, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
                now[entry["Key"][len(prefix):].lstrip("/")] = sha256_hex(body)
    except Exception as error:  # noqa: BLE001 - "not checked", never "ok"
        return {"error": _failure(error)}
    recorded = {o["key"]: o.get("sha256") for o in channel.get("objects") or []}
    if not recorded:  # recorded before the ledger kept one digest a file: the tree digest says only "changed"
        same = plan_tree_sha256(list(now.items())) == channel.get("tree_sha256")
        return {"changed": [] if same else ["(which file: the record has no digest of each file)"]}
    seen = {"changed": sorted(k for k in recorded if k in now and now[k] != recorded[k]),
            "deleted": sorted(k for k in recorded if k not in now),
            "added": sorted(k for k in now if k not in recorded)}
    if channel.get("kept") and any(seen.values()):
        seen["kept_missing"] = _count_missing_blobs(set(recorded.values()))
    return seen


def _count_missing_blobs(digests: set[str]) -> int:
    from ledger.errors import NotFound
    from ledger.store.ledger import open_ledger

    book, missing = open_ledger(), 0
    for digest in digests:
        try:
            book.get_blob(digest)
        except NotFound:
            missing += 1
    return missing


def observe_backend(record: RunRecord, backend: str, secrets: dict[str, str]) -> dict[str, Any] | None:
    """Can `backend` run the relaunch at all? Asked of the backend's own plan before anything is launched or
    recorded: {runs, why, hint}. None for a backend that cannot be asked."""
    if backend == "sagemaker":
        return {"runs": True}  # SageMaker accepted this request once; it is relaunched as it was sent
    if backend != "local":
        return None
    from ledger.backends.local import plan_local_job
    from ledger.config import load_settings

    request = build_relaunch(record, build_reproduction_name(record.job_name, 1), secrets)
    pins = {name: pin.model_dump(mode="json") for name, pin in record.pins.data.items()}
    archive = record.pins.code.source_archive
    try:
        plan_local_job(request, home=load_settings().home, pins=pins,
                       source_archive=archive.model_dump(mode="json") if archive else None)
    except LedgerError as error:
        return {"runs": False, "why": error.message, "hint": error.hint}
    return {"runs": True}


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


# --- the verdict -------------------------------------------------------------------------------------------------


def build_verdict(original: Outcome, reproduction: Outcome, drifted: list[PinCheck],
                  tolerances: dict[str, float] | None = None, changed_files: list[str] | None = None, *,
                  compensated: list[dict] | None = None, substitutions: list[dict] | None = None) -> Verdict:
    """Pure. Weighs both things compared, the model artifacts' contents and the final metrics:

        IDENTICAL     equal model contents and equal final metrics (the same names, equal values)
        EQUIVALENT    not identical, but both have the same metrics and each is within its relative tolerance
        DIVERGED      anything else: what differs, and what could explain it
        UNVERIFIABLE  a model artifact to compare is missing (a run that never finished, an unreadable archive)

    `drifted` are the pins the relaunch did not compensate for; with `substitutions` (another backend, a stand-in
    environment) they are what `explained_by` names. `compensated` ({pin, recorded, now, by}) is listed apart.
    """
    tolerances = tolerances or {}
    explained_by = [{"pin": c.pin, "recorded": c.recorded, "now": c.now, "kind": "drift"} for c in drifted]
    explained_by += [{**s, "kind": "substitution"} for s in substitutions or []]
    compensated = list(compensated or [])

    def verdict(result: str, differences: list[dict]) -> Verdict:
        return Verdict(result=result, differences=differences,
                       explained_by=[] if result == "IDENTICAL" else explained_by, compensated=compensated)

    missing = _missing_artifacts(original, reproduction)
    if missing:
        return verdict("UNVERIFIABLE", missing + _metric_differences(original, reproduction, tolerances)[0])
    if reproduction.status != "Completed":
        return verdict("DIVERGED", [{"what": "status", "original": original.status,
                                     "reproduction": reproduction.status, "reason": reproduction.failure_reason}])
    a = original.model_artifact.tree_sha256 if original.model_artifact else None
    b = reproduction.model_artifact.tree_sha256 if reproduction.model_artifact else None
    differences: list[dict] = []
    if a != b:
        differences.append({"what": "model artifact", "original": a, "reproduction": b,
                            **({"files": changed_files} if changed_files else {})})
    metric_differences, beyond_tolerance = _metric_differences(original, reproduction, tolerances)
    if not differences and not metric_differences:
        return verdict("IDENTICAL", [])
    if not (original.metrics or reproduction.metrics):
        differences.append({"what": "metrics", "original": None, "reproduction": None,
                            "reason": "no final metric to compare"})
        return verdict("DIVERGED", differences)
    return verdict("DIVERGED" if beyond_tolerance else "EQUIVALENT", differences + metric_differences)


def _missing_artifacts(original: Outcome, reproduction: Outcome) -> list[dict]:
    """What makes a comparison of model contents impossible: an original with no readable model artifact, or a
    reproduction whose artifact was written but could not be read."""
    found = []
    artifact = original.model_artifact
    if not (artifact and artifact.tree_sha256):
        if artifact and artifact.uri:
            reason = f"the original's model artifact {artifact.uri} could not be read when it was recorded"
        elif original.status != "Completed":
            reason = (f"the original run has no model artifact: it ended {original.status or 'without an outcome'}"
                      + (f" ({original.failure_reason})" if original.failure_reason else ""))
        else:
            reason = "the original run recorded no model artifact"
        found.append({"what": "original model artifact", "original": artifact.uri if artifact else None,
                      "reproduction": reproduction.model_artifact.tree_sha256 if reproduction.model_artifact
                      else None, "reason": reason})
    theirs = reproduction.model_artifact
    if reproduction.status == "Completed" and theirs and theirs.uri and not theirs.tree_sha256:
        found.append({"what": "reproduction model artifact", "original": None, "reproduction": theirs.uri,
                      "reason": "the reproduction's model artifact could not be read"})
    return found


def _metric_differences(original: Outcome, reproduction: Outcome,
                        tolerances: dict[str, float]) -> tuple[list[dict], bool]:
    """Every final metric not exactly equal, with its relative difference; and whether any is beyond its
    tolerance (a metric only one run has always is)."""
    found, beyond = [], False
    for name in sorted(set(original.metrics) | set(reproduction.metrics)):
        x, y = original.metrics.get(name), reproduction.metrics.get(name)
        if x == y:
            continue
        tolerance = tolerances.get(name, tolerances.get("*", DEFAULT_TOLERANCE))
        if x is None or y is None:
            found.append({"what": f"metric {name}", "original": x, "reproduction": y})
            beyond = True
            continue
        relative = abs(x - y) / max(abs(x), abs(y), 1e-300)
        found.append({"what": f"metric {name}", "original": x, "reproduction": y,
                      "relative_difference": relative, "tolerance": tolerance})
        beyond = beyond or relative > tolerance
    return found, beyond


def build_compensation(record: RunRecord, checks: list[PinCheck]) -> tuple[list[PinCheck], list[dict]]:
    """Pure: split the drifted and missing pins into those the pinned relaunch did not make up for, and those it
    did ({pin, recorded, now, by}). A missing pin never is; drift is when the relaunch used the recorded pin."""
    pins = record.pins
    restorable_code = {c.channel for c in checks if c.pin == f"code channel {c.channel}" and c.status == "drift"}
    left, compensated = [], []
    for check in checks:
        by = None
        if check.status == "drift":
            channel = pins.data.get(check.channel) if check.channel else None
            if check.pin == "image tag" and pins.image.digest:
                by = "the relaunch names the recorded digest, not the tag"
            elif channel is not None and channel.pinned:
                by = ("the relaunch restores the recorded files from the content store" if channel.kind == "file"
                      else "the relaunch reads the recorded object versions")
                by += "; the added object is not read" if check.now == "added" else ""
            elif check.pin.startswith("code channel") and check.channel in restorable_code:
                by = "the relaunch restores the recorded code files"
            elif check.pin == "source archive":
                by = "the relaunch reads the recorded version of the archive"
            elif check.pin == "code work tree" and pins.code.source_archive and pins.code.source_archive.uri:
                by = "the relaunch stages the pinned source archive"
        if by:
            compensated.append({"pin": check.pin, "recorded": check.recorded, "now": check.now, "by": by})
        else:
            left.append(check)
    return left, compensated


def build_substitutions(original: RunRecord, reproduction: RunRecord) -> list[dict]:
    """Pure: what the reproduction ran on in place of what the original ran on ({pin, recorded, now}): another
    backend, an environment standing in for an image (or the image where one stood in), another machine."""
    found = []
    if original.backend != reproduction.backend:
        found.append({"pin": "backend", "recorded": original.backend, "now": reproduction.backend})
    was, now = original.pins.image, reproduction.pins.image
    if (was.source == "environment") != (now.source == "environment"):
        found.append({"pin": "image", "recorded": describe_image_ran(was), "now": describe_image_ran(now)})
    ran_was, ran_now = original.pins.hardware.ran, reproduction.pins.hardware.ran
    if ran_was and ran_now and _machine(ran_was) != _machine(ran_now):
        found.append({"pin": "hardware ran", "recorded": _machine(ran_was), "now": _machine(ran_now)})
    return found


def describe_image_ran(image) -> str:
    """Pure: one line for what ran as a run's image."""
    if image.stood_in():
        return image.stood_in()
    return f"{image.uri or 'no image'}" + (f" by digest {_short(image.digest, 19)}" if image.digest else "")


def _machine(ran: dict) -> str:
    gpu = f", {ran.get('gpu_count')} x {ran.get('gpu')}" if ran.get("gpu") else ""
    return f"{ran.get('vcpu')} vCPU, {ran.get('memory_gib')} GiB{gpu} on {ran.get('host')}"


@dataclass
class ArtifactComparison:
    """Two model archives read and compared under the current tree digest rule."""

    original_tree: str | None  # None when the original's archive is gone or no longer the recorded bytes
    reproduction_tree: str | None
    changed: list[str] = field(default_factory=list)  # paths whose mode, bytes or link target differ


def compare_artifacts(original, reproduction, session: Any = None) -> ArtifactComparison:
    """Read both archives (the recorded S3 version where there is one) and list the paths that differ. An
    archive whose sha256 is not the recorded one is not the recorded artifact: its tree is left out."""
    import tempfile
    from pathlib import Path

    from ledger.content_store import build_tree_digest, sha256_file, tree_entries

    trees: list[dict | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, artifact in enumerate((original, reproduction)):
            archive = Path(tmp) / f"{i}.tar.gz"
            try:
                _fetch(artifact.uri, archive, session, artifact.version_id)
                same = artifact.sha256 is None or sha256_file(archive) == artifact.sha256
                trees.append(tree_entries(archive) if same else None)
            except Exception:  # noqa: BLE001 - an archive that cannot be read is not compared
                trees.append(None)
    a, b = trees
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) if a is not None and b is not None else []
    return ArtifactComparison(build_tree_digest(a) if a is not None else None,
                              build_tree_digest(b) if b is not None else None, changed)


def _fetch(uri: str, dest, session, version_id: str | None = None) -> None:
    import shutil

    if uri.startswith("s3://"):
        from ledger.capture import client_for
        from ledger.capture.data import parse_s3_uri

        bucket, key = parse_s3_uri(uri)
        extra = {"ExtraArgs": {"VersionId": version_id}} if version_id else {}
        client_for(session, "s3").download_file(bucket, key, str(dest), **extra)
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
    world = observe_world(record, session)
    world["backend"] = observe_backend(record, backend, secrets)
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
    new = launch_job(request, backend=backend, project=record.project, reproduction_of=record.run_id,
                     session=session, log=log, inherited=inherited, extra=extra)
    original, changed = _compared_original(record.outcome, new.outcome, session)
    uncompensated, compensated = build_compensation(record, plan.drifted + plan.missing + plan.unchecked)
    verdict = build_verdict(original, new.outcome, uncompensated, tolerances, changed, compensated=compensated,
                            substitutions=build_substitutions(record, new))
    if original is not record.outcome:
        verdict.recomputed = ("the original's contents digest was recomputed from its archive (the recorded sha256 "
                              "matches) under the current rule, which counts file modes and symlink targets")
    new = open_ledger().record_verdict(new.run_id, verdict)
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
    from ledger.capture.data import snapshot_channel

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
    from ledger.capture import client_for
    from ledger.capture.data import SNAPSHOT_PREFIX, build_s3_uri, parse_s3_uri

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
            raise LedgerError(f"could not restore code channel {name} to s3://{bucket}/{root}: {_failure(error)}",
                              "check s3:PutObject and s3:GetObjectVersion permissions") from None
        uris[name] = build_s3_uri(bucket, root)
    return uris


def _restore_source_archive(plan: Plan, inherited, session) -> str | None:
    """A source archive whose key holds a newer version is copied, by its recorded version, to
    `ledger-snapshots/<sha256>/sourcedir.tar.gz`; the relaunch reads that copy, and its record says so."""
    from ledger.capture import client_for
    from ledger.capture.data import SNAPSHOT_PREFIX, build_s3_uri, parse_s3_uri

    archive = inherited.code.source_archive
    row = next((c for c in plan.checks if c.pin == "source archive"), None)
    if row is None or row.status == "ok" or not archive or not (archive.uri or "").startswith("s3://"):
        return None
    if row.status == "missing" or not archive.version_id:  # --allow-drift: the key is read as it is now
        from ledger.capture.code import capture_source_archive

        now, _ = capture_source_archive({"HyperParameters": {"sagemaker_submit_directory": archive.uri}}, session)
        inherited.code.source_archive = now or archive.model_copy(update={"sha256": None, "version_id": None})
        return None
    bucket, key = parse_s3_uri(archive.uri)
    target = f"{SNAPSHOT_PREFIX}{archive.sha256}/{key.rsplit('/', 1)[-1]}"
    try:
        copied = client_for(session, "s3").copy_object(
            Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key, "VersionId": archive.version_id})
    except Exception as error:  # noqa: BLE001 - nothing was launched yet
        raise LedgerError(f"could not copy the recorded source archive {archive.uri}: {_failure(error)}",
                          "check s3:GetObjectVersion and s3:PutObject permissions") from None
    uri = build_s3_uri(bucket, target)
    inherited.code.source_archive = archive.model_copy(update={
        "uri": uri, "version_id": build_version_id(copied.get("VersionId")),
        "copied_from": {"uri": archive.uri, "version_id": archive.version_id}})
    return uri


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

