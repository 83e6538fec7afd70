"""Data: every input channel pinned to the exact object versions it reads, with one listing per 1,000 objects.

S3Prefix: one paginated `list_object_versions` of the prefix; the latest version of each key is what the job will
read. ManifestFile: the manifest object (its own version) and the objects it names, found by listing their common
prefix, never one request per object. A bucket without versioning gives ETag and size, and a gap.

Snapshot mode copies the recorded versions server-side into `ledger-snapshots/<manifest_sha256>/`, a prefix named
by the content it holds, and the caller points the channel there: the job then reads exactly what was recorded.

`file://` channels (the local backend) are hashed: `hash_file_tree` is shared with ledger/capture/content_store.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.capture import aws_error_code, client_for
from ledger.errors import UsageError
from ledger.record import DataChannelPin, DataObject, Gap

SNAPSHOT_PREFIX = "ledger-snapshots/"
LISTING_PAGE_SIZE = 1000  # the most S3 returns in one page
SINGLE_COPY_LIMIT = 5 * 1024**3  # copy_object refuses larger sources; those go through a multipart copy
S3_URI = re.compile(r"^s3://(?P<bucket>[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9])(?:/(?P<key>.*))?$")


# --- pure decisions ---------------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix'). Raises UsageError: the URI is the user's input."""
    match = S3_URI.match(uri.strip()) if isinstance(uri, str) else None
    if not match:
        raise UsageError(f"{uri!r} is not an S3 URI", "write it as s3://bucket/key-prefix")
    return match["bucket"], match["key"] or ""


def build_s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def plan_manifest_sha256(objects: list[DataObject]) -> str:
    """sha256 of the canonical JSON of the objects' [{key, version_id, etag, size}], sorted by key."""
    from ledger.capture.content_store import manifest_digest  # one rule for every manifest the ledger digests

    return manifest_digest(
        {"key": o.key, "version_id": o.version_id, "etag": o.etag, "size": o.size}
        for o in sorted(objects, key=lambda o: o.key)
    )


def build_channel_pin(uri: str, kind: str, objects: list[DataObject], **extra: Any) -> DataChannelPin:
    """A channel pin from its objects: sorted, counted, digested; pinned when every object has a version id."""
    objects = sorted(objects, key=lambda o: o.key)
    return DataChannelPin(
        uri=uri,
        kind=kind,
        objects=objects,
        object_count=len(objects),
        total_bytes=sum(o.size or 0 for o in objects),
        manifest_sha256=plan_manifest_sha256(objects),
        pinned=bool(objects) and all(o.version_id for o in objects),
        **extra,
    )


def parse_sagemaker_manifest(text: str | bytes) -> tuple[str, list[str]]:
    """A SageMaker ManifestFile: [{"prefix": "s3://bucket/p/"}, "rel/key1", ...] -> (prefix URI, relative keys).

    Raises ValueError when the text is not that shape.
    """
    entries = json.loads(text)
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise ValueError('a manifest is a JSON list whose first element is {"prefix": "s3://bucket/prefix/"}')
    prefix = entries[0].get("prefix")
    relative_keys = entries[1:]
    if not isinstance(prefix, str) or not all(isinstance(k, str) for k in relative_keys):
        raise ValueError('a manifest names its prefix as a string and each object as a string relative to it')
    return prefix, relative_keys


def build_sagemaker_manifest(prefix_uri: str, relative_keys: list[str]) -> bytes:
    return json.dumps([{"prefix": prefix_uri}, *relative_keys]).encode("utf-8")


def plan_snapshot_prefix(manifest_sha256: str) -> str:
    """The key prefix of a snapshot: named by the digest of what it holds, so equal content shares one snapshot."""
    return f"{SNAPSHOT_PREFIX}{manifest_sha256}/"


