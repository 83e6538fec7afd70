"""`ledger reproduce`: preflight, pinned relaunch and verdict, locally and against moto's SageMaker and S3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest

import ledger
from ledger import reproduce
from ledger.cli import main
from ledger.errors import PlanFailed
from ledger.record import ModelArtifact, Outcome
from ledger.run.verdict import build_verdict
from ledger.store.ledger import open_ledger
from tests.test_autolog import (
    DIGEST,
    aws_session_that_reads_aws_images,
    make_data_bucket,
    publish_builtin_image,
    tutorial_estimator,
    tutorial_inputs,
)

ENTRY_POINTS = Path(__file__).parent / "entry_points"


def cli(capsys, *args):
    capsys.readouterr()  # what the SDK printed before is not the command's output
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- pure verdicts -------------------------------------------------------------------------------------------------


def _outcome(tree=None, **metrics):
    return Outcome(status="Completed", metrics=metrics, model_artifact=ModelArtifact(tree_sha256=tree))


def test_verdicts():
    assert build_verdict(_outcome("t", rmse=1.0), _outcome("t", rmse=1.0), []).result == "IDENTICAL"
    assert build_verdict(_outcome("t", rmse=1.0), _outcome("t", rmse=9.0), []).result == "DIVERGED"  # same files
    assert build_verdict(_outcome("a", rmse=1.0), _outcome("b", rmse=1.0 + 1e-9), []).result == "EQUIVALENT"
    diverged = build_verdict(_outcome("a", rmse=1.0, mae=2.0), _outcome("b", rmse=1.1, mae=2.0), [])
    assert diverged.result == "DIVERGED"
    assert [d["what"] for d in diverged.differences] == ["model artifact", "metric rmse"]
    assert build_verdict(_outcome("a", rmse=1.0), _outcome("b", rmse=1.1), [], {"rmse": 0.2}).result == "EQUIVALENT"
    failed = Outcome(status="Failed", failure_reason="boom")
    assert build_verdict(_outcome("a"), failed, []).differences[0]["what"] == "status"


# --- local ---------------------------------------------------------------------------------------------------------


def test_local_drift_in_data_and_code_is_listed_and_the_pins_reproduce_identically(workspace, capsys):
    code, out, _ = cli(capsys, "run", "src/train.py", "--channel", "train=data", "--metric", "loss=loss: ([0-9.]+)",
                       "--job-name", "original")
    assert code == 0
    (workspace / "data" / "rows.csv").write_text("9,9\n9,9\n9,9\n")  # the data files are overwritten
    with open(workspace / "src" / "train.py", "a") as script:  # and the script is edited in the work tree
        script.write("print('edited')\n")

    code, out, _ = cli(capsys, "reproduce", "original", "--dry-run", "--json")
    plan = json.loads(out)["plan"]
    drifted = {c["pin"] for c in plan["checks"] if c["status"] == "drift"}
    assert {"data train", "code work tree"} <= drifted
    assert open_ledger().reproductions_of("original") == []  # a dry run launches nothing

    code, out, _ = cli(capsys, "reproduce", "original", "--json")
    result = json.loads(out)
    assert code == 0 and result["verdict"]["result"] == "IDENTICAL"
    assert result["job_name"] == "original-r1"
    reproduction = open_ledger().get(result["run_id"])
    assert reproduction.reproduction_of == open_ledger().resolve("original")
    assert reproduction.verdict.result == "IDENTICAL"
    assert open_ledger().runs(where="verdict = 'IDENTICAL'")["job_name"].tolist() == ["original-r1"]


def test_a_script_without_a_seed_diverges_naming_its_metric(workspace, capsys):
    shutil.copy(ENTRY_POINTS / "noisy.py", workspace / "src" / "noisy.py")
    assert cli(capsys, "run", "src/noisy.py", "--metric", "loss=final loss: ([0-9.]+)", "--job-name", "noisy")[0] == 0
    code, out, err = cli(capsys, "reproduce", "noisy", "--json")
    verdict = json.loads(out)["verdict"]
    assert code == 4 and verdict["result"] == "DIVERGED" and "DIVERGED" in err
    whats = [d["what"] for d in verdict["differences"]]
    assert whats == ["model artifact", "metric loss"]
    assert verdict["differences"][0]["files"] == ["model.bin"]


def test_same_metrics_different_bytes_is_equivalent(workspace, capsys, monkeypatch):
    shutil.copy(ENTRY_POINTS / "noisy.py", workspace / "src" / "noisy.py")
    monkeypatch.setenv("NOISE", "0")  # the metric is fixed; the model bytes are still random
    assert cli(capsys, "run", "src/noisy.py", "--metric", "loss=final loss: ([0-9.]+)", "--job-name", "calm")[0] == 0
    code, out, _ = cli(capsys, "reproduce", "calm", "--json")
    assert code == 0 and json.loads(out)["verdict"]["result"] == "EQUIVALENT"


def test_the_demo_runs_reproduce_identically(ledger_home, capsys):
    assert cli(capsys, "demo")[0] == 0
    frame = open_ledger().runs()
    for run_id in frame[frame["reproduction_of"].isna()]["run_id"]:
        result = reproduce(run_id, log=lambda line: None)
        assert result.verdict.result == "IDENTICAL", (run_id, result.verdict)


# --- SageMaker on moto --------------------------------------------------------------------------------------------


def _sagemaker_stand_in_writes_the_model(record):
    """moto never runs a job. Play SageMaker's part honestly: run the captured request with the recorded pins on
    this machine (what the container would do), put its model.tar.gz where SageMaker would, and let the ledger
    settle the job's outcome from DescribeTrainingJob as `ledger sync` does."""
    from ledger.backends.local import LocalBackend
    from ledger.run.sync import settle

    pins = {name: pin.model_dump(mode="json") for name, pin in record.pins.data.items()}
    request = json.loads(json.dumps(record.request))
    request["TrainingJobName"] = record.job_name + "-sm"
    result = LocalBackend().launch(request, pins=pins, log=lambda line: None)
    source = result.outcome.model_artifact.uri
    bucket, key = record.outcome.model_artifact.uri[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3")
    sbucket, skey = source[len("s3://"):].split("/", 1)
    s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": sbucket, "Key": skey})
    description = boto3.client("sagemaker").describe_training_job(TrainingJobName=record.job_name)
    # SageMaker reports the final value of each metric definition; moto reports none.
    description["FinalMetricDataList"] = [{"MetricName": k, "Value": v} for k, v in result.outcome.metrics.items()]
    return settle(open_ledger(), record.run_id, description)


def _abalone_rows(n: int, offset: int = 0) -> bytes:
    return "".join(f"{(i * 7) % 29},{(i % 13) / 13:.3f},{(i % 7) / 7:.3f},{(i % 5) / 5:.3f}\n"
                   for i in range(offset, offset + n)).encode()


def test_sagemaker_record_with_overwritten_objects_reproduces_pinned(sdk2, capsys):
    publish_builtin_image()
    s3 = boto3.client("s3")
    make_data_bucket()
    for channel in ("train", "validation"):
        for i in range(3):
            s3.put_object(Bucket="abalone-data", Key=f"abalone/{channel}/part-{i}.csv", Body=_abalone_rows(40, i * 40))
    ledger.autolog(project="abalone", boto_session=aws_session_that_reads_aws_images())
    tutorial_estimator(sdk2, num_round=5).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    ledger.autolog(disable=True)
    record = open_ledger().get(open_ledger().runs()["run_id"][0])
    record = _sagemaker_stand_in_writes_the_model(record)
    assert record.outcome.model_artifact.tree_sha256
    recorded = {o.key: o.version_id for o in record.pins.data["train"].objects}
    for i in range(3):  # someone overwrites the training data
        s3.put_object(Bucket="abalone-data", Key=f"abalone/train/part-{i}.csv", Body=_abalone_rows(40, 500))

    # On SageMaker: by digest, from a snapshot of exactly the recorded versions. The command's own credentials
    # cannot read the AWS-owned image account here (moto answers one account a call): that row is "not checked",
    # which stops the plan unless --allow-drift.
    code, out, err = cli(capsys, "reproduce", record.run_id, "--backend", "sagemaker", "--yes", "--json",
                         "--tolerance", "*=1")
    assert code == 1 and json.loads(out)["checks"][0]["status"] == "unchecked"
    code, out, err = cli(capsys, "reproduce", record.run_id, "--backend", "sagemaker", "--yes", "--json",
                         "--tolerance", "*=1", "--allow-drift")
    result = json.loads(out)
    relaunched = boto3.client("sagemaker").describe_training_job(TrainingJobName=result["job_name"])
    assert relaunched["AlgorithmSpecification"]["TrainingImage"].endswith("@" + DIGEST)
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in relaunched["InputDataConfig"]}
    assert channels["train"].startswith("s3://abalone-data/ledger-snapshots/")
    assert channels["validation"] == "s3://abalone-data/abalone/validation/"  # unchanged: read where it is
    prefix = channels["train"][len("s3://abalone-data/"):]
    for key, version in recorded.items():
        copied = s3.get_object(Bucket="abalone-data", Key=prefix + key.rsplit("/", 1)[1])["Body"].read()
        assert copied == s3.get_object(Bucket="abalone-data", Key=key, VersionId=version)["Body"].read()
    assert result["plan"]["checks"][0]["pin"] == "image"

    # On this machine: the recorded versions, the built-in algorithm, the same model.
    code, out, err = cli(capsys, "reproduce", record.run_id, "--backend", "local", "--json")
    assert code == 0, err
    assert json.loads(out)["verdict"]["result"] == "IDENTICAL"


