"""autolog() with the real SageMaker SDK 2.x and boto3, against a real moto server standing in for AWS.

Each test runs in a fresh git repository (the notebook's working directory) with a fresh LEDGER_HOME.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import boto3
import pytest

import ledger
from ledger.errors import CaptureRefused
from ledger.store.ledger import open_ledger
from tests.conftest import git

AWS_ACCOUNT = "683313688378"  # the AWS-owned account of the built-in XGBoost image in us-east-1
XGBOOST_IMAGE = f"{AWS_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
DIGEST = "sha256:" + "ab" * 32
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
ROWS = b"10,0.455,0.365,0.095\n7,0.35,0.265,0.09\n"


def as_account(account: str):
    """A botocore handler that makes moto treat a call as coming from `account` (moto's multi-account header)."""
    def add_header(request, **_):
        request.headers["x-moto-account-id"] = account
    return add_header


def aws_session_that_reads_aws_images() -> boto3.Session:
    """The user's session, as one whose ECR calls may read the AWS-owned image account (moto: one account per call)."""
    session = boto3.Session()
    session.events.register("before-send.ecr.*", as_account(AWS_ACCOUNT))
    return session


def publish_builtin_image(digest: str = DIGEST) -> None:
    ecr = boto3.client("ecr")
    ecr.meta.events.register("before-send.ecr.*", as_account(AWS_ACCOUNT))
    ecr.create_repository(repositoryName="sagemaker-xgboost")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"digest": "sha256:" + "1" * 64, "size": 1,
                           "mediaType": "application/vnd.docker.container.image.v1+json"}, "layers": []}
    ecr.put_image(repositoryName="sagemaker-xgboost", imageManifest=json.dumps(manifest), imageTag="1.7-1",
                  imageDigest=digest)


def make_data_bucket(bucket: str = "abalone-data", versioned: bool = True, objects: int = 3) -> dict[str, list]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for channel in ("train", "validation"):
        for i in range(objects):
            s3.put_object(Bucket=bucket, Key=f"abalone/{channel}/part-{i}.csv", Body=ROWS + f"{i},1,1,1\n".encode())
    return versions_of(bucket)


def versions_of(bucket: str) -> dict[str, str]:
    listing = boto3.client("s3").list_object_versions(Bucket=bucket)
    return {v["Key"]: v["VersionId"] for v in listing.get("Versions", []) if v["IsLatest"]}


def tutorial_estimator(sagemaker, session=None, image=XGBOOST_IMAGE, bucket="abalone-data", **hyperparameters):
    from sagemaker.estimator import Estimator

    session = session or sagemaker.Session(default_bucket=bucket)
    estimator = Estimator(
        image_uri=image, role=ROLE, instance_count=1, instance_type="ml.m5.xlarge",
        output_path=f"s3://{bucket}/output", sagemaker_session=session,
        hyperparameters={"num_round": 50, "objective": "reg:squarederror", "max_depth": 5, "eta": 0.2,
                         **hyperparameters},
    )
    return estimator


def tutorial_inputs(sagemaker, bucket="abalone-data"):
    from sagemaker.inputs import TrainingInput

    return {channel: TrainingInput(f"s3://{bucket}/abalone/{channel}/", content_type="csv")
            for channel in ("train", "validation")}


def only_record():
    frame = open_ledger().runs()
    assert len(frame) == 1, frame
    return open_ledger().get(frame["run_id"][0])


def sent_request(job_name: str) -> dict:
    return boto3.client("sagemaker").describe_training_job(TrainingJobName=job_name)


# --- the SageMaker tutorial, recorded ----------------------------------------------------------------------------


