"""The MLflow mirror against its peer, side by side in one run (by hand, not in CI). Issue 6, "Speed".

Starts a real `mlflow server` on 127.0.0.1 (SQLite backend store, served artifacts, in a temporary directory), fills
a temporary SQLite ledger with --runs finished runs shaped like real XGBoost jobs (20 hyperparameters, instance
type and count, 3 final metrics and --points points of 2 metric series, 2 S3 channels, ~20 tags), then mirrors
them twice, each into its own experiment of the same server:

  ledger    `push_outbox`: per run one search by `ledger.run_id`, create_run, the params, tags and metrics in
            log_batch calls, log_inputs, the status; and the outbox rows marked pushed in the ledger.
  per call  the same plan (`plan_mirror`) logged the usual way: the same search, create_run with the tags, then
            one log_param per param and one log_metric per metric point, the same log_inputs and status.

With --artifacts both also upload the same artifacts (record JSON, manifests, job log): the same calls either way,
so they dilute the ratio. Printed: both times, runs/s, HTTP calls of MLflow logging, and the ratio per call /
ledger. Before timing is trusted, one run of each is read back and compared (params, latest metrics, history).

    .venv/bin/python bench/bench_mlflow_mirror.py                  # 1,000 runs
    .venv/bin/python bench/bench_mlflow_mirror.py --runs 100 --artifacts
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
HYPERPARAMETERS = ["max_depth", "eta", "gamma", "min_child_weight", "subsample", "colsample_bytree", "num_round", "objective", "eval_metric", "lambda", "alpha", "tree_method", "max_bin", "scale_pos_weight", "seed", "early_stopping_rounds", "grow_policy", "max_leaves", "sampling_method", "verbosity"]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def make_records(count: int, points: int, seed: int = 11):
    from ledger.record import (
        CodePin,
        DataChannelPin,
        DataObject,
        HardwarePin,
        ImagePin,
        Outcome,
        Pins,
        RunRecord,
        sha256_hex,
    )

    rng = random.Random(seed)
    records = []
    for i in range(count):
        job = f"housing-xgb-{i:07d}"
        created = EPOCH + timedelta(seconds=37 * i)
        ended = created + timedelta(seconds=690)
        hyper = {name: f"{rng.uniform(0, 10):.3f}" for name in HYPERPARAMETERS}
        digest = "sha256:" + sha256_hex(f"image-{i % 7}")
        data = {}
        for channel in ("train", "validation"):
            objects = [DataObject(key=f"housing/v3/{channel}/part-{n}.csv", version_id=f"v{i}-{n}", etag="e",
                                  size=48_000_000 + n) for n in range(2)]
            data[channel] = DataChannelPin(uri=f"s3://ml-data-{ACCOUNT}/housing/v3/{channel}/", kind="S3Prefix",
                                           objects=objects, object_count=2, total_bytes=96_000_001, pinned=True,
                                           manifest_sha256=sha256_hex(f"{channel}-{i}"))
        rmse = rng.uniform(2.0, 6.0)
        series = [{"name": name, "step": s, "value": round(rmse * (1 + (points - s) / points) * k, 6),
                   "timestamp": iso(created + timedelta(seconds=90 + 60 * s))}
                  for name, k in (("train:rmse", 0.8), ("validation:rmse", 1.0)) for s in range(points)]
        final = {"train:rmse": series[points - 1]["value"] if points else rmse * 0.8,
                 "validation:rmse": series[-1]["value"] if points else rmse, "validation:mae": round(rmse * 0.8, 6)}
        records.append(RunRecord(
            project="housing-prices", job_name=job, backend="sagemaker", created_at=iso(created),
            created_by=f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/alice@acme.com",
            request={"TrainingJobName": job, "HyperParameters": hyper,
                     "AlgorithmSpecification": {"TrainingImage": f"{IMAGE}@{digest}"}},
            pins=Pins(image=ImagePin(uri=f"{IMAGE}:1.7-1", digest=digest, pinned_uri=f"{IMAGE}@{digest}",
                                     source="ecr"),
                      code=CodePin(repo_url="git@github.com:acme/housing-models.git", commit=f"{i // 50:040x}",
                                   branch="main", dirty=False),
                      data=data, hyperparameters=hyper,
                      hardware=HardwarePin(instance_type="ml.m5.xlarge", instance_count=1, volume_gb=30)),
            outcome=Outcome(status="Completed", started_at=iso(created + timedelta(seconds=90)), ended_at=iso(ended),
                            billable_seconds=600, metrics=final, metric_series=series),
        ))
    return records


class Server:
    def __init__(self, root: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        mlflow = Path(sys.executable).with_name("mlflow")
        with open(root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--serve-artifacts",
                 "--artifacts-destination", str(root / "artifacts")],
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        import requests

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"mlflow server exited; see {root / 'server.log'}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise SystemExit("mlflow server did not start in 180 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)


def mirror_per_call(client, book, record, experiment_id: str, artifacts: bool) -> str:
    """The peer: what mirror_run does, with one call per param and per metric point instead of log_batch."""
    from ledger.store import mlflow_sink

    plan = mlflow_sink.plan_mirror(record)
    if mlflow_sink.find_mirror_run(client, experiment_id, record.run_id) is not None:
        raise SystemExit("the per-call experiment is not empty")
    run_id = client.create_run(experiment_id, start_time=plan.start_ms, run_name=plan.run_name,
                               tags=plan.tags).info.run_id
    for key, value in plan.params.items():
        client.log_param(run_id, key, value)
    for key, value, timestamp, step in plan.metrics:
        client.log_metric(run_id, key, value, timestamp=timestamp, step=step)
    client.log_inputs(run_id, datasets=[mlflow_sink._dataset_input(d) for d in plan.datasets])
    if artifacts:
        mlflow_sink._log_artifacts(client, book, record, run_id)
    mlflow_sink._set_status(client, run_id, plan.status, plan.end_ms)
    return run_id


def read_back(client, experiment_id: str, run_id: str):
    [run] = client.search_runs([experiment_id], f"tags.`ledger.run_id` = '{run_id}'")
    history = {key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)]
               for key in sorted(run.data.metrics)}
    return run.data.params, run.data.metrics, history, run.info.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=10, help="points of each of the 2 metric series a run")
    parser.add_argument("--artifacts", action="store_true", help="also upload the artifacts, on both sides")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-mlflow-mirror-"))
    for name in ("LEDGER_DB_URL", "LEDGER_MLFLOW_URI", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    os.environ["LEDGER_HOME"] = str(tmp / "home")  # default MLflow URI: no background push while filling
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    server = None
    try:
        from mlflow import MlflowClient

        from ledger.store import mlflow_sink
        from ledger.store.ledger import open_ledger

        started = time.perf_counter()
        server = Server(tmp)
        print(f"mlflow server {server.url} up in {time.perf_counter() - started:.1f} s")
        book = open_ledger()
        records = book.append_many(make_records(args.runs, args.points))
        plan = mlflow_sink.plan_mirror(records[0])
        calls_batched = len(mlflow_sink.plan_batches(plan.params, plan.tags, plan.metrics))
        print(f"{len(records)} runs in the ledger; each: {len(plan.params)} params, {len(plan.tags)} tags, "
              f"{len(plan.metrics)} metric points, {len(plan.datasets)} datasets"
              + (", artifacts" if args.artifacts else ", no artifacts"))

        client = MlflowClient(server.url)
        client.create_experiment("housing-prices")  # the same setup on both sides
        peer_experiment = client.create_experiment("housing-prices-per-call")

        started = time.perf_counter()
        report = mlflow_sink.push_outbox(book, server.url, artifacts=args.artifacts)
        batched = time.perf_counter() - started
        if report.failed or report.error or len(report.mirrored) != len(records):
            raise SystemExit(f"the ledger's push did not mirror every run: {report}")

        started = time.perf_counter()
        for record in records:
            mirror_per_call(client, book, record, peer_experiment, args.artifacts)
        per_call = time.perf_counter() - started

        ledger_experiment = client.get_experiment_by_name("housing-prices").experiment_id
        for record in (records[0], records[-1]):
            ours = read_back(client, ledger_experiment, record.run_id)
            theirs = read_back(client, peer_experiment, record.run_id)
            if ours != theirs:
                raise SystemExit(f"the two mirrors of {record.run_id} differ:\n{ours}\n{theirs}")

        calls_per_call = len(plan.params) + len(plan.metrics)
        print()
        print(f"{'':28}{'seconds':>10}{'runs/s':>10}{'logging calls a run':>22}")
        print(f"{'ledger (log_batch)':28}{batched:10.1f}{len(records) / batched:10.1f}{calls_batched:22d}")
        print(f"{'per call (log_param/metric)':28}{per_call:10.1f}{len(records) / per_call:10.1f}"
              f"{calls_per_call:22d}")
        print(f"ratio per call / ledger: {per_call / batched:.1f}x")
        print("both mirrors read back identical (params, latest metrics, metric histories, status)")
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