def test_a_deleted_version_fails_the_plan_and_allow_drift_names_it(sdk2, capsys):
    make_data_bucket()
    ledger.autolog()
    tutorial_estimator(sdk2).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    ledger.autolog(disable=True)
    record = open_ledger().get(open_ledger().runs()["run_id"][0])
    gone = record.pins.data["train"].objects[1]
    boto3.client("s3").delete_object(Bucket="abalone-data", Key=gone.key, VersionId=gone.version_id)

    with pytest.raises(PlanFailed) as failure:
        reproduce(record.run_id, backend="local")
    assert gone.key in str(failure.value)
    code, out, err = cli(capsys, "reproduce", record.run_id, "--backend", "local", "--dry-run", "--json")
    missing = [c["pin"] for c in json.loads(out)["checks"] if c["status"] == "missing"]
    assert code == 1 and f"data train: {gone.key}" in missing and "--allow-drift" in err

    code, out, err = cli(capsys, "reproduce", record.run_id, "--backend", "local", "--allow-drift", "--json")
    result = json.loads(out)
    assert result["plan"]["allow_drift"] is True
    reproduction = open_ledger().get(result["run_id"])
    assert f"data train: {gone.key}" in reproduction.model_extra["allowed_drift"]
    explained = [e["pin"] for e in result["verdict"]["explained_by"]]
    assert f"data train: {gone.key}" in explained


def test_redacted_secrets_must_be_supplied(workspace, capsys, monkeypatch):
    assert cli(capsys, "run", "src/train.py", "--channel", "train=data", "--hp", "api_token=s3cr3t",
               "--job-name", "secretive")[0] == 0
    code, out, err = cli(capsys, "reproduce", "secretive")
    assert code == 1 and "secret HyperParameters.api_token" in err
    code, out, err = cli(capsys, "reproduce", "secretive", "--secret", "api_token=s3cr3t", "--json")
    assert code == 0 and json.loads(out)["verdict"]["result"] == "IDENTICAL"
    assert "s3cr3t" not in open_ledger().get("secretive-r1").to_json()


def test_a_sagemaker_relaunch_needs_confirmation(sdk2, capsys):
    make_data_bucket()
    ledger.autolog()
    tutorial_estimator(sdk2).fit(tutorial_inputs(sdk2), wait=True, logs=False)
    ledger.autolog(disable=True)
    run_id = open_ledger().runs()["run_id"][0]
    code, _, err = cli(capsys, "reproduce", run_id, "--backend", "sagemaker")
    assert code == 2 and "--yes" in err
    assert len(boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == 1
