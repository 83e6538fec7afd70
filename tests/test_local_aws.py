"""ledger.demo.local_aws: the stand-in for AWS that offline notebooks start. Jobs sent to it really run (on the local
backend) and moto's description of them says what happened; stopping it puts the environment back."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
import requests

import ledger
from ledger.demo.local_aws import ACCESS_KEY, BUILTIN_IMAGES, current_local_aws, start_local_aws
from ledger.errors import LedgerError
from ledger.store.ledger import open_ledger

XGBOOST_ACCOUNT, _, _ = BUILTIN_IMAGES["us-east-1"]
XGBOOST_IMAGE = f"{XGBOOST_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
RMSE = r".*\[[0-9]+\].*#011{}-rmse:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"


@pytest.fixture
def stand_in(moto_server, ledger_home, tmp_path, monkeypatch):
    """A fresh stand-in (moto's state is process-wide: emptied first), no AWS settings from the caller."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "SAGEMAKER_USER_CONFIG_OVERRIDE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    requests.post(f"{moto_server}/moto-api/reset", timeout=10)
    aws = start_local_aws()
    yield aws
    ledger.autolog(disable=True)
    aws.stop()


def abalone_like(rows: int, offset: int = 0) -> bytes:
    return "".join(f"{(i * 7) % 29},{(i % 13) / 13:.3f},{(i % 7) / 7:.3f},{(i % 5) / 5:.3f}\n"
                   for i in range(offset, offset + rows)).encode()


def put_data(bucket: str = "data") -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="abalone/train/part-0.csv", Body=abalone_like(120))
    s3.put_object(Bucket=bucket, Key="abalone/validation/part-0.csv", Body=abalone_like(40, 500))


def xgboost_request(name: str, image: str = XGBOOST_IMAGE, bucket: str = "data") -> dict:
    return {
        "TrainingJobName": name, "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File", "MetricDefinitions": [
            {"Name": "validation:rmse", "Regex": RMSE.format("validation")}]},
        "HyperParameters": {"num_round": "5", "max_depth": "3", "objective": "reg:squarederror"},
        "InputDataConfig": [{"ChannelName": c, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/abalone/{c}/"}}} for c in ("train", "validation")],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def test_start_points_the_process_at_moto_and_stop_puts_everything_back(moto_server, ledger_home, monkeypatch):
    from botocore import handlers

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "the-users-key")
    monkeypatch.setenv("AWS_PROFILE", "work")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    before = list(handlers.BUILTIN_HANDLERS)

    aws = start_local_aws()
    assert current_local_aws() is aws and start_local_aws() is aws  # a second start is the same stand-in
    assert os.environ["AWS_ENDPOINT_URL"] == aws.endpoint and aws.endpoint.startswith("http://127.0.0.1:")
    assert os.environ["AWS_ACCESS_KEY_ID"] == ACCESS_KEY and "AWS_PROFILE" not in os.environ
    assert os.environ["SAGEMAKER_VALIDATE_ROLE"] == "false"
    assert "TelemetryOptOut: true" in Path(os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"]).read_text()
    assert boto3.client("sts").get_caller_identity()["Account"] == "123456789012"
    assert len(handlers.BUILTIN_HANDLERS) == len(before) + 3

    aws.stop()
    aws.stop()  # twice is once
    assert current_local_aws() is None
    assert os.environ["AWS_ACCESS_KEY_ID"] == "the-users-key" and os.environ["AWS_PROFILE"] == "work"
    for name in ("AWS_ENDPOINT_URL", "SAGEMAKER_VALIDATE_ROLE", "SAGEMAKER_USER_CONFIG_OVERRIDE"):
        assert name not in os.environ
    assert handlers.BUILTIN_HANDLERS == before
    assert not aws.workdir.exists()


def test_without_moto_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "moto.server", None)  # import fails as if moto were not installed
    with pytest.raises(LedgerError) as error:
        start_local_aws()
    assert "pip install 'sagemaker-ledger[local-aws]'" in str(error.value)


def test_the_builtin_image_is_readable_by_its_registry_id(stand_in):
    ecr = boto3.client("ecr")
    found = ecr.batch_get_image(registryId=XGBOOST_ACCOUNT, repositoryName="sagemaker-xgboost",
                                imageIds=[{"imageTag": "1.7-1"}])["images"]
    assert found and found[0]["imageId"]["imageDigest"].startswith("sha256:")


def test_a_training_job_runs_and_moto_describes_what_happened(stand_in):
    put_data()
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_training_job(**xgboost_request("stand-in-job"))

    job = sagemaker.describe_training_job(TrainingJobName="stand-in-job")
    assert job["TrainingJobStatus"] == "Completed"
    uri = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert uri == "s3://data/output/stand-in-job/output/model.tar.gz"
    body = boto3.client("s3").get_object(Bucket="data", Key=uri[len("s3://data/"):])["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert "xgboost-model" in archive.getnames()
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert set(metrics) == {"validation:rmse"} and metrics["validation:rmse"] > 0  # the run's, not moto's
    assert job["AlgorithmSpecification"]["MetricDefinitions"][0]["Name"] == "validation:rmse"
    assert job["BillableTimeInSeconds"] >= 1 and job["TrainingEndTime"] >= job["TrainingStartTime"]
    streams = boto3.client("logs").describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                                        logStreamNamePrefix="stand-in-job")["logStreams"]
    events = boto3.client("logs").get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                 logStreamName=streams[0]["logStreamName"])["events"]
    assert any("#011validation-rmse:" in e["message"] for e in events)
    assert stand_in.jobs["stand-in-job"]["status"] == "Completed"


