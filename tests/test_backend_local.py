"""The local backend runs a CreateTrainingJob request on this machine, following the SageMaker training contract.

Real processes, real files, and moto's real HTTP server as S3 (the `aws` fixture); nothing of the backend is mocked.
"""

import io
import json
import re
import tarfile
import time
from importlib import resources
from pathlib import Path

import pytest

from ledger.backends import get_backend
from ledger.backends.algorithms import builtin_algorithm
from ledger.backends.local.backend import LocalBackend, find_unsatisfied_requirements
from ledger.backends.local.contract import (
    MetricParser,
    build_local_outcome,
    build_user_args,
    cloudwatch_form,
    plan_local_job,
    s3_relative_path,
)
from ledger.capture.content_store import pack_tar_gz, pin_file_channel, tree_sha256
from ledger.errors import LedgerError, NotFound, UsageError
from ledger.record import DataChannelPin, Outcome

ENTRY_POINTS = Path(__file__).parent / "entry_points"
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
# The metric definition of the SageMaker XGBoost tutorials.
VALIDATION_RMSE = r".*\[[0-9]+\].*#011validation-rmse:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"


def file_channel(name: str, uri: str, content_type: str | None = None) -> dict:
    channel = {"ChannelName": name,
               "DataSource": {"S3DataSource": {"S3Uri": uri, "S3DataType": "S3Prefix",
                                               "S3DataDistributionType": "FullyReplicated"}}}
    if content_type:
        channel["ContentType"] = content_type
    return channel


def make_request(name: str, *, program: str | None = None, source: str | None = None, hps: dict | None = None,
                 channels: list | None = None, metrics: dict | None = None, max_runtime: int = 60,
                 output: str | None = None, image: str = "python:3.11", environment: dict | None = None) -> dict:
    """A request shaped as SDK 2.x sends it: sagemaker_* hyperparameters JSON-quoted."""
    hyperparameters = dict(hps or {})
    if program:
        hyperparameters["sagemaker_program"] = json.dumps(program)
        hyperparameters["sagemaker_submit_directory"] = json.dumps(source or ENTRY_POINTS.as_uri())
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": image, "TrainingInputMode": "File",
            "MetricDefinitions": [{"Name": k, "Regex": v} for k, v in (metrics or {}).items()],
        },
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "HyperParameters": hyperparameters,
        "InputDataConfig": channels or [],
        "OutputDataConfig": {"S3OutputPath": output or "file:///unused"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
        "Environment": environment or {},
    }
    return request


@pytest.fixture
def backend(ledger_home):
    return LocalBackend(stop_grace_seconds=2)


@pytest.fixture
def lines():
    """A log sink that keeps what it is given."""
    return []


def members(archive: Path | bytes) -> dict[str, bytes]:
    fileobj = io.BytesIO(archive) if isinstance(archive, bytes) else open(archive, "rb")
    with fileobj, tarfile.open(fileobj=fileobj) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def local(uri: str) -> Path:
    assert uri.startswith("file://")
    return Path(uri[len("file://"):])


# --- the training contract --------------------------------------------------------------------------------------


