"""autolog() with the real SageMaker SDK 3.x `ModelTrainer.train()`, against a real moto server standing in for AWS.

Runs in the SDK 3.x environment only (.venv-sdk3, which tests/test_autolog_sdk3.py makes from
requirements-sdk3.lock and runs this directory in); see conftest.py. Each test runs in a fresh git repository with
a training script in src/ and a fresh LEDGER_HOME.
"""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

import ledger
from ledger.capture.content_store import build_tree_digest, tree_sha256
from ledger.store.ledger import open_ledger
from tests.sdk3.conftest import DEFAULT_BUCKET, ROLE, git

ACCOUNT = "123456789012"  # moto's default account: the user's own
AWS_ACCOUNT = "683313688378"  # the AWS-owned account of the built-in XGBoost image in us-east-1
OWN_IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/abalone-train:v1"
DIGEST = "sha256:" + "ab" * 32
ROWS = b"10,0.455,0.365,0.095\n7,0.35,0.265,0.09\n"


# --- moto set-up ---------------------------------------------------------------------------------------------------


def as_account(account: str):
    """A botocore handler that makes moto treat a call as coming from `account` (moto's multi-account header)."""

    def add_header(request, **_):
        request.headers["x-moto-account-id"] = account

    return add_header


def publish_image(repository: str, tag: str, account: str = ACCOUNT, digest: str = DIGEST) -> None:
    """An image in moto's ECR under `account`, whose tag points at `digest`."""
    ecr = boto3.client("ecr")
    ecr.meta.events.register("before-send.ecr.*", as_account(account))
    ecr.create_repository(repositoryName=repository)
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"digest": "sha256:" + "1" * 64, "size": 1,
                           "mediaType": "application/vnd.docker.container.image.v1+json"}, "layers": []}
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag=tag, imageDigest=digest)


def make_data_bucket(bucket: str = "abalone-data", objects: int = 3) -> dict[str, str]:
    """A versioned bucket with `objects` CSV parts a channel; returns {key: version id}."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for channel in ("train", "validation"):
        for i in range(objects):
            s3.put_object(Bucket=bucket, Key=f"abalone/{channel}/part-{i}.csv", Body=ROWS + f"{i},1,1,1\n".encode())
    listing = s3.list_object_versions(Bucket=bucket)
    return {v["Key"]: v["VersionId"] for v in listing.get("Versions", []) if v["IsLatest"]}


def s3_tree_digest(uri: str) -> str:
    """The tree digest of what lies under an S3 prefix, computed here independently of the ledger."""
    bucket, prefix = uri[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3")
    entries = {}
    for entry in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
        entries[entry["Key"][len(prefix):].lstrip("/")] = hashlib.sha256(body).hexdigest()
    return build_tree_digest(entries)


# --- the SDK 3.x user's code ---------------------------------------------------------------------------------------


def model_trainer(image: str, session=None, bucket: str = "abalone-data", base_job_name: str = "abalone-mt"):
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, OutputDataConfig, SourceCode

    return ModelTrainer(
        sagemaker_session=session,
        role=ROLE,
        training_image=image,
        base_job_name=base_job_name,  # 3.x adds a timestamp to the second: two jobs a second need two names
        source_code=SourceCode(source_dir="src", entry_script="train.py", requirements="requirements.txt"),
        compute=Compute(instance_type="ml.m5.xlarge", instance_count=1, volume_size_in_gb=30),
        output_data_config=OutputDataConfig(s3_output_path=f"s3://{bucket}/output"),
        hyperparameters={"num_round": 50, "objective": "reg:squarederror", "max_depth": 5},
    )


def input_data(bucket: str = "abalone-data"):
    from sagemaker.train.configs import InputData

    return [InputData(channel_name=channel, data_source=f"s3://{bucket}/abalone/{channel}/", content_type="text/csv")
            for channel in ("train", "validation")]


def only_record():
    frame = open_ledger().runs()
    assert len(frame) == 1, frame
    return open_ledger().get(frame["run_id"][0])


def sent_request(job_name: str) -> dict:
    return boto3.client("sagemaker").describe_training_job(TrainingJobName=job_name)


def assert_recorded_in_full(record, versions, notebook_dir, pinned_image, tagged_image):
    """What every ModelTrainer job's record holds: image by digest, data by version, code by content, hardware,
    and the settled outcome."""
    # image: pinned by digest, and the job was sent with the pinned reference
    assert record.pins.image.digest == DIGEST and record.pins.image.source == "ecr"
    assert record.request["AlgorithmSpecification"]["TrainingImage"] == pinned_image
    assert record.original_request["AlgorithmSpecification"]["TrainingImage"] == tagged_image
    assert sent_request(record.job_name)["AlgorithmSpecification"]["TrainingImage"] == pinned_image

    # data: each channel's objects by version id; the SDK's code channels are not data
    assert set(record.pins.data) == {"train", "validation"}
    for channel in ("train", "validation"):
        pin = record.pins.data[channel]
        assert pin.pinned and pin.object_count == 3 and pin.kind == "S3Prefix"
        assert {o.key: o.version_id for o in pin.objects} == {
            k: v for k, v in versions.items() if k.startswith(f"abalone/{channel}/")}

    # code: the commit, and the two channels 3.x uploaded (into the unversioned default bucket) by content digest
    assert record.pins.code.commit == git(notebook_dir, "rev-parse", "HEAD").strip()
    assert record.pins.code.branch == "main" and record.pins.code.dirty is False
    channels = record.pins.code.code_channels
    assert set(channels) == {"code", "sm_drivers"}
    sent_channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                     for c in record.request["InputDataConfig"]}
    for name in ("code", "sm_drivers"):
        assert channels[name]["uri"] == sent_channels[name]
        assert channels[name]["uri"].startswith(f"s3://{DEFAULT_BUCKET}/")
        assert channels[name]["object_count"] >= 1
        assert channels[name]["tree_sha256"] == s3_tree_digest(channels[name]["uri"])
    assert channels["code"]["tree_sha256"] == tree_sha256(notebook_dir / "src")  # exactly the user's source dir

    # hyperparameters as sent, hardware from the catalogue
    assert record.pins.hyperparameters["max_depth"] == "5"
    hardware = record.pins.hardware
    assert (hardware.instance_type, hardware.instance_count, hardware.volume_gb, hardware.vcpu,
            hardware.memory_gib) == ("ml.m5.xlarge", 1, 30, 4, 16)
    assert record.created_by.startswith("arn:aws:")

    # outcome: settled by the SDK's own wait (its DescribeTrainingJob polls)
    assert record.outcome.status == "Completed"
    assert record.outcome.arn.endswith(f"training-job/{record.job_name}")
    assert record.outcome.model_artifact.uri.startswith("s3://abalone-data/output/")
    assert record.pins.gaps == [], record.pins.gaps


# --- the tests -------------------------------------------------------------------------------------------------------


def test_model_trainer_is_recorded_when_autolog_runs_first(sdk3, notebook_dir, capsys):
    """The notebook's first line is autolog(); the user passes no session (3.x makes and caches its own clients)."""
    ledger.autolog(project="abalone")
    publish_image("abalone-train", "v1")  # the user's own image, in the user's account
    versions = make_data_bucket()

    model_trainer(OWN_IMAGE).train(input_data_config=input_data(), wait=True, logs=False)

    record = only_record()
    assert record.project == "abalone" and record.backend == "sagemaker"
    assert record.job_name.startswith("abalone-mt")
    pinned = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/abalone-train@{DIGEST}"
    assert_recorded_in_full(record, versions, notebook_dir, pinned, OWN_IMAGE)
    line = capsys.readouterr().err
    assert f"ledger: recorded {record.run_id}" in line and f"ledger reproduce {record.run_id}" in line