def test_a_job_that_cannot_run_here_fails_saying_why(stand_in):
    put_data()
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_training_job(**xgboost_request(
        "custom-image", image="123456789012.dkr.ecr.us-east-1.amazonaws.com/my-trainer:v1"))
    job = sagemaker.describe_training_job(TrainingJobName="custom-image")
    assert job["TrainingJobStatus"] == "Failed"
    assert "local AWS stand-in cannot run this job" in job["FailureReason"] and "my-trainer" in job["FailureReason"]
    assert "ModelArtifacts" not in job


def test_a_recorded_job_settles_with_its_model_and_reproduces_on_the_sagemaker_backend(stand_in, tmp_path,
                                                                                      monkeypatch):
    """autolog records the job, the stand-in runs it, the ledger's settle pins the model; a reproduction sent to
    the stand-in by the sagemaker backend (inside already_captured) runs as well, and is IDENTICAL."""
    from ledger import reproduce

    monkeypatch.chdir(tmp_path)
    put_data()
    ledger.autolog(project="stand-in")
    sagemaker = boto3.client("sagemaker")
    sagemaker.create_training_job(**xgboost_request("recorded-job"))
    sagemaker.describe_training_job(TrainingJobName="recorded-job")  # what fit(wait=True) does: settles the run

    record = open_ledger().get("recorded-job")
    assert record.pins.image.source == "ecr" and record.pins.image.digest.startswith("sha256:")
    assert record.request["AlgorithmSpecification"]["TrainingImage"].endswith("@" + record.pins.image.digest)
    assert record.outcome.status == "Completed" and record.outcome.model_artifact.tree_sha256
    assert record.outcome.metrics["validation:rmse"] > 0

    boto3.client("s3").put_object(Bucket="data", Key="abalone/train/part-0.csv", Body=abalone_like(120, 900))
    result = reproduce(record.run_id, backend="sagemaker", yes=True, log=lambda line: None)
    assert result.verdict.result == "IDENTICAL", result.verdict
    assert stand_in.jobs[result.record.job_name]["status"] == "Completed"  # it ran, on the recorded versions
    assert result.record.outcome.model_artifact.tree_sha256 == record.outcome.model_artifact.tree_sha256