def test_a_script_sees_every_variable_and_file_of_the_training_contract(backend, ledger_home, tmp_path, lines):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.csv").write_text("1,2\n")
    (tmp_path / "test.csv").write_text("3,4\n")
    hps = {"epochs": "3", "learning-rate": "0.05", "optimizer": '"adam"', "b": "1", "layers": "[64, 32]",
           "sagemaker_container_log_level": "20", "sagemaker_region": '"us-east-1"'}
    request = make_request("contract-1", program="check_contract.py", hps=hps,
                           channels=[file_channel("train", (tmp_path / "train").as_uri(), "text/csv"),
                                     file_channel("test", str(tmp_path / "test.csv"))],
                           output=(tmp_path / "out").as_uri())
    request["Environment"]["CONTRACT_EXPECTED"] = json.dumps({
        "job_name": "contract-1", "instance_type": "ml.m5.large", "hyperparameters": request["HyperParameters"],
        "channels": {"train": ["a.csv"], "test": ["test.csv"]}, "content_types": {"train": "text/csv"},
        "submit_dir": ENTRY_POINTS.as_uri()})

    result = backend.launch(request, log=lines.append)

    assert result.outcome.status == "Completed", result.outcome.failure_reason
    assert "contract: all checks passed" in lines
    assert result.job_dir == ledger_home / "jobs" / "contract-1"
    assert result.log_path.read_text().splitlines()[-1] == "contract: all checks passed"
    model = result.outcome.model_artifact
    assert model.uri == (tmp_path / "out" / "contract-1" / "output" / "model.tar.gz").as_uri()
    assert members(local(model.uri)) == {"model.txt": b"a model\n"}
    assert model.tree_sha256 == tree_sha256(local(model.uri)) and model.version_id is None
    assert members(local(result.output_artifact["uri"])) == {"report.txt": b"contract checked\n"}
    assert set(result.data_pins) == {"train", "test"}
    for pin in result.data_pins.values():
        DataChannelPin.model_validate(pin)
    assert result.source_archive["uri"] == ENTRY_POINTS.as_uri()
    Outcome.model_validate(result.outcome.model_dump())
    assert result.outcome.started_at.endswith("Z") and result.outcome.billable_seconds >= 1


def test_a_failing_script_ends_failed_with_its_failure_file(backend, tmp_path, lines):
    result = backend.launch(make_request("fails-1", program="fail.py", output=(tmp_path / "out").as_uri()),
                            log=lines.append)
    assert result.outcome.status == "Failed"
    assert result.outcome.failure_reason == "ValueError: the training data has no rows"
    assert result.outcome.model_artifact is None  # SageMaker keeps no model of a failed job
    assert "loading data" in lines


def test_a_crash_without_failure_file_ends_failed_with_the_log_tail(backend, tmp_path):
    result = backend.launch(make_request("crash-1", program="crash.py", output=(tmp_path / "out").as_uri()),
                            log=lambda line: None)
    assert result.outcome.status == "Failed"
    assert "exited with code 1" in result.outcome.failure_reason
    assert "RuntimeError: boom: the optimizer diverged" in result.outcome.failure_reason


def test_a_job_past_max_runtime_is_stopped_and_says_so(backend, tmp_path):
    began = time.monotonic()
    result = backend.launch(make_request("sleeps-1", program="sleep.py", max_runtime=2,
                                         output=(tmp_path / "out").as_uri()), log=lambda line: None)
    assert time.monotonic() - began < 10
    assert result.outcome.status == "Stopped"
    assert result.outcome.secondary_status == "MaxRuntimeExceeded"
    assert "MaxRuntimeInSeconds=2" in result.outcome.failure_reason
    assert "woke up" not in result.log_path.read_text()
    assert result.outcome.model_artifact is not None  # what the job saved before it was stopped is kept


# --- metrics ----------------------------------------------------------------------------------------------------


def test_metric_series_are_what_the_regexes_find_in_the_log(backend, tmp_path):
    definitions = {
        "validation:loss": r"#011validation-loss:([0-9.]+)",
        "train:loss": r"\[\d+\]#011train-loss:(\S+?)#011",
        "accuracy": r"accuracy=(\S+)",
        "lr": r"lr=([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)",
        "never": r"this never appears: (\d+)",
    }
    result = backend.launch(make_request("metrics-1", program="metrics.py", hps={"epochs": "4"},
                                         metrics=definitions, output=(tmp_path / "out").as_uri()),
                            log=lambda line: None)
    assert result.outcome.status == "Completed"

    expected = []
    steps: dict[str, int] = {}
    for line in result.log_path.read_text().splitlines():
        for name, regex in definitions.items():
            match = re.search(regex, line)
            if not match:
                continue
            try:
                value = float(match.group(1))
            except ValueError:
                continue
            expected.append((name, steps.setdefault(name, 0), value))
            steps[name] += 1
    assert [(p["name"], p["step"], p["value"]) for p in result.series] == expected
    assert len(expected) == 4 * 4  # four metrics on each of four epochs; 'accuracy=not-a-number' dropped
    assert result.outcome.metrics == {"validation:loss": 0.275, "train:loss": 0.25, "accuracy": 0.65,
                                      "lr": 2.5e-4}
    assert all(p["timestamp"].endswith("Z") for p in result.series)