def users_session():
    """A SageMaker 3.x Session the user made; its boto3 session's ECR calls may read the AWS-owned image account
    (moto answers one account a call: the header stands for cross-account ECR read access)."""
    from sagemaker.core.helper.session_helper import Session

    boto_session = boto3.Session()
    boto_session.events.register("before-send.ecr.*", as_account(AWS_ACCOUNT))
    return Session(boto_session=boto_session, default_bucket=DEFAULT_BUCKET)


def builtin_xgboost_image() -> str:
    from sagemaker.core import image_uris

    image = image_uris.retrieve("xgboost", "us-east-1", "1.7-1")
    assert image == f"{AWS_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    return image


def test_a_session_made_before_autolog_is_captured_when_passed(sdk3, notebook_dir):
    session = users_session()  # made before autolog(): its boto3 session and clients exist already
    image = builtin_xgboost_image()
    publish_image("sagemaker-xgboost", "1.7-1", account=AWS_ACCOUNT)
    versions = make_data_bucket()
    ledger.autolog(boto_session=session)

    model_trainer(image, session=session).train(input_data_config=input_data(), wait=True, logs=False)

    record = only_record()
    assert record.project == "origin"  # no project given: named after the git remote (.../origin.git)
    pinned = f"{AWS_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost@{DIGEST}"
    assert_recorded_in_full(record, versions, notebook_dir, pinned, image)


def test_a_session_that_trained_before_autolog_is_captured_from_then_on(sdk3, notebook_dir):
    """3.x sends through a client it caches per boto3 session: one made by a train() before autolog() existed
    holds no handlers, so autolog must find it (hooks._sdk3_cached_clients)."""
    session = users_session()
    image = builtin_xgboost_image()
    publish_image("sagemaker-xgboost", "1.7-1", account=AWS_ACCOUNT)
    versions = make_data_bucket()
    before = model_trainer(image, session=session, base_job_name="before-autolog")
    before.train(input_data_config=input_data(), wait=True, logs=False)  # not recorded: autolog is not on yet
    assert open_ledger().runs().empty

    ledger.autolog(boto_session=session)
    after = model_trainer(image, session=session, base_job_name="after-autolog")
    after.train(input_data_config=input_data(), wait=True, logs=False)

    record = only_record()
    assert record.job_name == after._latest_training_job.training_job_name
    assert record.job_name.startswith("after-autolog")
    pinned = f"{AWS_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost@{DIGEST}"
    assert_recorded_in_full(record, versions, notebook_dir, pinned, image)


def test_disable_stops_capture(sdk3, notebook_dir):
    publish_image("abalone-train", "v1")
    make_data_bucket()
    ledger.autolog()
    ledger.autolog()  # twice installs nothing twice
    model_trainer(OWN_IMAGE, base_job_name="on").train(input_data_config=input_data(), wait=True, logs=False)
    assert len(open_ledger().runs()) == 1
    ledger.autolog(disable=True)
    model_trainer(OWN_IMAGE, base_job_name="off").train(input_data_config=input_data(), wait=True, logs=False)
    assert len(open_ledger().runs()) == 1
    assert len(boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == 2


@pytest.fixture(autouse=True)
def _quiet_moto_server_logs(caplog):
    """moto's server logs every request at INFO; keep failures readable."""
    import logging

    caplog.set_level(logging.WARNING, logger="werkzeug")
