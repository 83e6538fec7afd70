"""The preflight of `ledger reproduce` sees everything and never reads an error as "ok"; SDK 3.x code channels are
pinned (kept as ledger blobs), checked and restored. Against moto's S3, ECR and SageMaker, on real git repositories,
and on SQLite and PostgreSQL where the kept code is stored."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import boto3
import pytest

from ledger import reproduce
from ledger.capture.code import capture_code_channels, plan_unpinned_requirements
from ledger.errors import PlanFailed
from ledger.run.launch import launch_job
from ledger.store.ledger import open_ledger
from tests.test_autolog import (
    DIGEST,
    ROLE,
    XGBOOST_IMAGE,
    aws_session_that_reads_aws_images,
    make_data_bucket,
    publish_builtin_image,
)

CODE_BUCKET = "sagemaker-us-east-1-123456789012"  # the SDK's default bucket: versioning off, as usual
CODE = {"train.py": b"print('train')\n", "requirements.txt": b"xgboost-cpu==2.1.4\n"}
DRIVERS = {"sm_train.sh": b"#!/bin/sh\npython train.py\n", "sourcecode.json": b"{}"}


def channel(name: str, uri: str) -> dict:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}


def sdk2_request(job: str, channels: dict[str, str], submit_directory: str | None = None) -> dict:
    """A CreateTrainingJob request of the shape SDK 2.x sends (framework hyperparameters JSON-encoded)."""
    hyperparameters = {"num_round": "5", "max_depth": "3"}
    if submit_directory:
        hyperparameters.update(sagemaker_program=json.dumps("train.py"),
                               sagemaker_submit_directory=json.dumps(submit_directory))
    return {
        "TrainingJobName": job,
        "AlgorithmSpecification": {"TrainingImage": XGBOOST_IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": hyperparameters,
        "InputDataConfig": [channel(name, uri) for name, uri in channels.items()],
        "OutputDataConfig": {"S3OutputPath": "s3://abalone-data/output"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }


def upload_sdk3_code(job: str, code: dict[str, bytes] = CODE) -> None:
    """What SDK 3.x ModelTrainer uploads for SourceCode: two prefixes in the default bucket."""
    s3 = boto3.client("s3")
    for prefix, files in ((f"{job}/input/code/", code), (f"{job}/input/sm_drivers/", DRIVERS)):
        for name, data in files.items():
            s3.put_object(Bucket=CODE_BUCKET, Key=prefix + name, Body=data)


def sdk3_request(job: str) -> dict:
    """A CreateTrainingJob request of the shape SDK 3.x ModelTrainer sends for SourceCode."""
    request = sdk2_request(job, {"train": "s3://abalone-data/abalone/train/"})
    request["AlgorithmSpecification"].update(
        ContainerEntrypoint=["/bin/bash"],
        ContainerArguments=["-c", "chmod +x /opt/ml/input/data/sm_drivers/sm_train.sh && "
                                  "/opt/ml/input/data/sm_drivers/sm_train.sh"])
    request["InputDataConfig"] += [channel("code", f"s3://{CODE_BUCKET}/{job}/input/code"),
                                   channel("sm_drivers", f"s3://{CODE_BUCKET}/{job}/input/sm_drivers")]
    return request


def record_on_sagemaker(request: dict, workdir=None):
    """Capture, record and send the request to moto's SageMaker, as autolog does for the SDK."""
    session = aws_session_that_reads_aws_images()
    return launch_job(open_ledger(), request, backend="sagemaker", project="abalone", session=session,
                      workdir=workdir, log=lambda line: None), session


def rows(plan) -> dict[str, dict]:
    return {c.pin: c.__dict__ for c in plan.checks}