def test_metric_parser_and_cloudwatch_form_are_pure():
    assert cloudwatch_form("[3]\ttrain-rmse:1.5\r") == "[3]#011train-rmse:1.5#015"
    parser = MetricParser([("rmse", re.compile(VALIDATION_RMSE)), ("whole", re.compile(r"\d+\.\d+"))])
    parser.feed(cloudwatch_form("[0]\ttrain-rmse:2.0\tvalidation-rmse:2.5e-1"), "t0")
    parser.feed("validation-rmse:9.0 without a round", "t1")
    assert parser.series == [
        {"name": "rmse", "step": 0, "value": 0.25, "timestamp": "t0"},
        {"name": "whole", "step": 0, "value": 2.0, "timestamp": "t0"},
        {"name": "whole", "step": 1, "value": 9.0, "timestamp": "t1"},
    ]
    assert parser.final() == {"rmse": 0.25, "whole": 9.0}


# --- S3 --------------------------------------------------------------------------------------------------------


def versioned_bucket(name: str):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


def test_s3_channels_and_code_are_read_at_their_recorded_versions(aws, backend, tmp_path):
    s3 = versioned_bucket("data")
    s3.put_object(Bucket="data", Key="abalone/train/a.csv", Body=b"old a\n")
    s3.put_object(Bucket="data", Key="abalone/train/b.csv", Body=b"old b\n")
    listing = s3.list_object_versions(Bucket="data", Prefix="abalone/train/")["Versions"]
    pin = {"uri": "s3://data/abalone/train/", "kind": "S3Prefix", "pinned": True,
           "objects": [{"key": v["Key"], "version_id": v["VersionId"], "etag": v["ETag"], "size": v["Size"]}
                       for v in listing if v["IsLatest"]]}
    code = tmp_path / "code"
    code.mkdir()
    (code / "read_channel.py").write_text((ENTRY_POINTS / "read_channel.py").read_text())
    sha256 = pack_tar_gz(code, tmp_path / "sourcedir.tar.gz")
    put = s3.put_object(Bucket="data", Key="job/source/sourcedir.tar.gz", Body=(tmp_path / "sourcedir.tar.gz")
                        .read_bytes())
    source_archive = {"uri": "s3://data/job/source/sourcedir.tar.gz", "version_id": put["VersionId"],
                      "sha256": sha256}

    # Everything moves on after the pins were taken: new bytes, a new object, new code.
    s3.put_object(Bucket="data", Key="abalone/train/a.csv", Body=b"NEW a\n")
    s3.put_object(Bucket="data", Key="abalone/train/c.csv", Body=b"NEW c\n")
    (code / "read_channel.py").write_text("raise SystemExit('the new code ran')\n")
    pack_tar_gz(code, tmp_path / "new.tar.gz")
    s3.put_object(Bucket="data", Key="job/source/sourcedir.tar.gz", Body=(tmp_path / "new.tar.gz").read_bytes())

    request = make_request("s3-pinned-1", program="read_channel.py", source=source_archive["uri"],
                           channels=[file_channel("train", "s3://data/abalone/train/")], output="s3://data/models")
    result = backend.launch(request, pins={"train": pin}, source_archive=source_archive, log=lambda line: None)

    assert result.outcome.status == "Completed", result.outcome.failure_reason
    model = result.outcome.model_artifact
    assert model.uri == "s3://data/models/s3-pinned-1/output/model.tar.gz" and model.version_id
    body = s3.get_object(Bucket="data", Key="models/s3-pinned-1/output/model.tar.gz",
                         VersionId=model.version_id)["Body"].read()
    assert members(body) == {"a.csv": b"old a\n", "b.csv": b"old b\n"}
    assert [(o["key"], o["version_id"]) for o in result.data_pins["train"]["objects"]] == \
        [(o["key"], o["version_id"]) for o in sorted(pin["objects"], key=lambda o: o["key"])]
    assert result.source_archive["version_id"] == source_archive["version_id"]

    # Without pins the job reads what is there now, and reports the versions it read.
    unpinned = backend.launch(make_request("s3-current-1", program="read_channel.py",
                                           channels=[file_channel("train", "s3://data/abalone/train/")],
                                           output=(tmp_path / "out").as_uri()), log=lambda line: None)
    assert members(local(unpinned.outcome.model_artifact.uri)) == {"a.csv": b"NEW a\n", "b.csv": b"old b\n",
                                                                    "c.csv": b"NEW c\n"}
    assert unpinned.data_pins["train"]["pinned"] is True
    assert all(o["version_id"] for o in unpinned.data_pins["train"]["objects"])


