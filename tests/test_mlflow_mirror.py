"""The MLflow mirror against a real `mlflow server` this module starts on 127.0.0.1 (issue 6).

One server for the module (SQLite backend store and served artifacts in a temp dir); the outage test stops it and
starts it again on the same port and store. Each test runs on a SQLite ledger and on a PostgreSQL one (db_url).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from ledger.cli import main
from ledger.record import (
    CodePin,
    DataChannelPin,
    DataObject,
    EnvironmentPin,
    Gap,
    HardwarePin,
    ImagePin,
    Outcome,
    Pins,
    RunRecord,
    sha256_hex,
)
from ledger.store import mlflow_sink
from ledger.store.ledger import open_ledger

# The mlflow command of the environment running the tests, wherever it lives; else `python -m mlflow`.
MLFLOW = Path(sys.executable).with_name("mlflow")


class MlflowServer:
    """A real `mlflow server` process in its own session, so stopping it stops its workers too."""

    def __init__(self, root: Path):
        self.root = root
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [*([str(MLFLOW)] if MLFLOW.exists() else [sys.executable, "-m", "mlflow"]), "server", "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                   "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        with open(self.root / "server.log", "ab") as log:  # the child keeps its own copy of the handle
            self.process = subprocess.Popen(command, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("mlflow server did not become healthy in 120 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the session this process leads: server and workers
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the port is free again: nothing answers
            try:
                requests.get(f"{self.url}/health", timeout=0.5)
                time.sleep(0.2)
            except requests.RequestException:
                return


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mirrored_ledger(db_url, mlflow_server, monkeypatch):
    monkeypatch.setenv("LEDGER_MLFLOW_URI", mlflow_server.url)
    yield open_ledger()
    assert mlflow_sink.wait_for_mirror(30)


def make_record(book, ledger_home: Path) -> RunRecord:
    """A run shaped like a captured SageMaker job: pinned image, two S3 channels, a dirty git tree, a secret."""
    tag = uuid.uuid4().hex[:8]
    job = f"abalone-xgb-{tag}"
    diff = b"diff --git a/train.py b/train.py\n-eta = 0.3\n+eta = 0.2\n"
    diff_sha = book.put_blob(diff)
    data = {}
    for channel in ("train", "validation"):
        objects = [DataObject(key=f"abalone/{channel}/part-{i}.csv", version_id=f"v{i}-{tag}", etag=f"e{i}",
                              size=1000 + i) for i in range(2)]
        data[channel] = DataChannelPin(uri=f"s3://ledger-data/abalone/{channel}/", kind="S3Prefix", objects=objects,
                                       object_count=2, total_bytes=2001,
                                       manifest_sha256=sha256_hex(f"{channel}-{tag}"), pinned=True)
    hyperparameters = {"max_depth": "5", "eta": "0.2", "num_round": "50", "objective": "reg:squarederror",
                       "sagemaker_program": '"train.py"', "wandb_api_key": "***REDACTED***"}
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"
    digest = "sha256:" + sha256_hex(tag)
    request = {"TrainingJobName": job, "HyperParameters": hyperparameters,
               "AlgorithmSpecification": {"TrainingImage": f"{image}@{digest}", "TrainingInputMode": "File"},
               "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30}}
    log = ledger_home / "jobs" / job / "job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("[0]#011validation-rmse:3.1\n[1]#011validation-rmse:2.4\n", encoding="utf-8")
    return RunRecord(
        project=f"abalone-{tag}", job_name=job, backend="local", created_by="ana@workstation", request=request,
        created_at="2025-03-01T09:59:50.000000Z",
        pins=Pins(
            image=ImagePin(uri=f"{image}:1.7-1", digest=digest, pinned_uri=f"{image}@{digest}", source="ecr"),
            code=CodePin(repo_url="https://github.com/example/abalone.git", commit="9" * 40, branch="main",
                         dirty=True, diff_sha256=diff_sha),
            data=data, hyperparameters=hyperparameters,
            environment=EnvironmentPin(python="3.11.9", fingerprint="sha256:" + "e" * 64),
            hardware=HardwarePin(instance_type="ml.m5.xlarge", instance_count=2, volume_gb=30),
            gaps=[Gap(what="source archive", why="no sagemaker_submit_directory", fix="pass source_dir")],
        ),
    )


def finish(book, record: RunRecord, ledger_home: Path) -> RunRecord:
    series = [{"name": "validation:rmse", "step": i, "value": v, "timestamp": f"2025-03-01T10:00:0{i}.000000Z"}
              for i, v in enumerate((3.1, 2.4, 2.2))]
    return book.record_outcome(record.run_id, Outcome(
        status="Completed", started_at="2025-03-01T09:59:58.000000Z", ended_at="2025-03-01T10:00:09.000000Z",
        billable_seconds=11, metrics={"validation:rmse": 2.2, "train:rmse": 1.9}, metric_series=series,
        log_path=str(ledger_home / "jobs" / record.job_name / "job.log")))


def mirror_of(client, record: RunRecord):
    experiment = client.get_experiment_by_name(record.project)
    assert experiment is not None, f"no experiment {record.project}"
    return client.search_runs([experiment.experiment_id], f"tags.`ledger.run_id` = '{record.run_id}'")


def history(client, run_id: str) -> dict[str, list[tuple[int, float, int]]]:
    return {key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
            for key in ("validation:rmse", "train:rmse")}


def test_a_captured_run_appears_in_mlflow_with_all_of_it(mirrored_ledger, mlflow_server, ledger_home, capsys):
    import mlflow
    from mlflow import MlflowClient

    book = mirrored_ledger
    record = book.append(make_record(book, ledger_home))
    finish(book, record, ledger_home)
    assert mlflow_sink.wait_for_mirror(60)  # pushed right after each append, no `ledger sync` needed
    assert mlflow_sink.pending_runs(book) == {}

    client = MlflowClient(mlflow_server.url)
    [run] = mirror_of(client, record)
    tags, info = run.data.tags, run.info
    assert info.status == "FINISHED" and info.run_name == record.job_name and info.user_id == "ana@workstation"
    # MLflow's start time is the launch, whenever the mirror first saw the run: MLflow cannot move a start time later
    assert (info.start_time, info.end_time) == (1740823190000, 1740823209000)
    assert tags | {
        "mlflow.runName": record.job_name, "mlflow.user": "ana@workstation", "mlflow.source.name": "train.py",
        "mlflow.source.git.commit": "9" * 40, "mlflow.source.git.branch": "main",
        "mlflow.source.git.repoURL": "https://github.com/example/abalone.git",
        "ledger.run_id": record.run_id, "ledger.image_digest": record.pins.image.digest, "ledger.gap_count": "1",
        "ledger.data.train.manifest_sha256": record.pins.data["train"].manifest_sha256,
        "ledger.data.validation.manifest_sha256": record.pins.data["validation"].manifest_sha256,
    } == tags
    assert "ledger.verdict" not in tags and "ledger.reproduction_of" not in tags  # no verdict: no tag
    assert run.data.params == {**record.pins.hyperparameters, "instance_type": "ml.m5.xlarge", "instance_count": "2"}
    assert run.data.params["wandb_api_key"] == "***REDACTED***"
    assert run.data.metrics == {"validation:rmse": 2.2, "train:rmse": 1.9}
    assert history(client, info.run_id) == {
        "validation:rmse": [(0, 3.1, 1740823200000), (1, 2.4, 1740823201000), (2, 2.2, 1740823202000)],
        "train:rmse": [(0, 1.9, 1740823209000)],
    }
    datasets = {i.dataset.name: i.dataset for i in run.inputs.dataset_inputs}
    assert set(datasets) == {"train", "validation"}
    train = datasets["train"]
    assert train.digest == record.pins.data["train"].manifest_sha256[:36] and train.source_type == "s3"
    assert json.loads(train.source) == {"uri": "s3://ledger-data/abalone/train/"}
    assert json.loads(train.profile)["manifest_sha256"] == record.pins.data["train"].manifest_sha256

    artifacts = {a.path for a in client.list_artifacts(info.run_id, "ledger")}
    artifacts |= {a.path for a in client.list_artifacts(info.run_id, "ledger/data")}
    artifacts |= {a.path for a in client.list_artifacts(info.run_id, "ledger/code")}
    assert {"ledger/record.json", "ledger/job.log", "ledger/code/git.diff", "ledger/data/train.manifest.json",
            "ledger/data/validation.manifest.json"} <= artifacts
    saved = json.loads(Path(client.download_artifacts(info.run_id, "ledger/record.json")).read_text())
    assert saved["run_id"] == record.run_id and saved["outcome"]["status"] == "Completed"
    assert Path(client.download_artifacts(info.run_id, "ledger/code/git.diff")).read_bytes() == \
        book.get_blob(record.pins.code.diff_sha256)

    mlflow.set_tracking_uri(mlflow_server.url)  # the user's way in: search by the pinned image
    frame = mlflow.search_runs(experiment_names=[record.project],
                               filter_string=f"tags.`ledger.image_digest` = '{record.pins.image.digest}'")
    assert list(frame["run_id"]) == [info.run_id]

    assert main(["show", record.run_id, "--json"]) == 0  # linked back: the MLflow run id is in the record
    shown = json.loads(capsys.readouterr().out)
    assert shown["annotations"]["mlflow_run_id"] == info.run_id
    assert shown["annotations"]["mlflow_tracking_uri"] == mlflow_server.url
    assert main(["show", record.run_id]) == 0  # and in the terminal view
    assert info.run_id in capsys.readouterr().out


def test_an_outage_keeps_the_run_in_the_outbox_and_sync_mirrors_it_once(mirrored_ledger, mlflow_server,
                                                                         ledger_home, capsys):
    from mlflow import MlflowClient

    book = mirrored_ledger
    mlflow_server.stop()
    try:
        record = book.append(make_record(book, ledger_home))  # neither capture nor append notices the outage
        finish(book, record, ledger_home)
        assert mlflow_sink.wait_for_mirror(30)
        assert book.get(record.run_id).outcome.status == "Completed"
        assert list(mlflow_sink.pending_runs(book)) == [record.run_id]
        assert main(["sync"]) == 0  # an MLflow outage does not fail sync either: it says so
        assert "still queued" in capsys.readouterr().out
        assert list(mlflow_sink.pending_runs(book)) == [record.run_id]
    finally:
        mlflow_server.start()

    assert main(["sync", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mirrored"] == [record.run_id] and report["mirror_pending"] == 0
    client = MlflowClient(mlflow_server.url)
    [run] = mirror_of(client, record)
    first = (run.data.params, run.data.tags, history(client, run.info.run_id),
             sorted(a.path for a in client.list_artifacts(run.info.run_id, "ledger")))
    assert first[2]["validation:rmse"][-1][:2] == (2, 2.2)

    # A second sync has nothing to push; a forced second push of the same run adds nothing either.
    assert main(["sync", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mirrored"] == []
    mlflow_sink.mirror_run(client, book, book.get(record.run_id), mlflow_server.url)
    [again] = mirror_of(client, record)
    assert again.info.run_id == run.info.run_id
    assert (again.data.params, again.data.tags, history(client, run.info.run_id),
            sorted(a.path for a in client.list_artifacts(run.info.run_id, "ledger"))) == first
    assert book.get(record.run_id).to_dict()["annotations"]["mlflow_run_id"] == run.info.run_id


def test_the_outbox_row_is_written_with_the_entry_and_mirror_facts_do_not_requeue(db_url, ledger_home):
    book = open_ledger()  # default MLflow URI (SQLite in LEDGER_HOME): nothing is pushed until `ledger sync`
    record = book.append(make_record(book, ledger_home))
    assert mlflow_sink.pending_runs(book) == {record.run_id: 1}
    book.annotate(record.run_id, {"mlflow_run_id": "abc", "mlflow_experiment_id": "1"})
    assert mlflow_sink.pending_runs(book) == {record.run_id: 1}  # the mirror's own facts queue nothing
    book.annotate(record.run_id, {"reviewed_by": "ana"})
    assert mlflow_sink.pending_runs(book) == {record.run_id: 2}

    def fail(_conn, _entries):
        raise RuntimeError("the append fails after the outbox row was written")

    book.append_listeners.append(fail)  # one transaction: the entry and its outbox row go back together
    with pytest.raises(RuntimeError):
        book.record_outcome(record.run_id, Outcome(status="Failed"))
    assert mlflow_sink.pending_runs(book) == {record.run_id: 2}
    assert [e.kind for e in book.entries(record.run_id)] == ["run.launched", "run.annotated", "run.annotated"]


def test_plan_batches_respects_mlflow_limits():
    params = {f"p{i}": "1" for i in range(250)}
    tags = {f"t{i}": "1" for i in range(120)}
    metrics = [("m", 1.0, i, i) for i in range(2500)]
    batches = mlflow_sink.plan_batches(params, tags, metrics)
    assert all(len(p) <= 100 and len(t) <= 100 and len(p) + len(t) + len(m) <= 1000 for p, t, m in batches)
    assert sum(len(p) for p, _, _ in batches) == 250 and sum(len(m) for _, _, m in batches) == 2500
    assert mlflow_sink.mirror_key("a#b/../c") == "a_b/__/c"


def test_a_hyperparameter_longer_than_mlflow_takes_is_cut_and_says_so(mirrored_ledger, mlflow_server, ledger_home):
    """MLflow refuses a param value over 6,000 characters; the ledger keeps the whole 1 MB value and mirrors the run
    with that param cut, naming its length and sha256, instead of failing the mirror on every sync."""
    from mlflow import MlflowClient

    book = mirrored_ledger
    record = make_record(book, ledger_home)
    big = "x" * 1_000_000
    record.pins.hyperparameters["config"] = big
    record = book.append(record)
    assert mlflow_sink.wait_for_mirror(60)
    assert mlflow_sink.pending_runs(book) == {}
    [run] = mirror_of(MlflowClient(mlflow_server.url), record)
    value = run.data.params["config"]
    assert len(value) == 6000 and value.startswith("x" * 100)
    assert f"cut by the ledger: 1000000 characters, sha256 {sha256_hex(big)}" in value
    assert book.get(record.run_id).pins.hyperparameters["config"] == big
