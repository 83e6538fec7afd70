"""The preflight of a reproduction: what the record pinned against the world now, one row a pin.

    observe_world       side effects: ask S3, ECR, git, the content store and the ledger about the record's pins
    plan_reproduction   pure: record + observations -> the preflight table, and what stops it

A question that could not be asked is "not checked" (status unchecked), never "ok".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ledger.capture import aws_error_code, client_for, code
from ledger.capture.content_store import CAS_PREFIX, open_content_store, parse_cas_uri, sha256_file, tree_sha256
from ledger.capture.data import SNAPSHOT_PREFIX, build_version_id, file_uri_path, hash_file_tree, parse_s3_uri
from ledger.capture.environment import capture_environment
from ledger.capture.hardware import load_instance_catalogue
from ledger.capture.image import parse_image_uri
from ledger.errors import NotFound
from ledger.record import REDACTED, RunRecord, sha256_hex


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


def short(value: Any, width: int = 19) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _ran_in_the_ledgers_environment(pins) -> bool:
    """A local run recorded before jobs had environments of their own: the ledger's environment stood in."""
    return pins.image.source == "environment" and not (pins.image.ran or {}).get("lock_sha256")


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
    runs = world.get("backend") or {}
    if pins.image.source == "environment" and backend != "local":  # elsewhere the image itself runs, by its tag
        add(PinCheck("image", pins.image.uri or "-", "not pinned: an environment stood in for it",
                     "launch by tag (as recorded)", "drift"))
    elif (pins.image.ran or {}).get("lock_sha256") and backend == "local":  # a job environment built from a lock
        was, now = pins.image.ran["lock_sha256"], runs.get("lock_sha256")
        add(PinCheck("environment", f"{short(was)} ({pins.image.ran.get('origin')})",
                     short(now) if now else _not_checked(runs, "the backend was not asked"),
                     f"build it from its lock: {runs.get('environment')}" if now else "cannot be built",
                     "ok" if now == was else ("drift" if now else "unchecked")))
    elif _ran_in_the_ledgers_environment(pins):
        changed = image.get("packages_changed", {})
        status = "ok" if image.get("fingerprint") == pins.image.digest else "drift"
        add(PinCheck("environment", short(pins.image.digest), short(image.get("fingerprint")),
                     "run in this environment" + (f"; {len(changed)} package(s) differ" if changed else ""), status))
        for name, (was, now) in sorted(changed.items())[:20]:
            add(PinCheck(f"package {name}", str(was), str(now), "differs from the recorded environment", "drift"))
    elif pins.image.digest and backend == "local":  # this backend runs the job in a Python environment, not the image
        add(PinCheck("image", short(pins.image.digest), "not used on this backend",
                     f"run in {runs['environment']} instead" if runs.get("environment") else
                     "run in a Python environment instead", "drift"))
    elif pins.image.digest:
        exists = image.get("digest_exists")
        add(PinCheck("image", short(pins.image.digest), "present" if exists else
                     ("gone" if exists is False else _not_checked(image, f"{pins.image.source} image not asked")),
                     "launch by digest", "ok" if exists else ("missing" if exists is False else "unchecked")))
        if image.get("tag_digest") and image["tag_digest"] != pins.image.digest:
            add(PinCheck("image tag", pins.image.uri or "", short(image["tag_digest"]),
                         "the tag moved; the recorded digest is used", "drift"))
    else:
        add(PinCheck("image", pins.image.uri or "-", "not pinned", "launch by tag (as recorded)", "drift"))

    for name, pin in sorted(pins.data.items()):
        _plan_data_channel(add, name, pin, world.get("data", {}).get(name), backend)

    code = world.get("code", {})
    if pins.code.commit:
        reachable = code.get("commit_reachable")
        add(PinCheck("code commit", short(pins.code.commit, 12), "reachable" if reachable else
                     ("unreachable" if reachable is False else _not_checked(code, "git was not asked")),
                     "recorded in the ledger", "ok" if reachable else ("drift" if reachable is False else "unchecked")))
        if code.get("tree_changed"):
            add(PinCheck("code work tree", f"{short(pins.code.commit, 12)}" + (" +diff" if pins.code.dirty else ""),
                         code.get("tree_now", "changed"), "use the pinned source archive", "drift"))
    archive = pins.code.source_archive
    if archive and archive.uri:
        seen = world.get("archive", {})
        exists = seen.get("exists")
        if exists is None:
            add(PinCheck("source archive", short(archive.sha256, 12), _not_checked(seen, "not asked"),
                         "stage the pinned archive", "unchecked"))
        elif exists is False:
            add(PinCheck("source archive", short(archive.sha256, 12), seen.get("why") or "gone",
                         "cannot be restored", "missing"))
        elif seen.get("moved"):
            add(PinCheck("source archive", short(archive.sha256, 12), "the key holds a newer version",
                         "copy the recorded version to a snapshot" if backend == "sagemaker" else
                         "stage the recorded version", "drift"))
        else:
            add(PinCheck("source archive", short(archive.sha256, 12), "present", "stage the pinned archive", "ok"))
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
    recorded = f"{pin.object_count} object(s) {short(pin.manifest_sha256, 12)}"
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
    pin = f"code channel {name}"
    recorded = f"{channel.get('object_count', 0)} file(s) {short(channel.get('tree_sha256'), 12)}"
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
    elif not code.plan_code_channel_pinned(channel) or seen.get("kept_missing"):
        why = (f"{seen['kept_missing']} kept file(s) are not in the ledger" if seen.get("kept_missing") else
               "no version ids and no kept copy")
        add(PinCheck(pin, recorded, counts, f"cannot be restored: {why}", "missing", channel=name))
    else:
        add(PinCheck(pin, recorded, counts, "restore the recorded files to a snapshot", "drift", channel=name))