def test_a_missing_s3_version_is_a_one_line_not_found(aws, backend):
    s3 = versioned_bucket("gone")
    s3.put_object(Bucket="gone", Key="x.csv", Body=b"1\n")
    pin = {"uri": "s3://gone/x.csv", "objects": [{"key": "x.csv", "version_id": "no-such-version"}]}
    with pytest.raises(LedgerError) as info:
        backend.launch(make_request("s3-missing-1", program="read_channel.py",
                                    channels=[file_channel("train", "s3://gone/x.csv")]),
                       pins={"train": pin}, log=lambda line: None)
    assert "\n" not in str(info.value) and "x.csv" in str(info.value)


def test_an_upload_to_a_missing_bucket_fails_the_job(aws, backend):
    result = backend.launch(make_request("upload-1", program="read_channel.py", output="s3://no-such-bucket/out",
                                         channels=[file_channel("train", str(ENTRY_POINTS / "fail.py"))]),
                            log=lambda line: None)
    assert result.outcome.status == "Failed"
    assert result.outcome.failure_reason.startswith("ClientError: uploading the artifacts failed")


def test_s3_keys_land_where_the_sdk_local_mode_puts_them():
    assert s3_relative_path("abalone/train/", "abalone/train/a.csv") == "a.csv"
    assert s3_relative_path("abalone/train", "abalone/train/sub/a.csv") == "sub/a.csv"
    assert s3_relative_path("abalone/train.csv", "abalone/train.csv") == "train.csv"


# --- local file pins --------------------------------------------------------------------------------------------


def test_a_pinned_file_channel_is_restored_after_the_files_changed(backend, ledger_home, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "rows.csv").write_text("pinned rows\n")
    pin = pin_file_channel((tmp_path / "train").as_uri())
    (tmp_path / "train" / "rows.csv").write_text("edited later\n")

    result = backend.launch(make_request("file-pinned-1", program="read_channel.py",
                                         channels=[file_channel("train", (tmp_path / "train").as_uri())],
                                         output=(tmp_path / "out").as_uri()),
                            pins={"train": pin}, log=lambda line: None)
    assert members(local(result.outcome.model_artifact.uri)) == {"rows.csv": b"pinned rows\n"}
    assert result.data_pins["train"] == pin

    by_snapshot = backend.launch(make_request("file-pinned-2", program="read_channel.py",
                                              channels=[file_channel("train", pin["snapshot_uri"])],
                                              output=(tmp_path / "out").as_uri()), log=lambda line: None)
    assert members(local(by_snapshot.outcome.model_artifact.uri)) == {"rows.csv": b"pinned rows\n"}


# --- the built-in XGBoost algorithm -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def abalone(tmp_path_factory):
    """500 rows of abalone, label (rings) first, Sex as a number, no header: 400 to train, 100 to validate."""
    sex = {"M": "0", "F": "1", "I": "2"}
    rows = []
    for line in (resources.files("ledger") / "data" / "abalone.data").read_text().splitlines()[:500]:
        fields = line.split(",")
        rows.append(",".join([fields[-1], sex[fields[0]], *fields[1:-1]]))
    root = tmp_path_factory.mktemp("abalone")
    for name, part in (("train", rows[:400]), ("validation", rows[400:])):
        (root / name).mkdir()
        (root / name / f"{name}.csv").write_text("\n".join(part) + "\n")
    return root