@dataclass(frozen=True)
class SnapshotPlan:
    """Where a channel's recorded versions go and which URI the rewritten channel reads."""

    source_bucket: str
    target_bucket: str
    root: str  # key prefix of the snapshot, ending with '/'
    copies: list[tuple[DataObject, str]]  # (recorded object, target key)
    uri: str  # what the channel's S3Uri becomes
    manifest_key: str | None = None  # ManifestFile channels: the rewritten manifest's key
    manifest_body: bytes | None = None


def plan_snapshot(pin: DataChannelPin, snapshot_prefix_uri: str | None = None) -> SnapshotPlan:
    """The snapshot of a channel pin, decided without any request. Pure.

    Objects keep their path relative to the channel's base: for S3Prefix the prefix up to its last '/', for a
    ManifestFile the manifest's own "prefix". An S3Prefix that ends mid-name (s3://b/data/train matches
    data/train/… and data/train_extra.csv) keeps that name part in the new URI, so the new prefix matches exactly
    the same relative keys.
    """
    if not pin.manifest_sha256:
        raise ValueError("a channel pin without manifest_sha256 cannot be snapshotted")
    if pin.kind == "ManifestFile":
        source_bucket, base = parse_s3_uri(pin.model_extra.get("manifest_prefix") or "")
        name_part = ""
    elif pin.kind == "S3Prefix":
        source_bucket, prefix = parse_s3_uri(pin.uri)
        base = prefix[: prefix.rfind("/") + 1]
        name_part = prefix[len(base) :]
    else:
        raise ValueError(f"cannot snapshot a {pin.kind} channel")
    if snapshot_prefix_uri:
        target_bucket, target_prefix = parse_s3_uri(snapshot_prefix_uri)
        if target_prefix and not target_prefix.endswith("/"):
            target_prefix += "/"
    else:
        target_bucket, target_prefix = source_bucket, SNAPSHOT_PREFIX
    root = f"{target_prefix}{pin.manifest_sha256}/"
    copies = []
    for obj in pin.objects:
        if not obj.key.startswith(base):
            raise ValueError(f"object {obj.key} is outside the channel base {base!r}")
        copies.append((obj, root + obj.key[len(base) :]))
    if pin.kind == "ManifestFile":
        manifest_key = root.rstrip("/") + ".manifest"  # beside the root, so it cannot collide with a data key
        body = build_sagemaker_manifest(build_s3_uri(target_bucket, root), [o.key[len(base) :] for o in pin.objects])
        return SnapshotPlan(
            source_bucket, target_bucket, root, copies, build_s3_uri(target_bucket, manifest_key), manifest_key, body
        )
    return SnapshotPlan(source_bucket, target_bucket, root, copies, build_s3_uri(target_bucket, root + name_part))


def plan_snapshot_uri(pin: DataChannelPin, snapshot_prefix_uri: str | None = None) -> str:
    """The URI the channel reads once snapshotted. Pure."""
    return plan_snapshot(pin, snapshot_prefix_uri).uri


# --- S3 ---------------------------------------------------------------------------------------------------------


def build_version_id(version_id: str | None) -> str | None:
    """Pure: an S3 version id as the ledger records it; S3's "null" (written without versioning) is none."""
    return None if version_id in (None, "null") else version_id


def _object_from_listing(entry: dict[str, Any]) -> DataObject:
    return DataObject(
        key=entry["Key"],
        version_id=build_version_id(entry.get("VersionId")),
        etag=(entry.get("ETag") or "").strip('"') or None,
        size=entry.get("Size"),
    )


def list_latest_versions(s3, bucket: str, prefix: str) -> list[DataObject]:
    """The version of each key under `prefix` that a reader gets now, from one paginated listing.

    Keys whose latest version is a delete marker have no IsLatest entry among the versions, so they drop out.
    When listing versions is refused (it needs s3:ListBucketVersions), falls back to list_objects_v2 (ETag and
    size, no version ids).
    """
    from botocore.exceptions import ClientError

    try:
        objects = []
        paginator = s3.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LISTING_PAGE_SIZE}):
            objects.extend(_object_from_listing(v) for v in page.get("Versions", []) if v.get("IsLatest"))
        return objects
    except ClientError as error:
        if not aws_error_code(error).startswith("AccessDenied"):
            raise
    objects = []
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LISTING_PAGE_SIZE}):
        objects.extend(_object_from_listing(o) for o in page.get("Contents", []))
    return objects