def observe_world(book, record: RunRecord, session: Any = None) -> dict[str, Any]:
    """Side effects: the present state of everything the record pinned. A question that cannot be asked is left
    out, so the plan says "not checked" rather than guessing."""
    world: dict[str, Any] = {"data": {}}
    pins = record.pins
    if _ran_in_the_ledgers_environment(pins):
        env = capture_environment()
        old, new = pins.environment.packages, env.packages
        world["image"] = {"fingerprint": env.fingerprint, "packages_changed": {
            n: (old.get(n), new.get(n)) for n in set(old) | set(new) if old.get(n) != new.get(n)}}
    elif pins.image.digest and pins.image.source == "ecr":
        world["image"] = _observe_image(pins.image, session)
    for name, pin in pins.data.items():
        world["data"][name] = _observe_channel(book, pin, session)
    world["code"] = _observe_code(pins.code)
    archive = pins.code.source_archive
    if archive and archive.uri:
        world["archive"] = _observe_archive(book, archive, session)
    code_channels = pins.code.model_extra.get("code_channels") or {}
    if code_channels:
        world["code_channels"] = {name: _observe_code_channel(book, channel, session)
                                  for name, channel in code_channels.items()}

    instance = pins.hardware.instance_type
    world["instance_known"] = bool(instance) and (instance in load_instance_catalogue() or instance.startswith("local"))
    return world


def _observe_image(image, session) -> dict[str, Any]:
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
        return {"error": failure(error)}


def failure(error: Exception) -> str:
    return f"{aws_error_code(error)}: {error}"[:200]


def _observe_channel(book, pin, session) -> dict[str, Any]:
    """For S3: one paginated version listing of the channel's whole prefix (an object added there is read too);
    for files: the content store."""
    if pin.kind == "file" or (pin.snapshot_uri or "").startswith("ledger-cas://"):
        store = open_content_store(book.settings.home)
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
        return {"source": "s3", "error": failure(error)}
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