def xgboost_request(name: str, abalone: Path, output: Path, image: str = XGBOOST_IMAGE) -> dict:
    return make_request(
        name, image=image, output=output.as_uri(),
        hps={"num_round": "15", "max_depth": "4", "eta": "0.2", "subsample": "0.8", "min_child_weight": "2",
             "gamma": "0.1", "colsample_bytree": "0.9", "objective": "reg:squarederror", "eval_metric": "rmse"},
        channels=[file_channel(c, (abalone / c).as_uri(), "text/csv") for c in ("train", "validation")],
        metrics={"validation:rmse": VALIDATION_RMSE, "train:rmse": VALIDATION_RMSE.replace("validation", "train")})


def test_the_builtin_xgboost_algorithm_trains_deterministically(backend, abalone, tmp_path):
    first = backend.launch(xgboost_request("xgb-1", abalone, tmp_path / "out"), log=lambda line: None)
    assert first.outcome.status == "Completed", first.outcome.failure_reason
    log = first.log_path.read_text()
    assert "[0]#011train-rmse:" in log and "#011validation-rmse:" in log
    assert [p["step"] for p in first.series if p["name"] == "validation:rmse"] == list(range(15))
    assert 0 < first.outcome.metrics["validation:rmse"] < 10
    assert list(members(local(first.outcome.model_artifact.uri))) == ["xgboost-model"]

    second = backend.launch(xgboost_request("xgb-2", abalone, tmp_path / "out",
                                            image=XGBOOST_IMAGE.split(":")[0] + "@sha256:" + "a" * 64),
                            log=lambda line: None)
    assert second.outcome.model_artifact.tree_sha256 == first.outcome.model_artifact.tree_sha256
    assert second.outcome.model_artifact.sha256 == first.outcome.model_artifact.sha256
    assert second.outcome.metrics == first.outcome.metrics


def test_the_builtin_algorithm_reports_a_bad_hyperparameter_as_client_error(backend, abalone, tmp_path):
    request = xgboost_request("xgb-bad-1", abalone, tmp_path / "out")
    del request["HyperParameters"]["num_round"]
    result = backend.launch(request, log=lambda line: None)
    assert result.outcome.status == "Failed"
    assert result.outcome.failure_reason == "ClientError: Missing required hyperparameter: num_round"


def test_the_builtin_xgboost_runs_on_an_xgboost_image_that_has_no_profile(backend, abalone, tmp_path):
    """The old algorithm repository (xgboost:1) has no image profile: the job runs in the recorded package set, and
    the stand-in still finds the container surface it reads channels with."""
    image = "811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1"
    result = backend.launch(xgboost_request("xgb-no-profile", abalone, tmp_path / "out", image=image),
                            log=lambda line: None)
    assert result.outcome.status == "Completed", result.outcome.failure_reason
    assert 0 < result.outcome.metrics["validation:rmse"] < 10


def test_a_half_made_environment_of_the_images_python_does_not_choose_that_python(backend, abalone, tmp_path,
                                                                                      monkeypatch):
    """An environment a killed build left without its marker is not one that is cached: where the image's Python
    is not on this machine either, the plan takes the nearest Python instead of one it cannot build with."""
    from ledger.backends.local import backend as backend_module

    monkeypatch.setenv("LEDGER_ENV_CACHE", str(tmp_path / "environments"))
    request = xgboost_request("xgb-half-made", abalone, tmp_path / "out")
    real = backend_module.find_python
    monkeypatch.setattr(backend_module, "find_python", lambda minor: real(minor) or f"python{minor}")
    _, exact = backend.plan(request)  # planning builds nothing: a Python said to be here is enough to choose it
    assert exact.python_exact  # the 1.7-1 image's Python (3.9)
    (tmp_path / "environments" / exact.cache_key).mkdir(parents=True)  # a build killed before its marker
    monkeypatch.setattr(backend_module, "find_python",
                        lambda minor: None if minor == exact.python_minor else real(minor))
    _, chosen = backend.plan(request)
    assert chosen.python_minor != exact.python_minor and not chosen.python_exact


def test_builtin_algorithm_images_are_recognised_by_repository_name():
    assert builtin_algorithm(XGBOOST_IMAGE) == "xgboost"
    assert builtin_algorithm("246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost@sha256:" + "0" * 64)
    assert builtin_algorithm("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1") == "xgboost"
    assert builtin_algorithm("sagemaker-xgboost") == "xgboost"
    assert builtin_algorithm("763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1") is None
    assert builtin_algorithm(None) is None


