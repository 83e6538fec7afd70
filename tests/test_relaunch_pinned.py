"""A SageMaker relaunch reads exactly what was recorded: every object the relaunched request points at (each data
channel and the source archive) is compared with the recorded manifest, against moto's S3 and SageMaker, with the
record on SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import json
import tarfile

import boto3

from ledger import reproduce
from tests.test_preflight import record_on_sagemaker, rows, sdk2_request, world  # noqa: F401 - `world` is a fixture


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def objects_under(uri: str) -> dict[str, bytes]:
    """What a SageMaker channel with this S3Uri reads: every current object under the prefix, by relative key."""
    bucket, prefix = uri[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            found[entry["Key"][len(prefix):]] = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
    return found


def recorded_objects(pin) -> dict[str, bytes]:
    """The recorded manifest, read back by version id, by key relative to the channel's prefix."""
    bucket, prefix = pin.uri[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3")
    return {o.key[len(prefix):]: s3.get_object(Bucket=bucket, Key=o.key, VersionId=o.version_id)["Body"].read()
            for o in pin.objects}


def test_every_object_a_sagemaker_relaunch_points_at_is_the_recorded_one(world, db_url):  # noqa: F811
    s3 = boto3.client("s3")
    for i in range(2):
        s3.put_object(Bucket="abalone-data", Key=f"abalone/test/part-{i}.csv", Body=f"{i},2,3,4\n".encode())
        s3.put_object(Bucket="abalone-data", Key=f"abalone/holdout/part-{i}.csv", Body=f"{i},5,6,7\n".encode())
    archive_key = "job/source/sourcedir.tar.gz"
    s3.put_object(Bucket="abalone-data", Key=archive_key, Body=tarball({"train.py": b"print('v1')\n"}))
    channels = {name: f"s3://abalone-data/abalone/{name}/" for name in ("train", "validation", "test", "holdout")}
    record, session = record_on_sagemaker(sdk2_request("pinned", channels, f"s3://abalone-data/{archive_key}"))
    archive = record.pins.code.source_archive
    assert archive.version_id and all(pin.pinned for pin in record.pins.data.values())

    # After the capture: an object changed, one added, one deleted; the code archive overwritten; holdout untouched.
    s3.put_object(Bucket="abalone-data", Key="abalone/train/part-0.csv", Body=b"changed\n")
    s3.put_object(Bucket="abalone-data", Key="abalone/validation/part-9.csv", Body=b"added\n")
    s3.delete_object(Bucket="abalone-data", Key="abalone/test/part-1.csv")
    s3.put_object(Bucket="abalone-data", Key=archive_key, Body=tarball({"train.py": b"print('v2')\n"}))

    result = reproduce(record.run_id, backend="sagemaker", yes=True, session=session, log=lambda line: None)
    plan = rows(result.plan)
    assert [plan[f"data {name}"]["now"] for name in ("train", "validation", "test", "holdout")] == [
        "1 changed", "1 added", "1 deleted", "unchanged"]
    assert plan["source archive"]["status"] == "drift"

    sent = boto3.client("sagemaker").describe_training_job(TrainingJobName=result.record.job_name)
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in sent["InputDataConfig"]}
    for name, pin in record.pins.data.items():
        assert objects_under(uris[name]) == recorded_objects(pin), name
    assert uris["holdout"] == channels["holdout"]  # checked unchanged: read where it is
    assert all(uris[n].startswith("s3://abalone-data/ledger-snapshots/") for n in ("train", "validation", "test"))

    submitted = json.loads(sent["HyperParameters"]["sagemaker_submit_directory"])
    assert submitted != archive.uri and submitted.startswith("s3://abalone-data/ledger-snapshots/")
    bucket, key = submitted[len("s3://"):].split("/", 1)
    recorded = s3.get_object(Bucket="abalone-data", Key=archive_key, VersionId=archive.version_id)["Body"].read()
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == recorded
    read = result.record.pins.code.source_archive  # the reproduction's record names the copy it read
    assert (read.uri, read.sha256) == (submitted, archive.sha256)
    assert read.model_extra["copied_from"] == {"uri": archive.uri, "version_id": archive.version_id}