def _observe_code(pin) -> dict[str, Any]:
    root = pin.model_extra.get("repo_root")
    if not pin.commit:
        return {}
    if not root:
        return {"error": "the record names no repository to ask"}
    try:
        import git

        repo = git.Repo(root)
        try:
            repo.commit(pin.commit)
            reachable = True
        except (ValueError, git.BadName):
            reachable = False
        head = repo.head.commit.hexsha
        diff = repo.git.diff("HEAD", *code.DIFF_OPTIONS, stdout_as_string=False, strip_newline_in_stdout=False)
        diff_sha = sha256_hex(code.build_stored_diff(diff)[0]) if diff else None  # the record digests the redacted diff
        changed = head != pin.commit or diff_sha != pin.diff_sha256
        return {"commit_reachable": reachable, "tree_changed": changed,
                "tree_now": f"{head[:12]}" + (" +diff" if diff else "")}
    except Exception as error:  # noqa: BLE001 - "not checked", never "ok"
        return {"error": f"git failed: {type(error).__name__}: {error}"[:200]}


def _observe_archive(book, archive, session) -> dict[str, Any]:
    """Is the recorded source archive still there, and does its key still hold it? {exists, moved, why} or
    {error}. A versioned archive is asked for by version id; an unversioned one is read and hashed (it is small)."""
    gone = ("404", "NoSuchKey", "NoSuchVersion", "400", "NotFound")
    try:
        if archive.uri.startswith(CAS_PREFIX):
            return {"exists": open_content_store(book.settings.home).has(parse_cas_uri(archive.uri)), "moved": False}
        if archive.uri.startswith("file://"):
            path = file_uri_path(archive.uri)
            recorded = archive.model_extra.get("tree_sha256") if path.is_dir() else archive.sha256
            if not path.exists():
                return {"exists": False}
            now = tree_sha256(path) if path.is_dir() else sha256_file(path)
            return {"exists": now == recorded, "why": None if now == recorded else "changed; nothing kept"}
        if not archive.uri.startswith("s3://"):
            return {"error": "a source the ledger cannot ask"}
        from botocore.exceptions import ClientError


        bucket, key = parse_s3_uri(archive.uri)
        s3 = client_for(session, "s3")
        try:
            if archive.version_id:
                s3.head_object(Bucket=bucket, Key=key, VersionId=archive.version_id)
            else:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()

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
        return {"error": failure(error)}


def _observe_code_channel(book, channel: dict[str, Any], session) -> dict[str, Any]:
    """The files under a code channel's prefix now, each hashed (code is small), against the recorded digests;
    and whether the kept copy the relaunch would restore is in the ledger."""
    try:
        bucket, prefix = parse_s3_uri(channel.get("uri") or "")
        s3 = client_for(session, "s3")
        now: dict[str, str] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
                now[entry["Key"][len(prefix):].lstrip("/")] = sha256_hex(body)
    except Exception as error:  # noqa: BLE001 - "not checked", never "ok"
        return {"error": failure(error)}
    recorded = {o["key"]: o.get("sha256") for o in channel.get("objects") or []}
    if not recorded:  # recorded before the ledger kept one digest a file: the tree digest says only "changed"
        same = code.plan_tree_sha256(list(now.items())) == channel.get("tree_sha256")
        return {"changed": [] if same else ["(which file: the record has no digest of each file)"]}
    seen = {"changed": sorted(k for k in recorded if k in now and now[k] != recorded[k]),
            "deleted": sorted(k for k in recorded if k not in now),
            "added": sorted(k for k in now if k not in recorded)}
    if channel.get("kept") and any(seen.values()):
        seen["kept_missing"] = _count_missing_blobs(book, set(recorded.values()))
    return seen


def _count_missing_blobs(book, digests: set[str]) -> int:
    missing = 0
    for digest in digests:
        try:
            book.get_blob(digest)
        except NotFound:
            missing += 1
    return missing