def _unversioned_gap(s3, channel_name: str, bucket: str, objects: list[DataObject]) -> Gap | None:
    """A gap naming the objects without version ids, with the fix that fits the bucket's versioning state."""
    from botocore.exceptions import BotoCoreError, ClientError

    missing = [o for o in objects if not o.version_id]
    if not missing:
        return None
    try:
        status = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    except (ClientError, BotoCoreError):  # only used to choose the wording of the fix
        status = None
    why = (
        f"{len(missing)} of {len(objects)} objects have no version id (bucket {bucket}: versioning "
        f"{status or 'never enabled'}); their ETag and size are recorded, but an overwrite would lose what the job read"
    )
    if status == "Enabled":
        fix = (
            f"the objects predate versioning: rewrite them once to give them version ids, e.g. "
            f"aws s3 cp s3://{bucket}/{missing[0].key} s3://{bucket}/{missing[0].key} --metadata-directive REPLACE; "
            "or set LEDGER_DATA_PIN=snapshot"
        )
    else:
        fix = (
            f"enable versioning: aws s3api put-bucket-versioning --bucket {bucket} "
            "--versioning-configuration Status=Enabled; or set LEDGER_DATA_PIN=snapshot"
        )
    return Gap(what=f"data channel {channel_name}", why=why, fix=fix)


def _s3_failure_gap(channel_name: str, uri: str, bucket: str, error: Exception) -> Gap:
    code = aws_error_code(error)
    what = f"data channel {channel_name} ({uri})"
    if code == "NoSuchBucket":
        return Gap(what=what, why=f"bucket {bucket} does not exist", fix="correct the S3 URI or create the bucket")
    if code in ("NoSuchKey", "404", "NotFound"):
        return Gap(what=what, why="the object does not exist", fix="correct the S3 URI or upload the object")
    if code.startswith("AccessDenied") or code == "403":
        return Gap(
            what=what,
            why=f"access denied ({code})",
            fix=f"grant s3:ListBucketVersions, s3:ListBucket and s3:GetObjectVersion on arn:aws:s3:::{bucket}",
        )
    return Gap(what=what, why=f"S3 request failed: {code}: {error}", fix="check credentials, region and network")