def test_tutorial_estimator_is_recorded_pinned_and_sent_by_digest(sdk2, notebook_dir, capsys):
    publish_builtin_image()
    versions = make_data_bucket()
    ledger.autolog(project="abalone", boto_session=aws_session_that_reads_aws_images())

    estimator = tutorial_estimator(sdk2)
    estimator.fit(tutorial_inputs(sdk2), wait=True, logs=False)

    record = only_record()
    assert record.project == "abalone" and record.backend == "sagemaker"
    assert record.pins.image.digest == DIGEST and record.pins.image.source == "ecr"
    pinned_image = XGBOOST_IMAGE.split(":1.7-1")[0] + "@" + DIGEST
    assert record.request["AlgorithmSpecification"]["TrainingImage"] == pinned_image
    assert record.original_request["AlgorithmSpecification"]["TrainingImage"] == XGBOOST_IMAGE
    assert sent_request(record.job_name)["AlgorithmSpecification"]["TrainingImage"] == pinned_image

    for channel in ("train", "validation"):
        pin = record.pins.data[channel]
        assert pin.pinned and pin.object_count == 3
        assert {o.key: o.version_id for o in pin.objects} == {
            k: v for k, v in versions.items() if k.startswith(f"abalone/{channel}/")}
    assert record.pins.code.commit == git(notebook_dir, "rev-parse", "HEAD").strip()
    assert record.pins.code.branch == "main" and record.pins.code.dirty is False
    assert record.pins.hyperparameters["max_depth"] == "5"
    hardware = record.pins.hardware
    assert (hardware.instance_type, hardware.instance_count, hardware.vcpu, hardware.memory_gib) == (
        "ml.m5.xlarge", 1, 4, 16)
    assert record.created_by.startswith("arn:aws:")
    assert record.outcome.status == "Completed"
    assert record.outcome.arn.endswith(f"training-job/{record.job_name}")
    assert record.outcome.model_artifact.uri.startswith("s3://abalone-data/output/")
    assert record.pins.gaps == []
    line = capsys.readouterr().err
    assert f"ledger: recorded {record.run_id}" in line and f"ledger reproduce {record.run_id}" in line


def test_framework_estimator_pins_its_source_archive(sdk2, notebook_dir):
    from sagemaker.xgboost import XGBoost

    make_data_bucket()
    source = notebook_dir / "src"
    source.mkdir()
    (source / "train.py").write_text("import argparse\nprint('training')\n")
    (source / "requirements.txt").write_text("xgboost-cpu\n")
    git(notebook_dir, "add", "-A")
    git(notebook_dir, "commit", "-q", "-m", "script")
    ledger.autolog()

    estimator = XGBoost(entry_point="train.py", source_dir=str(source), framework_version="1.7-1", role=ROLE,
                        instance_count=1, instance_type="ml.m5.large", output_path="s3://abalone-data/output",
                        sagemaker_session=sdk2.Session(default_bucket="abalone-data"),
                        hyperparameters={"num_round": 10})
    estimator.fit(tutorial_inputs(sdk2), wait=True, logs=False)

    record = only_record()
    archive = record.pins.code.source_archive
    submitted = json.loads(record.request["HyperParameters"]["sagemaker_submit_directory"])
    assert archive.uri == submitted and submitted.endswith("sourcedir.tar.gz")
    bucket, key = submitted[len("s3://"):].split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key, VersionId=archive.version_id)["Body"].read()
    assert archive.version_id and archive.sha256 == hashlib.sha256(body).hexdigest()
    assert record.pins.code.commit == git(notebook_dir, "rev-parse", "HEAD").strip()


