"""SDK 3.x ModelTrainer code (the `code` and `sm_drivers` channels in the unversioned default bucket) is kept,
checked and restored: the real `ModelTrainer.train()` against moto, then `reproduce` after train.py was overwritten.

Runs in the SDK 3.x environment only (.venv-sdk3); see conftest.py.
"""

from __future__ import annotations

import boto3

import ledger
from ledger import reproduce
from ledger.capture.content_store import tree_sha256
from tests.sdk3.test_model_trainer import (
    OWN_IMAGE,
    input_data,
    make_data_bucket,
    model_trainer,
    only_record,
    publish_image,
)


def files_under(uri: str) -> dict[str, bytes]:
    bucket, prefix = uri[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3")
    return {entry["Key"][len(prefix):].lstrip("/"): s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            for entry in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}


def test_overwritten_model_trainer_code_is_restored_on_relaunch_and_the_record_says_what_it_read(sdk3, notebook_dir):
    ledger.autolog(project="abalone")
    publish_image("abalone-train", "v1")
    make_data_bucket()
    model_trainer(OWN_IMAGE).train(input_data_config=input_data(), wait=True, logs=False)
    ledger.autolog(disable=True)
    record = only_record()
    code = record.pins.code.code_channels["code"]
    assert code["kept"] is True and record.pins.gaps == []
    recorded = files_under(code["uri"])
    bucket, prefix = code["uri"][len("s3://"):].split("/", 1)
    boto3.client("s3").put_object(Bucket=bucket, Key=f"{prefix}/train.py", Body=b"print('someone else')\n")

    dry = reproduce(record.run_id, backend="sagemaker", dry_run=True)
    rows = {c.pin: c for c in dry.plan.checks}
    assert rows["code channel code: train.py"].now == "changed"
    assert rows["code channel code"].action == "restore the recorded files to a snapshot"

    result = reproduce(record.run_id, backend="sagemaker", yes=True, log=lambda line: None)
    sent = boto3.client("sagemaker").describe_training_job(TrainingJobName=result.record.job_name)
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in sent["InputDataConfig"]}
    assert uris["code"] != code["uri"] and files_under(uris["code"]) == recorded
    read = result.record.pins.code.code_channels["code"]
    assert read["uri"] == uris["code"]
    assert read["tree_sha256"] == code["tree_sha256"] == tree_sha256(notebook_dir / "src")


def test_a_requirement_without_a_pinned_version_is_a_gap(sdk3, notebook_dir):
    (notebook_dir / "src" / "requirements.txt").write_text("xgboost-cpu\n")
    ledger.autolog(project="abalone")
    publish_image("abalone-train", "v1")
    make_data_bucket()
    model_trainer(OWN_IMAGE).train(input_data_config=input_data(), wait=True, logs=False)
    gaps = only_record().pins.gaps
    assert [g.what for g in gaps] == ["code channel code: requirements.txt"]
    assert "xgboost-cpu" in gaps[0].why and "==" in gaps[0].fix
