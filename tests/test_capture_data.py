"""Data pinning against the moto server: versions, overwrites, snapshots, unversioned and missing buckets, request
counts; and file:// channels on real files."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from ledger.capture import RequestCounter
from ledger.capture.data import (
    build_channel_pin,
    capture_channels,
    capture_file_channel,
    capture_s3_channel,
    hash_file_tree,
    parse_s3_uri,
    plan_manifest_sha256,
    plan_snapshot,
    plan_snapshot_prefix,
    plan_snapshot_uri,
    snapshot_channel,
)
from ledger.errors import UsageError
from ledger.record import DataChannelPin, DataObject, digest

BUCKET = "training-data"


def _bucket(session, name=BUCKET, versioned=True):
    s3 = session.client("s3")
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


def _put_many(s3, bucket, keys_to_bodies, workers=16):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), keys_to_bodies.items()))


def _body(i, generation=0):
    return f"{i},{i * 2},{generation}\n".encode() * (i + 1)


@pytest.fixture
def session(aws):
    return boto3.Session()


@pytest.fixture
def train_prefix(session):
    """A versioned bucket with 25 objects under train/ (and one outside it)."""
    s3 = _bucket(session)
    _put_many(s3, BUCKET, {f"train/part-{i:03d}.csv": _body(i) for i in range(25)})
    s3.put_object(Bucket=BUCKET, Key="validation/v.csv", Body=b"not in the channel")
    return s3


# --- pure -------------------------------------------------------------------------------------------------------


def test_parse_s3_uri():
    assert parse_s3_uri("s3://my-bucket/a/b/") == ("my-bucket", "a/b/")
    assert parse_s3_uri("s3://my-bucket") == ("my-bucket", "")
    for bad in ("my-bucket/a", "s3:/my-bucket/a", "s3://", "https://my-bucket/a", "s3://a/x", None):
        with pytest.raises(UsageError):
            parse_s3_uri(bad)


def test_manifest_digest_follows_the_rule_and_ignores_order():
    a = DataObject(key="p/a", version_id="v1", etag="e1", size=1)
    b = DataObject(key="p/b", version_id=None, etag="e2", size=2)
    expected = digest([{"key": "p/a", "version_id": "v1", "etag": "e1", "size": 1},
                       {"key": "p/b", "version_id": None, "etag": "e2", "size": 2}])  # fmt: skip
    assert plan_manifest_sha256([b, a]) == plan_manifest_sha256([a, b]) == expected
    pin = build_channel_pin("s3://bkt/p/", "S3Prefix", [b, a])
    assert [o.key for o in pin.objects] == ["p/a", "p/b"]
    assert (pin.object_count, pin.total_bytes, pin.pinned) == (2, 3, False)


def test_plan_snapshot_keeps_relative_keys_and_a_partial_name():
    objects = [DataObject(key="data/train/a.csv", version_id="1", size=1), DataObject(key="data/train_x.csv", version_id="2", size=1)]
    pin = build_channel_pin("s3://bkt/data/train", "S3Prefix", objects)
    plan = plan_snapshot(pin)
    root = plan_snapshot_prefix(pin.manifest_sha256)
    assert root == f"ledger-snapshots/{pin.manifest_sha256}/"
    assert [key for _, key in plan.copies] == [root + "train/a.csv", root + "train_x.csv"]
    # the new prefix ends in the same partial name, so it matches exactly the same relative keys
    assert plan.uri == plan_snapshot_uri(pin) == f"s3://bkt/{root}train"
    elsewhere = plan_snapshot(pin, "s3://locked-bucket/snaps")
    assert elsewhere.target_bucket == "locked-bucket" and elsewhere.uri == f"s3://locked-bucket/snaps/{pin.manifest_sha256}/train"


# --- S3Prefix against moto ----------------------------------------------------------------------------------------


def test_capture_versioned_prefix(session, train_prefix):
    counter = RequestCounter().attach(session)
    pin, gaps = capture_s3_channel("train", f"s3://{BUCKET}/train/", "S3Prefix", session)

    assert not gaps
    assert pin.kind == "S3Prefix" and pin.pinned and pin.object_count == 25
    assert [o.key for o in pin.objects] == [f"train/part-{i:03d}.csv" for i in range(25)]
    assert all(o.version_id and o.etag and '"' not in o.etag for o in pin.objects)
    assert pin.objects[3].etag == hashlib.md5(_body(3)).hexdigest()
    assert pin.total_bytes == sum(len(_body(i)) for i in range(25))
    assert pin.manifest_sha256 == plan_manifest_sha256(pin.objects)
    assert counter.calls == {"ListObjectVersions": 1}  # one listing, no call per object


def test_overwrite_changes_only_those_objects_and_old_versions_still_read(session, train_prefix):
    s3 = train_prefix
    first, _ = capture_s3_channel("train", f"s3://{BUCKET}/train/", "S3Prefix", session)
    changed = {f"train/part-{i:03d}.csv" for i in (2, 11, 20)}
    for key in changed:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"overwritten\n")
    s3.delete_object(Bucket=BUCKET, Key="train/part-024.csv")  # a delete marker hides it from the job

    second, gaps = capture_s3_channel("train", f"s3://{BUCKET}/train/", "S3Prefix", session)

    assert not gaps and second.object_count == 24
    before = {o.key: o for o in first.objects}
    after = {o.key: o for o in second.objects}
    assert set(before) - set(after) == {"train/part-024.csv"}
    assert {k for k in after if after[k] != before[k]} == changed
    assert second.manifest_sha256 != first.manifest_sha256
    for key in changed:  # the first record still fetches what the first job read
        old = s3.get_object(Bucket=BUCKET, Key=key, VersionId=before[key].version_id)["Body"].read()
        assert old == _body(int(key[-7:-4]))


def test_snapshot_copies_recorded_versions_byte_for_byte(session, train_prefix):
    s3 = train_prefix
    pin, _ = capture_s3_channel("train", f"s3://{BUCKET}/train/", "S3Prefix", session)
    for i in (0, 1, 2):  # written after capture: the snapshot must still hold what was recorded
        s3.put_object(Bucket=BUCKET, Key=f"train/part-{i:03d}.csv", Body=b"late write\n")

    counter = RequestCounter().attach(session)
    uri, gaps = snapshot_channel(pin, session, max_workers=8)

    assert not gaps
    assert uri == f"s3://{BUCKET}/ledger-snapshots/{pin.manifest_sha256}/"
    assert counter.calls == {"ListObjectsV2": 1, "CopyObject": 25}
    snap_bucket, snap_prefix = parse_s3_uri(uri)
    listed = s3.list_objects_v2(Bucket=snap_bucket, Prefix=snap_prefix)["Contents"]
    assert len(listed) == 25
    for obj in pin.objects:
        recorded = s3.get_object(Bucket=BUCKET, Key=obj.key, VersionId=obj.version_id)["Body"].read()
        copied = s3.get_object(Bucket=snap_bucket, Key=snap_prefix + obj.key[len("train/"):])["Body"].read()
        assert copied == recorded
    # the snapshot, read as a channel, has the recorded content (same relative keys, sizes and ETags)
    reread, _ = capture_s3_channel("train", uri, "S3Prefix", session)
    assert [(o.key[len(snap_prefix):], o.etag, o.size) for o in reread.objects] == [
        (o.key[len("train/"):], o.etag, o.size) for o in pin.objects
    ]

    counter.reset()
    again, gaps = snapshot_channel(pin, session)  # complete already: one listing, no copy
    assert again == uri and not gaps and counter.calls == {"ListObjectsV2": 1}


def test_snapshot_resumes_a_partial_snapshot(session, train_prefix):
    s3 = train_prefix
    pin, _ = capture_s3_channel("train", f"s3://{BUCKET}/train/", "S3Prefix", session)
    plan = plan_snapshot(pin)
    snapshot_channel(pin, session)
    for _, key in plan.copies[:5]:
        s3.delete_object(Bucket=BUCKET, Key=key)  # versioned bucket: a delete marker, the key is gone
    counter = RequestCounter().attach(session)
    uri, gaps = snapshot_channel(pin, session)
    assert uri and not gaps and counter.calls == {"ListObjectsV2": 1, "CopyObject": 5}


def test_snapshot_of_a_prefix_ending_mid_name_reads_the_same_keys(session):
    s3 = _bucket(session)
    _put_many(s3, BUCKET, {"data/train/a.csv": b"a", "data/train_extra.csv": b"b", "data/test.csv": b"c"})
    pin, _ = capture_s3_channel("train", f"s3://{BUCKET}/data/train", "S3Prefix", session)
    assert [o.key for o in pin.objects] == ["data/train/a.csv", "data/train_extra.csv"]
    uri, gaps = snapshot_channel(pin, session)
    assert not gaps and uri.endswith(f"{pin.manifest_sha256}/train")
    reread, _ = capture_s3_channel("train", uri, "S3Prefix", session)
    assert [o.key.rsplit("/", 2)[-2:] for o in reread.objects] == [["train", "a.csv"], [pin.manifest_sha256, "train_extra.csv"]]


def test_unversioned_bucket_records_etags_and_a_gap(session):
    s3 = _bucket(session, "plain-bucket", versioned=False)
    _put_many(s3, "plain-bucket", {f"train/{i}.csv": _body(i) for i in range(4)})
    pin, gaps = capture_s3_channel("train", "s3://plain-bucket/train/", "S3Prefix", session)
    assert pin.object_count == 4 and not pin.pinned
    assert all(o.version_id is None and o.etag and o.size for o in pin.objects)
    assert len(gaps) == 1
    assert "no version id" in gaps[0].why
    assert "aws s3api put-bucket-versioning --bucket plain-bucket --versioning-configuration Status=Enabled" in gaps[0].fix


def test_snapshot_of_unversioned_objects_refuses_changed_ones(session):
    s3 = _bucket(session, "plain-bucket", versioned=False)
    _put_many(s3, "plain-bucket", {f"train/{i}.csv": _body(i) for i in range(4)})
    pin, _ = capture_s3_channel("train", "s3://plain-bucket/train/", "S3Prefix", session)

    uri, gaps = snapshot_channel(pin, session)  # unchanged since capture: copied, guarded by the ETag
    assert uri and not gaps

    s3.put_object(Bucket="plain-bucket", Key="train/1.csv", Body=b"changed")
    pin2 = pin.model_copy(deep=True)
    pin2.manifest_sha256 = "f" * 64  # a fresh snapshot location
    uri, gaps = snapshot_channel(pin2, session)
    assert uri is None and len(gaps) == 1 and "train/1.csv" in gaps[0].why
    left = s3.list_objects_v2(Bucket="plain-bucket", Prefix=f"ledger-snapshots/{'f' * 64}/").get("Contents", [])
    assert f"ledger-snapshots/{'f' * 64}/1.csv" not in {o["Key"] for o in left}  # the wrong copy was removed
    assert len(left) == 3


def test_missing_bucket_is_a_gap(session):
    pin, gaps = capture_s3_channel("train", "s3://no-such-bucket/train/", "S3Prefix", session)
    assert pin.object_count == 0 and not pin.pinned
    assert len(gaps) == 1 and "no-such-bucket does not exist" in gaps[0].why


def test_empty_prefix_is_a_gap(session, train_prefix):
    pin, gaps = capture_s3_channel("train", f"s3://{BUCKET}/nothing-here/", "S3Prefix", session)
    assert pin.object_count == 0 and not pin.pinned and "no objects" in gaps[0].why


def test_malformed_uri_is_a_usage_error(session):
    with pytest.raises(UsageError):
        capture_s3_channel("train", "bucket/train", "S3Prefix", session)


def test_one_listing_call_per_thousand_objects(session):
    s3 = _bucket(session, "big-bucket")
    _put_many(s3, "big-bucket", {f"train/{i:05d}": b"x" for i in range(1001)}, workers=32)
    counter = RequestCounter().attach(session)
    pin, gaps = capture_s3_channel("train", "s3://big-bucket/train/", "S3Prefix", session)
    assert not gaps and pin.object_count == 1001 and pin.pinned
    assert counter.calls == {"ListObjectVersions": 2}  # ceil(1001 / 1000)


# --- ManifestFile -------------------------------------------------------------------------------------------------


def test_manifest_file_channel_and_its_snapshot(session, train_prefix):
    s3 = train_prefix
    names = ["part-001.csv", "part-007.csv", "part-019.csv"]
    manifest = json.dumps([{"prefix": f"s3://{BUCKET}/train/"}, *names]).encode()
    s3.put_object(Bucket=BUCKET, Key="manifests/train.manifest", Body=manifest)

    counter = RequestCounter().attach(session)
    pin, gaps = capture_s3_channel("train", f"s3://{BUCKET}/manifests/train.manifest", "ManifestFile", session)

    assert not gaps and pin.kind == "ManifestFile" and pin.pinned
    assert [o.key for o in pin.objects] == [f"train/{n}" for n in names]
    assert pin.manifest_object["version_id"] and pin.manifest_object["size"] == len(manifest)
    assert counter.calls == {"GetObject": 1, "ListObjectVersions": 1}  # the manifest, then one listing

    counter.reset()
    uri, gaps = snapshot_channel(pin, session)
    assert not gaps and uri == f"s3://{BUCKET}/ledger-snapshots/{pin.manifest_sha256}.manifest"
    assert counter.calls == {"ListObjectsV2": 1, "CopyObject": 3, "PutObject": 1}
    # the rewritten manifest names the snapshot, whose objects are the recorded versions
    bucket, key = parse_s3_uri(uri)
    entries = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert entries[0] == {"prefix": f"s3://{BUCKET}/ledger-snapshots/{pin.manifest_sha256}/"} and entries[1:] == names
    for name, obj in zip(names, pin.objects):
        copied = s3.get_object(Bucket=BUCKET, Key=f"ledger-snapshots/{pin.manifest_sha256}/{name}")["Body"].read()
        assert copied == s3.get_object(Bucket=BUCKET, Key=obj.key, VersionId=obj.version_id)["Body"].read()


def test_manifest_naming_missing_objects_is_a_gap(session, train_prefix):
    manifest = json.dumps([{"prefix": f"s3://{BUCKET}/train/"}, "part-001.csv", "gone.csv"]).encode()
    train_prefix.put_object(Bucket=BUCKET, Key="m.manifest", Body=manifest)
    pin, gaps = capture_s3_channel("train", f"s3://{BUCKET}/m.manifest", "ManifestFile", session)
    assert pin.object_count == 1 and not pin.pinned
    assert any("do not exist" in g.why and "gone.csv" in g.why for g in gaps)


def test_malformed_manifest_is_a_gap(session, train_prefix):
    train_prefix.put_object(Bucket=BUCKET, Key="bad.manifest", Body=b"{not json")
    pin, gaps = capture_s3_channel("train", f"s3://{BUCKET}/bad.manifest", "ManifestFile", session)
    assert pin.object_count == 0 and gaps and "cannot be read" in gaps[0].why


# --- file:// and the whole request ----------------------------------------------------------------------------------


def test_hash_file_tree_and_file_channel(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.csv").write_bytes(b"1,2\n")
    (tmp_path / "sub" / "a.csv").write_bytes(b"3,4\n")
    objects = hash_file_tree(tmp_path)
    assert [(o.key, o.etag, o.size) for o in objects] == [
        ("b.csv", hashlib.sha256(b"1,2\n").hexdigest(), 4),
        ("sub/a.csv", hashlib.sha256(b"3,4\n").hexdigest(), 4),
    ]
    assert hash_file_tree(tmp_path / "b.csv")[0].key == "b.csv"

    pin, gaps = capture_file_channel(f"file://{tmp_path}")
    assert pin.kind == "file" and pin.object_count == 2 and pin.manifest_sha256 == plan_manifest_sha256(objects)
    assert not pin.pinned and len(gaps) == 1 and "not kept" in gaps[0].why
    missing, gaps = capture_file_channel(f"file://{tmp_path}/nope")
    assert missing.object_count == 0 and "does not exist" in gaps[0].why


def test_capture_channels_of_a_request(session, train_prefix, tmp_path):
    (tmp_path / "x.csv").write_bytes(b"x")
    request = {
        "InputDataConfig": [
            {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/train/"}}},
            {"ChannelName": "local", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"file://{tmp_path}"}}},
            {"ChannelName": "bad", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "not-a-uri"}}},
            {"ChannelName": "efs", "DataSource": {"FileSystemDataSource": {"FileSystemId": "fs-1", "FileSystemType": "EFS", "DirectoryPath": "/d", "FileSystemAccessMode": "ro"}}},
            {"ChannelName": "code", "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/code/"}}},
        ]
    }  # fmt: skip
    pins, gaps = capture_channels(request, session, skip=("code",))
    assert set(pins) == {"train", "local", "bad", "efs"}
    assert pins["train"].pinned and pins["train"].object_count == 25
    assert pins["local"].kind == "file" and pins["efs"].kind == "FileSystem"
    assert {g.what.split()[2] for g in gaps} == {"local", "bad", "efs"}
    assert all(isinstance(p, DataChannelPin) for p in pins.values())
