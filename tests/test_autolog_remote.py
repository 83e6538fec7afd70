"""autolog() and the SageMaker SDK 2.x `@remote` decorator, against a real moto server standing in for AWS.

`@remote` turns a function call into a training job: the SDK pickles the function and its arguments to S3, uploads
its bootstrap scripts and a workspace as two S3Prefix channels, sends CreateTrainingJob, waits for the job and
reads the function's result back from S3. autolog() sees the CreateTrainingJob like any other.
"""

from __future__ import annotations

import json
import time

import boto3
import pytest

import ledger
from ledger.store.ledger import open_ledger
from tests.conftest import git

ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/remote-py311:1"
DIGEST = "sha256:" + "cd" * 32
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
BUCKET = f"sagemaker-us-east-1-{ACCOUNT}"


def publish_image() -> None:
    ecr = boto3.client("ecr")
    ecr.create_repository(repositoryName="remote-py311")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"digest": "sha256:" + "1" * 64, "size": 1,
                           "mediaType": "application/vnd.docker.container.image.v1+json"}, "layers": []}
    ecr.put_image(repositoryName="remote-py311", imageManifest=json.dumps(manifest), imageTag="1", imageDigest=DIGEST)


def s3_versions(bucket: str, prefix: str) -> dict[str, str]:
    listing = boto3.client("s3").list_object_versions(Bucket=bucket, Prefix=prefix)
    return {v["Key"]: v["VersionId"] for v in listing.get("Versions", []) if v["IsLatest"]}


def test_a_remote_function_call_is_recorded_at_its_launch(sdk2, notebook_dir):
    from sagemaker.remote_function import remote
    from sagemaker.remote_function.errors import ServiceError

    publish_image()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    ledger.autolog(project="remote")

    @remote(image_uri=IMAGE, role=ROLE, instance_type="ml.m5.large", s3_root_uri=f"s3://{BUCKET}/remote",
            sagemaker_session=sdk2.Session(default_bucket=BUCKET), job_name_prefix="add-numbers")
    def add(a, b):
        return a + b

    started = time.monotonic()
    # The call sends CreateTrainingJob, then waits for the job and reads the function's return value from
    # <s3_root_uri>/<job>/results/. moto marks the job Completed at once but never runs it, so no result is ever
    # written there and the SDK fails reading it (HeadObject 404): the call fails *after* the launch. What matters
    # here is that the launch was captured before that.
    with pytest.raises(ServiceError, match=r"results/.*404"):
        add(2, 3)
    assert time.monotonic() - started < 30

    frame = open_ledger().runs()
    assert len(frame) == 1, frame
    record = open_ledger().get(frame["run_id"][0])
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName=record.job_name)
    assert record.job_name.startswith("add-numbers") and record.project == "remote"

    # the request, as sent: @remote's entry point and the S3 base of the pickled function and arguments
    algorithm = record.request["AlgorithmSpecification"]
    assert algorithm["ContainerEntrypoint"][-1].endswith("sagemaker_remote_function_bootstrap/job_driver.sh")
    base_uri = algorithm["ContainerArguments"][algorithm["ContainerArguments"].index("--s3_base_uri") + 1]
    assert base_uri == f"s3://{BUCKET}/remote/{record.job_name}"
    uploaded = s3_versions(BUCKET, f"remote/{record.job_name}/")
    assert any("/function/" in key for key in uploaded) and any("/arguments/" in key for key in uploaded)
    # ... and they are the code of this job: pinned by version like a data channel
    remote = record.pins.code.model_extra["remote_function"]
    assert remote["pinned"] and {o["key"]: o["version_id"] for o in remote["objects"]} == uploaded

    # the image: pinned by digest, and the job was sent with the pinned reference
    pinned = IMAGE.rsplit(":", 1)[0] + "@" + DIGEST
    assert record.pins.image.digest == DIGEST
    assert algorithm["TrainingImage"] == pinned == job["AlgorithmSpecification"]["TrainingImage"]
    assert record.original_request["AlgorithmSpecification"]["TrainingImage"] == IMAGE

    # the S3 inputs the SDK uploaded: its bootstrap scripts and the workspace, each object by version id
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in record.request["InputDataConfig"]}
    assert set(channels) == {"sagemaker_remote_function_bootstrap", "sm_rf_user_ws"}
    assert set(record.pins.data) == set(channels)
    for name, uri in channels.items():
        pin = record.pins.data[name]
        prefix = uri[len(f"s3://{BUCKET}/"):]
        assert pin.pinned and pin.uri == uri and pin.object_count >= 1
        assert {o.key: o.version_id for o in pin.objects} == s3_versions(BUCKET, prefix)
    bootstrap = {o.key.rsplit("/", 1)[1] for o in record.pins.data["sagemaker_remote_function_bootstrap"].objects}
    assert "job_driver.sh" in bootstrap

    # the rest of the record, as for any job
    assert record.pins.code.commit == git(notebook_dir, "rev-parse", "HEAD").strip()
    assert (record.pins.hardware.instance_type, record.pins.hardware.vcpu) == ("ml.m5.large", 2)
    assert record.outcome.arn == job["TrainingJobArn"]
    assert record.outcome.status == "Completed"  # settled by the describe the SDK made while waiting
    assert record.pins.gaps == [], record.pins.gaps