@pytest.fixture
def world(aws, tmp_path, monkeypatch):
    """The built-in XGBoost image in (moto's) ECR, a versioned data bucket, the SDK's unversioned default bucket,
    and a git repository with one pushed commit as the working directory."""
    publish_builtin_image()
    make_data_bucket()
    boto3.client("s3").create_bucket(Bucket=CODE_BUCKET)
    repo, origin = tmp_path / "project", tmp_path / "origin.git"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True, capture_output=True)
    for args in (["init", "-q", "-b", "main"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                                                 "--allow-empty", "-m", "first"],
                 ["remote", "add", "origin", str(origin)], ["push", "-q", "origin", "main"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    monkeypatch.chdir(repo)
    return repo


# --- 3. the preflight sees everything ------------------------------------------------------------------------------


def test_an_object_added_under_a_recorded_prefix_is_drift_named_by_key(world, ledger_home):
    record, session = record_on_sagemaker(sdk2_request("added", {"train": "s3://abalone-data/abalone/train/"}))
    boto3.client("s3").put_object(Bucket="abalone-data", Key="abalone/train/part-9.csv", Body=b"1,2,3,4\n")

    plan = reproduce(record.run_id, backend="local", dry_run=True, session=session).plan

    found = rows(plan)
    assert found["data train: abalone/train/part-9.csv"]["now"] == "added"
    assert found["data train: abalone/train/part-9.csv"]["status"] == "drift"
    assert (found["data train"]["now"], found["data train"]["status"]) == ("1 added", "drift")


def test_untouched_objects_of_an_unversioned_bucket_are_unchanged_and_an_overwrite_is_named(world, ledger_home):
    make_data_bucket("plain-data", versioned=False)
    record, session = record_on_sagemaker(sdk2_request("plain", {"train": "s3://plain-data/abalone/train/"}))
    assert all(o.version_id is None for o in record.pins.data["train"].objects)

    found = rows(reproduce(record.run_id, backend="local", dry_run=True, session=session).plan)
    assert (found["data train"]["now"], found["data train"]["status"]) == ("unchanged", "ok")

    boto3.client("s3").put_object(Bucket="plain-data", Key="abalone/train/part-1.csv", Body=b"9,9,9,9\n")
    with pytest.raises(PlanFailed) as failure:
        reproduce(record.run_id, backend="local", dry_run=True, session=session)
    found = rows(failure.value.plan)
    row = found["data train: abalone/train/part-1.csv"]
    assert (row["status"], row["now"]) == ("missing", "overwritten; the bucket keeps no versions")
    assert found["data train"]["status"] == "missing"


def test_a_failed_s3_ecr_or_git_call_is_not_checked_and_stops_the_plan(world, ledger_home, monkeypatch):
    record, session = record_on_sagemaker(sdk2_request("blind", {"train": "s3://abalone-data/abalone/train/"}),
                                          workdir=world)
    assert record.pins.code.commit and record.pins.image.digest == DIGEST
    found = rows(reproduce(record.run_id, backend="sagemaker", dry_run=True, session=session).plan)
    assert {found[p]["status"] for p in ("image", "data train", "code commit")} == {"ok"}

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there: every AWS call fails
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    shutil.move(world, world.parent / "moved-away")  # and git cannot open the recorded repository
    with pytest.raises(PlanFailed) as failure:
        reproduce(record.run_id, backend="sagemaker", dry_run=True, session=boto3.Session())
    found = rows(failure.value.plan)
    for pin in ("image", "data train", "code commit"):
        assert found[pin]["status"] == "unchecked", found[pin]
        assert found[pin]["now"].startswith("not checked: "), found[pin]
    assert "could not be checked" in failure.value.message

    allowed = reproduce(record.run_id, backend="sagemaker", dry_run=True, allow_drift=True, session=boto3.Session())
    assert allowed.plan.ok and len(allowed.plan.unchecked) == 3  # goes on, and still says what was not checked


def test_the_local_backend_cannot_run_a_container_entrypoint_job_and_nothing_is_launched(world, ledger_home):
    upload_sdk3_code("mt-job")
    record, session = record_on_sagemaker(sdk3_request("mt-job"))

    with pytest.raises(PlanFailed) as failure:
        reproduce(record.run_id, backend="local", allow_drift=True, session=session)  # --allow-drift cannot help
    backend_row = rows(failure.value.plan)["backend"]
    assert backend_row["status"] == "blocked" and "ContainerEntrypoint" in backend_row["now"]
    assert "--backend sagemaker" in failure.value.hint
    assert open_ledger().runs()["job_name"].tolist() == ["mt-job"]  # nothing recorded
    assert not (ledger_home / "jobs" / "mt-job-r1").exists()  # nothing run


# --- 8. SDK 3.x code is pinned, checked and re-read ----------------------------------------------------------------


def test_unpinned_requirements_are_named():
    text = "numpy\n# a comment\n--index-url https://example.com/simple\nscipy==1.14.1\npandas>=2  # loose\n\n"
    assert plan_unpinned_requirements(text) == ["numpy", "pandas>=2"]


def test_code_channels_name_unpinned_requirements_and_unkept_unversioned_code_as_gaps(world, monkeypatch):
    upload_sdk3_code("loose", {"train.py": b"print(1)\n", "requirements.txt": b"xgboost-cpu\nnumpy==2.1.0\n"})
    kept: dict[str, bytes] = {}
    pinned, gaps = capture_code_channels(sdk3_request("loose"), boto3.Session(), keep=kept)
    assert pinned["code"]["kept"] is True and set(kept) == {o["sha256"] for c in pinned.values()
                                                            for o in c["objects"]}
    assert [g.what for g in gaps] == ["code channel code: requirements.txt"]
    assert "xgboost-cpu" in gaps[0].why and "numpy" not in gaps[0].why

    monkeypatch.setattr("ledger.capture.code.MAX_KEPT_CODE_BYTES", 10)  # too large to keep, and no versions
    pinned, gaps = capture_code_channels(sdk3_request("loose"), boto3.Session(), keep={})
    whats = [g.what for g in gaps]
    assert f"code channel code (s3://{CODE_BUCKET}/loose/input/code)" in whats
    assert f"code channel sm_drivers (s3://{CODE_BUCKET}/loose/input/sm_drivers)" in whats
    assert pinned["code"]["kept"] is False


def _files_under(uri: str) -> dict[str, bytes]:
    bucket, prefix = uri[len("s3://"):].split("/", 1)
    s3 = boto3.client("s3")
    return {entry["Key"][len(prefix):].lstrip("/"): s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            for entry in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}


def test_overwritten_sdk3_code_is_restored_from_the_kept_copy_and_the_reproduction_records_it(world, db_url):
    upload_sdk3_code("mt-kept")
    record, session = record_on_sagemaker(sdk3_request("mt-kept"))
    channels = record.pins.code.code_channels
    assert channels["code"]["kept"] is True and not record.pins.gaps, record.pins.gaps
    for obj in channels["code"]["objects"]:  # the bytes are in the ledger's own store
        assert hashlib.sha256(open_ledger().get_blob(obj["sha256"])).hexdigest() == obj["sha256"]
    boto3.client("s3").put_object(Bucket=CODE_BUCKET, Key="mt-kept/input/code/train.py", Body=b"print('other')\n")

    found = rows(reproduce(record.run_id, backend="sagemaker", dry_run=True, session=session).plan)
    assert (found["code channel code: train.py"]["now"], found["code channel code: train.py"]["status"]) == (
        "changed", "drift")
    assert found["code channel code"]["action"] == "restore the recorded files to a snapshot"
    assert found["code channel sm_drivers"]["status"] == "ok"

    result = reproduce(record.run_id, backend="sagemaker", yes=True, session=session, log=lambda line: None)
    sent = boto3.client("sagemaker").describe_training_job(TrainingJobName=result.record.job_name)
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in sent["InputDataConfig"]}
    assert uris["code"].startswith(f"s3://{CODE_BUCKET}/ledger-snapshots/")
    assert _files_under(uris["code"]) == CODE  # exactly the recorded bytes
    assert uris["sm_drivers"] == channels["sm_drivers"]["uri"]  # unchanged: read where it is
    read = result.record.pins.code.code_channels  # what the reproduction itself read
    assert read["code"]["uri"] == uris["code"]
    assert read["code"]["tree_sha256"] == channels["code"]["tree_sha256"]


def test_a_reproduction_that_reads_changed_code_records_that_code(world, db_url, monkeypatch):
    monkeypatch.setattr("ledger.capture.code.MAX_KEPT_CODE_BYTES", 0)  # nothing kept: the code cannot be restored
    upload_sdk3_code("mt-lost")
    record, session = record_on_sagemaker(sdk3_request("mt-lost"))
    assert any(g.what.startswith("code channel code (") for g in record.pins.gaps)
    boto3.client("s3").put_object(Bucket=CODE_BUCKET, Key="mt-lost/input/code/train.py", Body=b"print('other')\n")

    with pytest.raises(PlanFailed) as failure:
        reproduce(record.run_id, backend="sagemaker", yes=True, session=session)
    row = rows(failure.value.plan)["code channel code"]
    assert row["status"] == "missing" and row["action"].startswith("cannot be restored")

    result = reproduce(record.run_id, backend="sagemaker", yes=True, allow_drift=True, session=session,
                       log=lambda line: None)
    read = result.record.pins.code.code_channels["code"]
    assert read["tree_sha256"] != record.pins.code.code_channels["code"]["tree_sha256"]
    assert {o["key"]: o["sha256"] for o in read["objects"]}["train.py"] == hashlib.sha256(
        b"print('other')\n").hexdigest()
    assert "code channel code" in result.record.model_extra["allowed_drift"]
    assert "code channel code" in [e["pin"] for e in result.verdict.explained_by]


def test_the_audit_shows_the_code_channels_and_says_every_reference_was_pinned_only_when_so(world, db_url):
    from ledger.audit import collect_report, render_html, render_markdown
    from ledger.run.recorder import capture_request, save_launch

    session = aws_session_that_reads_aws_images()
    upload_sdk3_code("mt-audit")
    kept = save_launch(open_ledger(), capture_request(sdk3_request("mt-audit"), session=session), announce=False)
    assert not kept.pins.gaps, kept.pins.gaps
    # A record made before code channels were kept: digests only, no versions, no copy, and no gap saying so.
    upload_sdk3_code("mt-older")
    older = capture_request(sdk3_request("mt-older"), session=session)
    for channel in older.record.pins.code.code_channels.values():
        channel.pop("objects", None), channel.pop("kept", None)
    older = save_launch(open_ledger(), older, announce=False)

    report = collect_report(open_ledger(), [kept.run_id, older.run_id])
    sections = {run["job_name"]: run for run in report["runs"]}
    assert sections["mt-audit"]["fully_pinned"] is True
    assert [c["how"] for c in sections["mt-audit"]["code_channels"]] == ["a copy kept in the ledger"] * 2
    assert sections["mt-older"]["fully_pinned"] is False
    assert sections["mt-older"]["unpinned"][0].startswith(f"code channel code (s3://{CODE_BUCKET}/mt-older/")
    assert report["summary"]["fully_pinned"] == 1

    markdown = render_markdown(report)
    parts = {part.split("\n", 1)[0].split(". ", 1)[-1]: part for part in markdown.split("\n### ")[1:]}
    kept_part, older_part = parts["mt-audit"], parts["mt-older"]
    assert "every reference this run used was pinned" in kept_part
    assert f"Code channel code: s3://{CODE_BUCKET}/mt-audit/input/code" in kept_part
    assert kept.pins.code.code_channels["code"]["tree_sha256"] in kept_part
    assert "every reference this run used was pinned" not in older_part
    assert "Not pinned, though no gap was recorded" in older_part
    html = render_html(report)
    assert html.count("every reference this run used was pinned") == 1
    assert "Code channel code" in html