def capture_s3_channel(
    channel_name: str, s3_uri: str, s3_data_type: str = "S3Prefix", session=None
) -> tuple[DataChannelPin, list[Gap]]:
    """Pin one S3 channel. Raises UsageError for a malformed URI; every AWS failure is a gap."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_uri(s3_uri)
    kind = s3_data_type or "S3Prefix"
    what = f"data channel {channel_name}"
    try:
        s3 = client_for(session, "s3")
        if kind == "S3Prefix":
            pin = build_channel_pin(s3_uri, kind, list_latest_versions(s3, bucket, key))
            gaps = [g for g in [_unversioned_gap(s3, channel_name, bucket, pin.objects)] if g]
        elif kind == "ManifestFile":
            pin, gaps = _capture_manifest_channel(s3, channel_name, s3_uri, bucket, key)
        elif kind == "AugmentedManifestFile":
            pin, gaps = _capture_augmented_manifest(s3, channel_name, s3_uri, bucket, key)
        else:
            return DataChannelPin(uri=s3_uri, kind=kind), [
                Gap(what=what, why=f"S3DataType {kind} is not known to the ledger", fix="use S3Prefix or ManifestFile")
            ]
        if kind == "S3Prefix" and not pin.objects:
            gaps.append(Gap(what=what, why=f"no objects under {s3_uri}", fix="check the S3 URI; the job would fail"))
        return pin, gaps
    except ClientError as error:
        return DataChannelPin(uri=s3_uri, kind=kind), [_s3_failure_gap(channel_name, s3_uri, bucket, error)]
    except BotoCoreError as error:
        return DataChannelPin(uri=s3_uri, kind=kind), [
            Gap(what=what, why=f"S3 could not be reached: {error}", fix="check credentials, region and network")
        ]


def _get_manifest_object(s3, bucket: str, key: str) -> tuple[DataObject, bytes]:
    response = s3.get_object(Bucket=bucket, Key=key)
    body = response["Body"].read()
    obj = DataObject(
        key=key,
        version_id=build_version_id(response.get("VersionId")),
        etag=(response.get("ETag") or "").strip('"') or None,
        size=len(body),
    )
    return obj, body


def _capture_manifest_channel(s3, channel_name, s3_uri, bucket, key) -> tuple[DataChannelPin, list[Gap]]:
    """The manifest (its own version) and the objects it names, from listings of their common prefix."""
    manifest_object, body = _get_manifest_object(s3, bucket, key)
    what = f"data channel {channel_name}"
    try:
        prefix_uri, relative_keys = parse_sagemaker_manifest(body)
        data_bucket, base = parse_s3_uri(prefix_uri)
    except (ValueError, UsageError) as error:
        pin = DataChannelPin(uri=s3_uri, kind="ManifestFile", manifest_object=manifest_object.model_dump())
        return pin, [Gap(what=what, why=f"the manifest {s3_uri} cannot be read: {error}", fix="fix the manifest file")]
    wanted = list(dict.fromkeys(base + rel for rel in relative_keys))
    common = os.path.commonprefix(wanted) if wanted else base
    listed = {o.key: o for o in list_latest_versions(s3, data_bucket, common)}
    objects = [listed[k] for k in wanted if k in listed]
    gaps = [
        gap
        for gap in (
            _unversioned_gap(s3, f"{channel_name} (its manifest file)", bucket, [manifest_object]),
            _unversioned_gap(s3, channel_name, data_bucket, objects),
        )
        if gap
    ]
    missing = [k for k in wanted if k not in listed]
    if missing:
        gaps.append(
            Gap(
                what=what,
                why=f"{len(missing)} objects named in the manifest do not exist, e.g. s3://{data_bucket}/{missing[0]}",
                fix="upload them or remove them from the manifest; the job would fail",
            )
        )
    pin = build_channel_pin(
        s3_uri, "ManifestFile", objects, manifest_object=manifest_object.model_dump(), manifest_prefix=prefix_uri
    )
    if not manifest_object.version_id or missing:
        pin.pinned = False
    return pin, gaps


def _capture_augmented_manifest(s3, channel_name, s3_uri, bucket, key) -> tuple[DataChannelPin, list[Gap]]:
    """An augmented manifest (JSON lines that reference objects anywhere): its own version only, and a gap."""
    manifest_object, _ = _get_manifest_object(s3, bucket, key)
    pin = DataChannelPin(uri=s3_uri, kind="AugmentedManifestFile", manifest_object=manifest_object.model_dump())
    gap = Gap(
        what=f"data channel {channel_name}",
        why="the objects an AugmentedManifestFile references are not pinned, only the manifest itself",
        fix="keep the referenced objects in a versioned bucket and never overwrite them",
    )
    return pin, [gap]


def capture_channels(
    request: dict[str, Any], session=None, skip: tuple[str, ...] = ()
) -> tuple[dict[str, DataChannelPin], list[Gap]]:
    """Pin every input channel of a CreateTrainingJob request: S3 (or file:// for the local backend) and file
    systems. `skip` names channels pinned elsewhere (the 3.x code channels, see code.plan_code_channel_names)."""
    pins: dict[str, DataChannelPin] = {}
    gaps: list[Gap] = []
    for channel in request.get("InputDataConfig") or []:
        name = channel.get("ChannelName", "?")
        if name in skip:
            continue
        source = channel.get("DataSource") or {}
        s3_source = source.get("S3DataSource")
        file_system = source.get("FileSystemDataSource")
        if s3_source:
            uri = s3_source.get("S3Uri", "")
            if uri.startswith("file://"):
                pin, channel_gaps = capture_file_channel(uri, channel_name=name)
            else:
                try:
                    pin, channel_gaps = capture_s3_channel(name, uri, s3_source.get("S3DataType", "S3Prefix"), session)
                except UsageError as error:
                    pin = DataChannelPin(uri=str(uri), kind=s3_source.get("S3DataType"))
                    channel_gaps = [Gap(what=f"data channel {name}", why=error.message, fix=error.hint)]
        elif file_system:
            fs_type = file_system.get("FileSystemType", "fs").lower()
            uri = f"{fs_type}://{file_system.get('FileSystemId', '')}{file_system.get('DirectoryPath', '')}"
            pin = DataChannelPin(uri=uri, kind="FileSystem")
            channel_gaps = [
                Gap(
                    what=f"data channel {name}",
                    why="an EFS or FSx file system channel is read as it is at run time; its contents are not pinned",
                    fix="copy the data to a versioned S3 bucket and use an S3 channel",
                )
            ]
        else:
            pin = DataChannelPin(uri="", kind=None)
            why = "a data source the ledger does not know"
            channel_gaps = [Gap(what=f"data channel {name}", why=why, fix="use an S3 channel")]
        pins[name] = pin
        gaps.extend(channel_gaps)
    return pins, gaps


# --- snapshots --------------------------------------------------------------------------------------------------


def _existing_snapshot_objects(s3, plan: SnapshotPlan) -> dict[str, int]:
    """key -> size of what is already under the snapshot (one listing, which also covers the .manifest beside it)."""
    found: dict[str, int] = {}
    paginator = s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(
        Bucket=plan.target_bucket, Prefix=plan.root.rstrip("/"), PaginationConfig={"PageSize": LISTING_PAGE_SIZE}
    )
    for page in pages:
        for entry in page.get("Contents", []):
            found[entry["Key"]] = entry.get("Size")
    return found


def _copy_recorded_version(s3, plan: SnapshotPlan, obj: DataObject, target_key: str) -> None:
    """Copy exactly the recorded object, server-side. Raises when the source no longer is what was recorded."""
    source = {"Bucket": plan.source_bucket, "Key": obj.key}
    extra: dict[str, Any] = {}
    if obj.version_id:
        source["VersionId"] = obj.version_id
    elif obj.etag:
        # No version id: copy only if the current object still has the recorded ETag (S3 checks it atomically).
        extra["CopySourceIfMatch"] = f'"{obj.etag}"'
    if (obj.size or 0) > SINGLE_COPY_LIMIT:
        s3.copy(source, plan.target_bucket, target_key, ExtraArgs=extra or None)
        return
    response = s3.copy_object(Bucket=plan.target_bucket, Key=target_key, CopySource=source, **extra)
    copied_etag = (response.get("CopyObjectResult", {}).get("ETag") or "").strip('"')
    # A single-part ETag is the MD5 of the bytes: compare it too, for S3-compatible stores that ignore If-Match.
    if not obj.version_id and obj.etag and "-" not in obj.etag and copied_etag and copied_etag != obj.etag:
        s3.delete_object(Bucket=plan.target_bucket, Key=target_key)
        raise RuntimeError(f"{obj.key} changed since it was recorded (ETag {copied_etag}, recorded {obj.etag})")


def snapshot_channel(
    pin: DataChannelPin, session=None, snapshot_prefix_uri: str | None = None, max_workers: int = 16
) -> tuple[str | None, list[Gap]]:
    """Copy the recorded versions to `<bucket>/ledger-snapshots/<manifest_sha256>/…` in parallel, server-side.

    Returns (the URI the channel should read, gaps); (None, gaps) when the snapshot could not be completed, and
    the channel should then stay as it was. A snapshot that already exists and is complete costs one listing.
    The default snapshot prefix is in the channel's own bucket; `snapshot_prefix_uri` puts it elsewhere (for
    example a bucket with Object Lock).
    """
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    what = f"snapshot of {pin.uri}"
    if pin.kind not in ("S3Prefix", "ManifestFile") or not pin.objects:
        why = f"nothing to snapshot in a {pin.kind} channel with {pin.object_count} objects"
        return None, [Gap(what=what, why=why, fix="snapshots are for S3Prefix and ManifestFile channels with objects")]
    plan = plan_snapshot(pin, snapshot_prefix_uri)
    try:
        s3 = client_for(session, "s3", config=Config(max_pool_connections=max_workers + 2))
        existing = _existing_snapshot_objects(s3, plan)
        todo = [(obj, key) for obj, key in plan.copies if existing.get(key) != obj.size]
        failures: list[str] = []

        def copy_one(item: tuple[DataObject, str]) -> None:
            obj, key = item
            try:
                _copy_recorded_version(s3, plan, obj, key)
            except (ClientError, BotoCoreError, RuntimeError) as error:
                failures.append(f"{obj.key}: {error}")

        if todo:
            with ThreadPoolExecutor(max_workers=max_workers) as pool:
                list(pool.map(copy_one, todo))
        if failures:
            return None, [
                Gap(
                    what=what,
                    why=f"{len(failures)} of {len(todo)} copies failed, e.g. {failures[0]}",
                    fix="check s3:GetObjectVersion and s3:PutObject permissions; the channel was left unchanged",
                )
            ]
        if plan.manifest_key and plan.manifest_key not in existing:
            s3.put_object(Bucket=plan.target_bucket, Key=plan.manifest_key, Body=plan.manifest_body)
    except (ClientError, BotoCoreError) as error:
        return None, [Gap(what=what, why=f"{aws_error_code(error)}: {error}", fix="the channel was left unchanged")]
    return plan.uri, []


# --- local files ------------------------------------------------------------------------------------------------


def hash_file(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def hash_file_tree(path: str | Path) -> list[DataObject]:
    """Every file under `path` (or `path` itself when it is a file): relative POSIX key, sha256 as etag, size.

    Sorted by key. The files are those the content store pins (content_store.list_channel_files): symbolic links
    are followed where they stay inside the channel; the others are left out, and hash_file_tree_refusals names them.
    """
    return hash_file_tree_refusals(path)[0]


def hash_file_tree_refusals(path: str | Path) -> tuple[list[DataObject], list[str]]:
    """hash_file_tree, and the symbolic links it left out ("key -> target: why")."""
    from ledger.capture.content_store import list_channel_files

    root = Path(path)
    if root.is_file():
        return [DataObject(key=root.name, etag=hash_file(root), size=root.stat().st_size)], []
    files, refused = list_channel_files(root)
    return [DataObject(key=key, etag=hash_file(file), size=file.stat().st_size) for key, file in files], refused


def file_uri_path(uri: str) -> Path:
    """'file:///abs/path' or 'file://relative' -> a Path."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return Path(unquote(parsed.netloc + parsed.path))


def capture_file_channel(uri: str, channel_name: str = "") -> tuple[DataChannelPin, list[Gap]]:
    """Hash a `file://` channel. Hashes prove later whether the files changed; they do not keep the files, so the
    pin is not `pinned` (ledger/capture/content_store.py stores them and pins the channel)."""
    path = file_uri_path(uri)
    what = f"data channel {channel_name or uri}"
    if not path.exists():
        gap = Gap(what=what, why=f"{path} does not exist", fix="correct the path")
        return DataChannelPin(uri=uri, kind="file"), [gap]
    from ledger.capture.content_store import plan_refused_links_gap

    objects, refused = hash_file_tree_refusals(path)
    pin = build_channel_pin(uri, "file", objects)
    pin.pinned = False
    gap = Gap(
        what=what,
        why="local files are hashed, not kept: a later change is detected but the old content cannot be read back",
        fix="keep a copy in the ledger's content store, or upload the data to a versioned S3 bucket",
    )
    return pin, [gap] + [g for g in [plan_refused_links_gap(channel_name or uri, refused)] if g]