def test_boto3_create_training_job_is_captured(aws, ledger_home, notebook_dir):
    make_data_bucket()
    ledger.autolog(project="raw")
    try:
        boto3.client("sagemaker").create_training_job(
            TrainingJobName="raw-boto3-job",
            AlgorithmSpecification={"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
            RoleArn=ROLE,
            HyperParameters={"num_round": "5", "db_password": "hunter2"},
            InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": "s3://abalone-data/abalone/train/"}}}],
            OutputDataConfig={"S3OutputPath": "s3://abalone-data/output"},
            ResourceConfig={"InstanceType": "ml.c5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
            Environment={"API_TOKEN": "t0ps3cret", "MODE": "fast"},
        )
    finally:
        ledger.autolog(disable=True)
    record = only_record()
    assert record.job_name == "raw-boto3-job" and record.project == "raw"
    assert record.pins.data["train"].object_count == 3
    assert record.pins.hardware.instance_count == 2 and record.pins.hardware.vcpu == 8
    assert record.outcome.status == "InProgress" and record.outcome.arn.endswith("raw-boto3-job")
    text = record.to_json()
    assert "hunter2" not in text and "t0ps3cret" not in text
    assert sorted(record.redacted_keys) == ["Environment.API_TOKEN", "HyperParameters.db_password"]
    # The image lookup failed (the AWS account is not readable here): a gap, and the job went out anyway.
    assert any(g.what.startswith("image") for g in record.pins.gaps)


def test_autolog_called_again_after_a_session_was_made_records_a_job_once(aws, ledger_home, notebook_dir,
                                                                           monkeypatch):
    """A notebook cell with autolog() run twice: the default session made in between holds the handler from
    botocore's built-ins and again from the second autolog(); the job is recorded once, its ARN once."""
    make_data_bucket()
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    ledger.autolog(project="twice")
    try:
        boto3.setup_default_session()  # made while autolog is on: it copies the built-in handlers
        ledger.autolog(project="twice")  # registers on boto3.DEFAULT_SESSION as well
        boto3.client("sagemaker").create_training_job(
            TrainingJobName="twice-job",
            AlgorithmSpecification={"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
            RoleArn=ROLE, HyperParameters={"num_round": "5"},
            InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": "s3://abalone-data/abalone/train/"}}}],
            OutputDataConfig={"S3OutputPath": "s3://abalone-data/output"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
        )
    finally:
        ledger.autolog(disable=True)
    book = ledger.open_ledger()
    record = only_record()
    assert record.job_name == "twice-job"
    kinds = [entry.kind for entry in book.entries(record.run_id)]
    assert kinds == ["run.launched", "run.finished"], kinds


# --- data that moves ---------------------------------------------------------------------------------------------


def test_overwritten_objects_keep_their_recorded_versions(sdk2):
    versions = make_data_bucket()
    ledger.autolog()
    tutorial_estimator(sdk2).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    record = only_record()
    s3 = boto3.client("s3")
    s3.put_object(Bucket="abalone-data", Key="abalone/train/part-0.csv", Body=b"overwritten\n")
    recorded = {o.key: o.version_id for o in record.pins.data["train"].objects}
    assert recorded["abalone/train/part-0.csv"] == versions["abalone/train/part-0.csv"]
    old = s3.get_object(Bucket="abalone-data", Key="abalone/train/part-0.csv",
                        VersionId=recorded["abalone/train/part-0.csv"])["Body"].read()
    assert old == ROWS + b"0,1,1,1\n"


def test_snapshot_mode_points_the_job_at_an_immutable_copy(sdk2):
    make_data_bucket()
    ledger.autolog(data_pin="snapshot")
    tutorial_estimator(sdk2).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    record = only_record()
    s3 = boto3.client("s3")
    s3.put_object(Bucket="abalone-data", Key="abalone/train/part-1.csv", Body=b"changed mid-launch\n")
    sent = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
            for c in sent_request(record.job_name)["InputDataConfig"]}
    for channel in ("train", "validation"):
        pin = record.pins.data[channel]
        assert sent[channel] == pin.snapshot_uri and pin.manifest_sha256 in pin.snapshot_uri
        bucket, prefix = pin.snapshot_uri[len("s3://"):].split("/", 1)
        copies = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        assert len(copies) == pin.object_count
        for obj in pin.objects:
            original = s3.get_object(Bucket="abalone-data", Key=obj.key, VersionId=obj.version_id)["Body"].read()
            copy_key = prefix + obj.key.rsplit("/", 1)[1]
            assert s3.get_object(Bucket=bucket, Key=copy_key)["Body"].read() == original


def test_a_dirty_work_tree_keeps_its_diff_and_lists_untracked_files(sdk2, notebook_dir):
    make_data_bucket()
    (notebook_dir / "notebook.py").write_text("print('train harder')\n")
    (notebook_dir / "scratch.py").write_text("x = 1\n")
    ledger.autolog()
    tutorial_estimator(sdk2).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    record = only_record()
    diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=notebook_dir, capture_output=True, check=True).stdout
    assert record.pins.code.dirty is True
    assert record.pins.code.diff_sha256 == hashlib.sha256(diff).hexdigest()
    assert open_ledger().get_blob(record.pins.code.diff_sha256) == diff
    assert record.pins.code.untracked == ["scratch.py"]


# --- faults: the job runs, the gap is recorded; strict mode refuses --------------------------------------------------


def _gap_whats(record) -> str:
    return " | ".join(f"{g.what}: {g.why}" for g in record.pins.gaps)


def test_faults_become_gaps_and_the_job_still_runs(sdk2, tmp_path, monkeypatch):
    make_data_bucket(bucket="unversioned", versioned=False)
    boto3.client("s3").create_bucket(Bucket="abalone-data")
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ledger.autolog()  # no session that can read the AWS image account: the ECR lookup fails
    from sagemaker.inputs import TrainingInput

    estimator = tutorial_estimator(sdk2)
    estimator.fit({"train": TrainingInput("s3://unversioned/abalone/train/", content_type="csv"),
                   "validation": TrainingInput("s3://no-such-bucket/abalone/validation/", content_type="csv")},
                  wait=True, logs=False)
    record = only_record()
    assert record.outcome.status == "Completed"  # the job ran
    gaps = _gap_whats(record)
    assert "image" in gaps and "RepositoryNotFound" in gaps
    assert "versioning" in gaps.lower()
    assert "no-such-bucket" in gaps
    assert "not inside a git repository" in gaps
    unversioned = record.pins.data["train"]
    assert unversioned.object_count == 3 and all(o.etag and o.version_id is None for o in unversioned.objects)


def test_an_unwritable_database_spools_the_record_and_sync_saves_it(sdk2, monkeypatch, capsys):
    make_data_bucket()
    monkeypatch.setenv("LEDGER_DB_URL", "postgresql://postgres@127.0.0.1:1/ledger")
    ledger.autolog()
    estimator = tutorial_estimator(sdk2)
    estimator.fit(tutorial_inputs(sdk2), wait=True, logs=False)
    assert "spooled" in capsys.readouterr().err
    assert sent_request(estimator.latest_training_job.name)["TrainingJobStatus"] == "Completed"  # the job ran

    monkeypatch.delenv("LEDGER_DB_URL")
    from ledger.run.sync import sync_runs

    report = sync_runs(open_ledger())
    record = only_record()
    assert report.imported == [record.run_id] and report.settled == [record.run_id]
    assert any(g.what == "ledger database" for g in record.pins.gaps)
    assert open_ledger().get(record.run_id).outcome.status == "Completed"
    assert sync_runs(open_ledger()).imported == []


def test_strict_mode_refuses_to_send_a_request_with_gaps(sdk2, tmp_path, monkeypatch):
    make_data_bucket(versioned=False)
    ledger.autolog(strict=True)
    with pytest.raises(CaptureRefused, match="strict mode refused .*versioning"):
        tutorial_estimator(sdk2).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    assert boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []
    assert open_ledger().runs().empty


# --- installing ------------------------------------------------------------------------------------------------------


def test_autolog_twice_records_once_and_disable_records_nothing(sdk2):
    make_data_bucket()
    ledger.autolog()
    ledger.autolog()
    session = sdk2.Session(default_bucket="abalone-data")
    tutorial_estimator(sdk2, session=session).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    assert len(open_ledger().runs()) == 1
    ledger.autolog(disable=True)
    tutorial_estimator(sdk2, session=session).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    assert len(open_ledger().runs()) == 1


def test_a_session_made_before_autolog_is_captured_when_passed(sdk2):
    make_data_bucket()
    session = sdk2.Session(default_bucket="abalone-data")  # its boto3 session and clients exist already
    ledger.autolog(boto_session=session)
    tutorial_estimator(sdk2, session=session).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    assert only_record().outcome.status == "Completed"


def test_sync_settles_a_job_launched_without_waiting(sdk2):
    make_data_bucket()
    ledger.autolog()
    tutorial_estimator(sdk2).fit(tutorial_inputs(sdk2), wait=False)
    assert only_record().outcome.status == "InProgress"
    from ledger.cli import main

    assert main(["sync"]) == 0
    assert only_record().outcome.status == "Completed"


def test_sync_settles_a_launch_whose_process_died_before_sending(aws, ledger_home, notebook_dir):
    from ledger.run.recorder import capture_request, save_launch
    from ledger.run.sync import sync_runs

    request = {"TrainingJobName": "never-sent", "RoleArn": ROLE,
               "AlgorithmSpecification": {"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
               "OutputDataConfig": {"S3OutputPath": "s3://x/out"},
               "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
               "StoppingCondition": {"MaxRuntimeInSeconds": 60}}
    record = save_launch(open_ledger(), capture_request(request))  # ... and the process dies here, before the request is sent
    report = sync_runs(open_ledger())
    assert report.settled == [record.run_id]
    outcome = open_ledger().get(record.run_id).outcome
    assert outcome.status == "Failed" and "never reached SageMaker" in outcome.failure_reason