# --- bad input: one-line errors, before anything runs ----------------------------------------------------------


def test_bad_input_fails_before_anything_runs(backend, ledger_home, tmp_path):
    cases = [
        (make_request("bad-1", program="no_such_script.py"), NotFound, "entry point 'no_such_script.py'"),
        (make_request("bad-2", program="fail.py", channels=[file_channel("train", "file:///no/such/dir")]),
         NotFound, "file:///no/such/dir does not exist"),
        (make_request("bad-3", image="123.dkr.ecr.us-east-1.amazonaws.com/my-algo:1"), UsageError,
         "supported: the SageMaker XGBoost image"),
        (make_request("bad-4", program="fail.py", source=(tmp_path / "nowhere").as_uri()), NotFound,
         "source directory"),
        (make_request("bad 5", program="fail.py"), UsageError, "not a valid job name"),
        (make_request("bad-6", program="fail.py", metrics={"m": "([unclosed"}), UsageError, "invalid regex"),
    ]
    for request, error, message in cases:
        with pytest.raises(error) as info:
            backend.launch(request, log=lambda line: None)
        assert message in str(info.value) and "\n" not in str(info.value)
        assert info.value.hint
    assert not (ledger_home / "jobs").exists() or not any((ledger_home / "jobs").iterdir())


def test_pipe_mode_and_a_reused_job_name_are_refused(backend, tmp_path):
    request = make_request("pipe-1", program="fail.py", channels=[file_channel("train", str(tmp_path))])
    request["AlgorithmSpecification"]["TrainingInputMode"] = "Pipe"
    with pytest.raises(UsageError, match="Pipe"):
        plan_local_job(request, home=tmp_path)
    backend.launch(make_request("again-1", program="fail.py", output=(tmp_path / "o").as_uri()),
                   log=lambda line: None)
    with pytest.raises(UsageError, match="already exists"):
        backend.launch(make_request("again-1", program="fail.py"), log=lambda line: None)


# --- requirements, registry, pure helpers ----------------------------------------------------------------------


def test_satisfied_requirements_are_not_installed(backend, tmp_path, lines):
    result = backend.launch(make_request("reqs-1", program="train.py",
                                         source=(ENTRY_POINTS / "with_requirements").as_uri(),
                                         output=(tmp_path / "out").as_uri()), log=lines.append)
    assert result.outcome.status == "Completed"
    assert any("nothing to install" in line for line in lines)
    assert not any("pip" in line for line in lines)


def test_unsatisfied_requirements_are_found_without_the_network():
    text = ("numpy>=1.0\nnumpy<1.0\nsurely-not-installed-pkg==1.0\n# comment\n--index-url x\n"
            "win ; sys_platform == 'win32'")
    assert find_unsatisfied_requirements(text) == ["numpy<1.0", "surely-not-installed-pkg==1.0", "--index-url x"]


def test_user_args_are_formatted_as_the_toolkit_does():
    assert build_user_args({"epochs": 3, "lr": 0.1, "b": True, "opt": "adam", "cfg": {"y": 2, "x": 1}}) == [
        "-b", "True", "--cfg", "x=1,y=2", "--epochs", "3", "--lr", "0.1", "--opt", "adam"]


def test_outcome_of_a_stopped_job_is_stopped_not_failed():
    outcome = build_local_outcome(exit_code=-15, stopped_by="max_runtime", max_runtime=5, failure_text=None,
                            log_tail=[], started_at="a", ended_at="b", seconds=5.2, metrics={}, model_artifact=None)
    assert (outcome.status, outcome.billable_seconds) == ("Stopped", 6)
    long_failure = build_local_outcome(exit_code=1, stopped_by=None, max_runtime=5, failure_text="x" * 5000, log_tail=[],
                                 started_at="a", ended_at="b", seconds=1, metrics={}, model_artifact=None)
    assert len(long_failure.failure_reason) == 1024


def test_backends_are_found_by_name(ledger_home):
    assert isinstance(get_backend("local"), LocalBackend)
    with pytest.raises(UsageError, match="no backend named 'nope'"):
        get_backend("nope")
