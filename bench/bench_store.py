"""The store against its peer, side by side in one run (by hand, not in CI). Issue 2, "Speed".

Everything happens in a fresh temporary LEDGER_HOME with its own SQLite files, removed at the end (--keep keeps it).

1. Appends in a batch: `Ledger.append_many` of 1,000 runs shaped like real runs (a CreateTrainingJob request and
   the request before pinning, 20 hyperparameters, image/code/data/environment/hardware pins, the environment
   being this interpreter's real package list). Each batch is one repetition; the table shows the median batch
   rate. Aim: >= 2,000 runs/s.
   The 3 final metrics normally arrive in a later `run.finished` entry written by `record_outcome`, one
   transaction per call. For the bulk load the outcome (metrics included) is put straight into the launched
   record, so one entry per run suffices; `record_outcome` is timed separately, per call, for information.
2. With --runs runs in SQLite: `Ledger.runs()` into a DataFrame (aim < 2 s) and
   `runs(where="params.max_depth = '7'")` (aim < 0.2 s), medians of --reps.
3. The peer: `mlflow.search_runs` over the same runs (same ids, names, 20 params, 3 metrics and 5 usual
   `mlflow.*` tags each) in an MLflow SQLite store. MLflow's own migrations create the store; its runs, params,
   metrics, latest_metrics and tags tables are then filled with bulk SQL (logging 100,000 runs through the API
   takes many minutes, and loading is not what is measured). Before timing, the script checks that search_runs
   returns every run with the same param and metric columns as a run logged through MLflow's API, and the values
   the ledger holds. Printed: both times and the ratio MLflow / ledger.
4. `Ledger.verify` over --entries entries: --entries/2 runs, each a run.launched and a run.finished entry, bulk
   inserted with the ledger's own functions: bodies by ledger.record.build_entry_body, the chain by chain_hash,
   each run's record by fold_entries and its projection rows by ledger.store.projection.build_projection (what
   `record_outcome` does). Timed: the chain check alone (`verify(check_projections=False)`, aim >= 200,000
   entries/s) and the full verify with projections.

Every figure is printed as wall time (the aims are wall time) and from this process's CPU time, which other work on
the machine disturbs less. --packages N shrinks the environment pin, to see how the figures depend on record size.

    .venv/bin/python bench/bench_store.py                 # 100,000 runs, 1,000,000 entries (11-17 minutes,
                                                               # ~10 GB of disk, ~18 GB of memory)
    .venv/bin/python bench/bench_store.py --quick         # 10,000 runs, 50,000 entries (under a minute)
    .venv/bin/python bench/bench_store.py --profile       # also print cProfile hot spots of each figure
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

HYPERPARAMETERS: dict[str, Callable[[random.Random], str]] = {
    "max_depth": lambda r: str(r.randint(1, 10)),
    "eta": lambda r: f"{r.choice([0.01, 0.03, 0.05, 0.1, 0.2, 0.3])}",
    "gamma": lambda r: f"{r.uniform(0, 5):.3f}",
    "min_child_weight": lambda r: str(r.randint(1, 10)),
    "subsample": lambda r: f"{r.uniform(0.5, 1):.2f}",
    "colsample_bytree": lambda r: f"{r.uniform(0.5, 1):.2f}",
    "num_round": lambda r: str(r.choice([100, 200, 500, 1000])),
    "objective": lambda r: r.choice(["reg:squarederror", "reg:pseudohubererror"]),
    "eval_metric": lambda r: "rmse",
    "lambda": lambda r: f"{r.uniform(0, 10):.3f}",
    "alpha": lambda r: f"{r.uniform(0, 10):.3f}",
    "tree_method": lambda r: r.choice(["hist", "approx", "exact"]),
    "max_bin": lambda r: str(r.choice([128, 256, 512])),
    "scale_pos_weight": lambda r: f"{r.uniform(0.5, 2):.2f}",
    "seed": lambda r: str(r.randint(0, 2**31)),
    "early_stopping_rounds": lambda r: str(r.choice([10, 20, 50])),
    "grow_policy": lambda r: r.choice(["depthwise", "lossguide"]),
    "max_leaves": lambda r: str(r.choice([0, 31, 63, 255])),
    "sampling_method": lambda r: "uniform",
    "verbosity": lambda r: "1",
}
METRICS = ("train:rmse", "validation:mae", "validation:rmse")
FILTER_PARAM, FILTER_VALUE = "max_depth", "7"
ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"
DIGEST = "sha256:" + "4f" * 32
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


# --- runs shaped like real runs -------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class RunFactory:
    """RunRecords as capture would make them for an XGBoost job launched from a notebook. Deterministic."""

    packages: int | None = None
    """Keep only this many of the environment's packages (--packages); None keeps them all."""

    def __init__(self, seed: int = 7):
        from ledger.capture.environment import capture_environment
        from ledger.record import (
            CodePin,
            DataChannelPin,
            DataObject,
            HardwarePin,
            ImagePin,
            Pins,
            RunRecord,
            SourceArchive,
        )

        self.rng = random.Random(seed)
        self.RunRecord = RunRecord
        environment = capture_environment()  # this interpreter's real packages: ~200 in the bench venv
        if self.packages is not None:
            from ledger.capture.environment import build_environment_pin

            kept = dict(list(environment.packages.items())[: self.packages])
            environment = build_environment_pin(environment.python, environment.platform, kept)
        channels = {}
        for name, parts in (("train", 2), ("validation", 1)):
            objects = [DataObject(key=f"datasets/housing/v3/{name}/part-{n:05d}.csv",
                                  version_id=f"3HL4kqtJlcpXroDTDmJ{n}rmSpXd3dIbrHY", etag=f'"{n:02d}' + "9a" * 15 + '"',
                                  size=48_000_000 + n) for n in range(parts)]
            channels[name] = DataChannelPin(uri=f"s3://ml-data-{ACCOUNT}/datasets/housing/v3/{name}/",
                                            kind="S3Prefix", objects=objects, object_count=parts,
                                            total_bytes=sum(o.size for o in objects),
                                            manifest_sha256="e3" * 32, pinned=True)
        self.pins = Pins(
            image=ImagePin(uri=f"{IMAGE}:1.7-1", digest=DIGEST, pinned_uri=f"{IMAGE}@{DIGEST}", source="ecr"),
            code=CodePin(repo_url="git@github.com:acme/housing-models.git", commit="a" * 40, branch="main",
                         dirty=False, untracked=[],
                         source_archive=SourceArchive(uri=f"s3://sagemaker-us-east-1-{ACCOUNT}/code/source.tar.gz",
                                                      version_id="Yt0bx8Q9", sha256="5c" * 32)),
            data=channels,
            environment=environment,
            hardware=HardwarePin(instance_type="ml.m5.xlarge", instance_count=1, volume_gb=30, vcpu=4,
                                 memory_gib=16.0, gpu=None, gpu_count=0, host=None),
        )

    def _request(self, job_name: str, hyperparameters: dict[str, str], image: str) -> dict:
        return {
            "TrainingJobName": job_name,
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File",
                                       "EnableSageMakerMetricsTimeSeries": False},
            "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/service-role/AmazonSageMaker-ExecutionRole",
            "HyperParameters": hyperparameters,
            "InputDataConfig": [
                {"ChannelName": name, "ContentType": "text/csv", "CompressionType": "None",
                 "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated",
                                                 "S3Uri": pin.uri}}}
                for name, pin in self.pins.data.items()
            ],
            "OutputDataConfig": {"S3OutputPath": f"s3://sagemaker-us-east-1-{ACCOUNT}/housing/output"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
            "EnableNetworkIsolation": False,
            "EnableManagedSpotTraining": False,
            "Tags": [{"Key": "team", "Value": "pricing"}, {"Key": "cost-center", "Value": "ml-research"}],
        }

    def outcome(self, i: int, job_name: str, created: datetime, finished: bool):
        from ledger.record import ModelArtifact, Outcome

        arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/{job_name}"
        if not finished:
            return Outcome(status="InProgress", arn=arn, started_at=_iso(created))
        r = self.rng
        rmse = r.uniform(2.0, 6.0)
        return Outcome(
            status="Completed", arn=arn, started_at=_iso(created + timedelta(seconds=90)),
            ended_at=_iso(created + timedelta(seconds=90 + 600)), billable_seconds=600 + i % 300,
            failure_reason=None,
            metrics={"train:rmse": round(rmse * r.uniform(0.7, 0.95), 6), "validation:mae": round(rmse * 0.8, 6),
                     "validation:rmse": round(rmse, 6)},
            model_artifact=ModelArtifact(uri=f"s3://sagemaker-us-east-1-{ACCOUNT}/housing/output/{job_name}/output/"
                                             "model.tar.gz", version_id=f"v{i:08d}", sha256=f"{i:064x}",
                                         tree_sha256=f"{i + 1:064x}"),
        )

    def record(self, i: int, finished: bool = True):
        """Run number i. `finished`: the outcome with its metrics is in the record (the bulk-load shortcut)."""
        r = self.rng
        job_name = f"housing-xgb-{i:07d}"
        created = EPOCH + timedelta(seconds=37 * i)
        hyperparameters = {name: make(r) for name, make in HYPERPARAMETERS.items()}
        pins = self.pins.model_copy(update={
            "hyperparameters": hyperparameters,
            "code": self.pins.code.model_copy(update={"commit": f"{i // 50:040x}"}),
        })
        return self.RunRecord(
            project="housing-prices", job_name=job_name, backend="sagemaker", created_at=_iso(created),
            created_by=f"arn:aws:sts::{ACCOUNT}:assumed-role/DataScientist/alice@acme.com",
            request=self._request(job_name, hyperparameters, pins.image.pinned_uri),
            original_request=self._request(job_name, hyperparameters, pins.image.uri),
            pins=pins, outcome=self.outcome(i, job_name, created, finished),
        )


# --- measuring ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    measured: str
    cpu: str = ""  # the same figure from this process's CPU time: what it would be on an idle machine, roughly
    target: str = ""
    peer_ratio: str = ""
    verdict: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args, **kwargs) -> None:
        self.rows.append(Row(*args, **kwargs))


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # this process's CPU seconds (all threads): close to wall on an idle machine, less when others run


def timed(fn: Callable[[], object]) -> tuple[Timing, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), value


def median_time(fn: Callable[[], object], reps: int, check: Callable[[object], None] | None = None,
                warm_up: Callable[[], object] | None = None) -> Timing:
    """Medians of wall and CPU seconds of `reps` calls after a warm-up call (of `fn` unless given); `check` looks
    at each result, outside the timing."""
    (warm_up or fn)()
    times = []
    for _ in range(reps):
        timing, value = timed(fn)
        if check:
            check(value)
        times.append(timing)
    return Timing(statistics.median(t.wall for t in times), statistics.median(t.cpu for t in times))


def say(line: str) -> None:
    print(line, flush=True)


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def profile(label: str, fn: Callable[[], object], top: int = 14) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    say(f"\n--- profile: {label} (sorted by own time) ---")
    lines = out.getvalue().splitlines()
    start = next((n for n, line in enumerate(lines) if "ncalls" in line), 0)
    say("\n".join(line.replace(str(Path(sys.prefix)), "<venv>") for line in lines[max(0, start - 4):] if line.strip()))


# --- 1 and 2: appends and queries -----------------------------------------------------------------------------


def bench_appends(book, factory: RunFactory, runs: int, batch: int, results: Results) -> dict[str, str]:
    """Load `runs` runs with append_many in batches; returns {run_id: max_depth} for checking the filters."""
    depth_of: dict[str, str] = {}
    rates, cpu_rates, total = [], [], 0.0
    for start in range(0, runs, batch):
        records = [factory.record(i) for i in range(start, min(start + batch, runs))]
        for record in records:
            depth_of[record.run_id] = record.pins.hyperparameters[FILTER_PARAM]
        timing, saved = timed(lambda records=records: book.append_many(records))
        assert len(saved) == len(records) and saved[-1].chain is not None
        rates.append(len(records) / timing.wall)
        cpu_rates.append(len(records) / timing.cpu)
        total += timing.wall
        done = start + len(records)
        if done % max(batch, runs // 10) == 0 or done == runs:
            say(f"  appended {done:>9,} runs   this batch {rates[-1]:>8,.0f} runs/s ({cpu_rates[-1]:,.0f}/s by CPU time)")
    median_rate, median_cpu_rate = statistics.median(rates), statistics.median(cpu_rates)
    body = len(factory_body(factory))
    environment = len(factory.pins.environment.model_dump_json())
    say(f"append_many, batches of {batch:,}: median {median_rate:,.0f} runs/s ({median_cpu_rate:,.0f}/s by CPU time); "
        f"sustained {runs / total:,.0f} runs/s over {runs:,} runs ({total:.1f} s); first batch {rates[0]:,.0f}/s, "
        f"last {rates[-1]:,.0f}/s; launched body ~{body:,} bytes")
    results.add(f"append_many, batch {batch:,} (runs/s, median of {len(rates)})", f"{median_rate:,.0f}",
                f"{median_cpu_rate:,.0f}", ">= 2,000", "", verdict(median_rate >= 2000))
    results.notes.append(
        f"appends: the outcome with its 3 metrics is in the launched record (one entry a run); launched body "
        f"~{body:,} bytes, {environment:,} of them the environment pin ({len(factory.pins.environment.packages)} "
        "packages)")
    return depth_of


def factory_body(factory: RunFactory) -> str:
    from ledger.record import build_entry_body, launch_payload

    record = factory.record(0)
    return build_entry_body("run.launched", record.run_id, launch_payload(record))


def bench_queries(book, runs: int, depth_of: dict[str, str], reps: int) -> tuple[Timing, Timing]:
    expected = sorted(r for r, d in depth_of.items() if d == FILTER_VALUE)
    where = f"params.{FILTER_PARAM} = '{FILTER_VALUE}'"

    def check_all(frame) -> None:
        assert len(frame) == runs, (len(frame), runs)
        assert sum(c.startswith("params.") for c in frame.columns) == len(HYPERPARAMETERS)
        assert sum(c.startswith("metrics.") for c in frame.columns) == len(METRICS)

    def check_filtered(frame) -> None:
        assert sorted(frame["run_id"]) == expected, (len(frame), len(expected))
        assert set(frame[f"params.{FILTER_PARAM}"]) == {FILTER_VALUE}

    load = median_time(lambda: book.runs(), reps, check_all)
    say(f"ledger.runs(): {runs:,} runs into a DataFrame, median of {reps}: {load.wall:.3f} s (CPU {load.cpu:.3f} s)")
    filtered = median_time(lambda: book.runs(where=where), reps, check_filtered)
    say(f'ledger.runs(where="{where}"): {len(expected):,} runs, median of {reps}: {filtered.wall:.3f} s '
        f"(CPU {filtered.cpu:.3f} s)")
    return load, filtered


def add_query_rows(results: Results, runs: int, filtered_rows: int, load: Timing, filtered: Timing,
                   peer_load: Timing | None = None, peer_filtered: Timing | None = None) -> None:
    results.add(f"runs(): {runs:,} runs -> DataFrame (s)", f"{load.wall:.3f}", f"{load.cpu:.3f}", "< 2",
                f"{peer_load.wall / load.wall:.1f}x" if peer_load else "-", verdict(load.wall < 2))
    results.add(f"runs(where={FILTER_PARAM}={FILTER_VALUE}): {filtered_rows:,} runs (s)", f"{filtered.wall:.3f}",
                f"{filtered.cpu:.3f}", "< 0.2", f"{peer_filtered.wall / filtered.wall:.1f}x" if peer_filtered else "-",
                verdict(filtered.wall < 0.2))


def bench_record_outcome(book, factory: RunFactory, first: int, calls: int, results: Results) -> None:
    """The real path for metrics: a launched entry, then record_outcome (one transaction a call)."""
    records = [factory.record(first + n, finished=False) for n in range(calls)]
    book.append_many(records)
    times = []
    for n, record in enumerate(records):
        outcome = factory.outcome(first + n, record.job_name, EPOCH, finished=True)
        timing, saved = timed(lambda r=record.run_id, o=outcome: book.record_outcome(r, o))
        assert saved.outcome.metrics and saved.status == "Completed"
        times.append(timing)
    per_call = statistics.median(t.wall for t in times)
    per_call_cpu = statistics.median(t.cpu for t in times)
    say(f"record_outcome on a ledger of {first:,} runs: median {per_call * 1000:.1f} ms a call "
        f"({1 / per_call:,.0f} calls/s; CPU {per_call_cpu * 1000:.1f} ms; {calls} calls)")
    results.add(f"record_outcome, one a transaction (calls/s, {first // 1000:,}k runs)", f"{1 / per_call:,.0f}",
                f"{1 / per_call_cpu:,.0f}", "(no target)", "", "info")


# --- 3: MLflow, the peer --------------------------------------------------------------------------------------


def _mlflow_id(run_id: str) -> str:
    from ulid import ULID

    return ULID.from_str(run_id).bytes.hex()  # 128 bits either way: the same run, in MLflow's 32-hex form


def fill_mlflow(ledger_db: Path, mlflow_db: Path) -> tuple[str, Callable, Callable, int]:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    import mlflow
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # MLflow sets its own level on import

    mlflow.set_tracking_uri(f"sqlite:///{mlflow_db}")
    client = MlflowClient()
    experiment_id = client.create_experiment("housing-prices")  # MLflow's migrations create the store here

    # one run logged through MLflow's own API, in another experiment: what bulk-filled runs must look like
    reference_experiment = client.create_experiment("reference")
    reference = client.create_run(reference_experiment, run_name="reference",
                                  tags={"mlflow.user": "alice", "mlflow.source.type": "NOTEBOOK"})
    from mlflow.entities import Metric, Param

    now_ms = int(time.time() * 1000)
    client.log_batch(reference.info.run_id,
                     params=[Param(k, "1") for k in HYPERPARAMETERS],
                     metrics=[Metric(k, 1.0, now_ms, 0) for k in METRICS])
    client.set_terminated(reference.info.run_id)
    reference_frame = mlflow.search_runs(experiment_ids=[reference_experiment])

    source = sqlite3.connect(ledger_db)
    db = sqlite3.connect(mlflow_db)
    artifact_root = db.execute("SELECT artifact_location FROM experiments WHERE experiment_id = ?",
                               (int(experiment_id),)).fetchone()[0]
    db.execute("PRAGMA synchronous=OFF")
    count = 0
    cursor = source.execute("SELECT run_id, job_name, created_at, created_by, params_json, metrics_json, "
                            "code_commit FROM runs WHERE status = 'Completed' ORDER BY run_id")
    while chunk := cursor.fetchmany(10_000):
        runs, params, metrics, tags = [], [], [], []
        for run_id, job_name, created_at, created_by, params_json, metrics_json, commit in chunk:
            uuid = _mlflow_id(run_id)
            start = int(datetime.fromisoformat(created_at).timestamp() * 1000)
            end = start + 690_000
            runs.append((uuid, job_name, "NOTEBOOK", "", "", "alice", "FINISHED", start, end, "", "active",
                         f"{artifact_root}/{uuid}/artifacts", int(experiment_id), None))
            params += [(k, v, uuid) for k, v in json.loads(params_json).items()]
            metrics += [(k, v, end, uuid, 0, 0) for k, v in json.loads(metrics_json).items()]
            tags += [(k, v, uuid) for k, v in (("mlflow.runName", job_name), ("mlflow.user", "alice"),
                                               ("mlflow.source.type", "NOTEBOOK"),
                                               ("mlflow.source.name", "/home/alice/housing.ipynb"),
                                               ("mlflow.source.git.commit", commit))]
        with db:
            db.executemany("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                           "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, "
                           "experiment_id, deleted_time) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", runs)
            db.executemany('INSERT INTO params ("key", value, run_uuid) VALUES (?,?,?)', params)
            db.executemany('INSERT INTO metrics ("key", value, timestamp, run_uuid, step, is_nan) '
                           "VALUES (?,?,?,?,?,?)", metrics)
            db.executemany('INSERT INTO latest_metrics ("key", value, timestamp, run_uuid, step, is_nan) '
                           "VALUES (?,?,?,?,?,?)", metrics)  # one value a metric: the latest is the only one
            db.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?,?,?)', tags)
        count += len(chunk)
    db.execute("ANALYZE")
    db.close()

    sample_id, sample_params, sample_metrics = source.execute(
        "SELECT run_id, params_json, metrics_json FROM runs WHERE status = 'Completed' ORDER BY run_id DESC LIMIT 1"
    ).fetchone()
    source.close()
    wanted = {c for c in reference_frame.columns if c.startswith(("params.", "metrics."))}

    def check_frame(frame, rows: int, value: str | None = None) -> None:
        assert len(frame) == rows, (len(frame), rows)
        assert value is None or set(frame[f"params.{FILTER_PARAM}"]) == {value}
        have = {c for c in frame.columns if c.startswith(("params.", "metrics."))}
        assert have == wanted, sorted(have ^ wanted)
        assert frame[f"params.{FILTER_PARAM}"].notna().all() and frame["metrics.validation:rmse"].notna().all()

    def check_sample() -> None:
        frame = mlflow.search_runs(experiment_ids=[experiment_id], max_results=1, order_by=["start_time DESC"])
        row = frame.iloc[0]
        assert row["run_id"] == _mlflow_id(sample_id)
        assert {k: row[f"params.{k}"] for k in HYPERPARAMETERS} == json.loads(sample_params)
        assert {k: row[f"metrics.{k}"] for k in METRICS} == json.loads(sample_metrics)

    check_sample()
    return experiment_id, check_frame, mlflow.search_runs, count


def bench_mlflow(tmp: Path, ledger_db: Path, runs: int, filtered_rows: int, reps_all: int, reps_filter: int,
                 load: Timing, filtered: Timing, results: Results) -> None:
    mlflow_db = tmp / "mlflow.db"
    timing, (experiment_id, check_frame, search_runs, count) = timed(lambda: fill_mlflow(ledger_db, mlflow_db))
    assert count == runs, (count, runs)
    say(f"MLflow store filled with {count:,} runs by bulk SQL in {timing.wall:.1f} s (not measured)")
    where = f"params.{FILTER_PARAM} = '{FILTER_VALUE}'"
    everything = median_time(lambda: search_runs(experiment_ids=[experiment_id], max_results=runs + 1000),
                             reps_all, lambda frame: check_frame(frame, runs),
                             warm_up=lambda: search_runs(experiment_ids=[experiment_id], max_results=1000))
    say(f"mlflow.search_runs(): {runs:,} runs, median of {reps_all}: {everything.wall:.2f} s "
        f"(CPU {everything.cpu:.2f} s)")
    subset = median_time(lambda: search_runs(experiment_ids=[experiment_id], filter_string=where,
                                             max_results=runs + 1000),
                         reps_filter, lambda frame: check_frame(frame, filtered_rows, FILTER_VALUE))
    say(f'mlflow.search_runs(filter_string="{where}"): {filtered_rows:,} runs, median of {reps_filter}: '
        f"{subset.wall:.2f} s (CPU {subset.cpu:.2f} s)")
    say(f"ratio MLflow / ledger (wall): all runs {everything.wall / load.wall:.1f}x, "
        f"filter {subset.wall / filtered.wall:.1f}x")
    add_query_rows(results, runs, filtered_rows, load, filtered, everything, subset)
    results.add(f"peer mlflow.search_runs, {runs:,} runs (s)", f"{everything.wall:.2f}", f"{everything.cpu:.2f}",
                "", "", "peer")
    results.add("peer mlflow.search_runs, filter (s)", f"{subset.wall:.2f}", f"{subset.cpu:.2f}", "", "", "peer")
    results.notes.append(f"MLflow: {'1 run' if reps_all == 1 else f'median of {reps_all}'} (all runs, after a "
                         f"1,000-run warm-up) and median of {reps_filter} (filter); runs carry 20 params, 3 metrics "
                         "(metrics + latest_metrics) and 5 mlflow.* tags")


# --- 4: verify ------------------------------------------------------------------------------------------------


_worker_factory: RunFactory | None = None


def build_bodies(span: tuple[int, int]) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """In a worker process: runs start..stop-1 as (run_id, [(kind, body, recorded_at)]): a launched entry carrying
    the record (ledger.record.launch_payload) and a finished entry carrying the outcome, as the ledger writes them."""
    from ledger.record import build_entry_body, launch_payload

    global _worker_factory
    if _worker_factory is None:
        _worker_factory = RunFactory()
    factory = _worker_factory
    factory.rng = random.Random(span[0])  # deterministic, whichever worker builds the span
    runs = []
    for i in range(*span):
        launched = factory.record(i, finished=False)
        created = EPOCH + timedelta(seconds=37 * i)
        outcome = factory.outcome(i, launched.job_name, created, finished=True)
        facts = []
        for kind, payload, at in (
            ("run.launched", launch_payload(launched), created + timedelta(seconds=1)),
            ("run.finished", {"outcome": outcome.model_dump(mode="json")}, created + timedelta(seconds=700)),
        ):
            recorded_at = _iso(at)
            facts.append((kind, build_entry_body(kind, launched.run_id, payload, recorded_at), recorded_at))
        runs.append((launched.run_id, facts))
    return runs


def build_verify_db(url: str, path: Path, entries: int) -> int:
    """`entries` entries (a launched and a finished entry a run) with the ledger's own functions: bodies by
    build_entry_body (in worker processes), the chain by chain_hash in seq order, each run's record by fold_entries
    and its projection rows by build_projection, as `record_outcome` does. Returns the number of entries."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from ledger import open_ledger
    from ledger.record import ZERO_HASH, chain_hash, fold_entries
    from ledger.store.projection import RUN_COLUMNS, build_projection

    open_ledger(url).engine.dispose()  # the schema, made by the ledger's own migrations
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")  # 256 MB: the hash indexes take random inserts
    columns = ", ".join(RUN_COLUMNS)
    object_columns = ("run_id", "channel", "key", "bucket", "version_id", "etag", "size")
    seq, prev = 0, ZERO_HASH
    rows: dict[str, list] = {"entries": [], "runs": [], "params": [], "metrics": [], "data_objects": []}

    def flush() -> None:
        with db:
            db.executemany("INSERT INTO entries (seq, run_id, kind, body, prev_hash, entry_hash, recorded_at) "
                           "VALUES (?,?,?,?,?,?,?)", rows["entries"])
            db.executemany(f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                           rows["runs"])
            db.executemany("INSERT INTO params (run_id, key, value) VALUES (?,?,?)", rows["params"])
            db.executemany("INSERT INTO metrics (run_id, key, value) VALUES (?,?,?)", rows["metrics"])
            db.executemany(f"INSERT INTO data_objects ({', '.join(object_columns)}) VALUES (?,?,?,?,?,?,?)",
                           rows["data_objects"])
        for bucket in rows.values():
            bucket.clear()

    runs, span = entries // 2, 2_000
    spans = [(start, min(start + span, runs)) for start in range(0, runs, span)]
    workers = max(1, (os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for done, built in enumerate(pool.map(build_bodies, spans), 1):
            for run_id, facts in built:
                folded = []
                for kind, body, recorded_at in facts:
                    seq += 1
                    entry_hash = chain_hash(prev, body)
                    rows["entries"].append((seq, run_id, kind, body, prev, entry_hash, recorded_at))
                    folded.append((seq, body, prev, entry_hash))
                    prev = entry_hash
                projection = build_projection(fold_entries(folded))
                rows["runs"].append(tuple(projection.run[c] for c in RUN_COLUMNS))
                rows["params"] += [(p["run_id"], p["key"], p["value"]) for p in projection.params]
                rows["metrics"] += [(m["run_id"], m["key"], m["value"]) for m in projection.metrics]
                rows["data_objects"] += [tuple(d[c] for c in object_columns) for d in projection.data_objects]
            flush()
            if done % max(1, len(spans) // 5) == 0:
                say(f"  built {seq:>10,} entries")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return seq


def bench_verify(tmp: Path, entries: int, reps: int, profile_it: bool,
                 results: Results) -> None:
    from ledger import open_ledger

    path = tmp / "verify.db"
    url = f"sqlite:///{path}"
    timing, count = timed(lambda: build_verify_db(url, path, entries))
    size_mb = path.stat().st_size / 1e6
    say(f"verify ledger: {count:,} entries ({count // 2:,} runs), {size_mb:,.0f} MB, built in {timing.wall:.0f} s "
        "(not measured)")
    book = open_ledger(url)
    with sqlite3.connect(path) as db:
        body_bytes = db.execute("SELECT sum(length(CAST(body AS BLOB))) FROM entries").fetchone()[0]

    def check(report) -> None:
        assert report.ok and report.entries == count, report.problems[:3]

    chain = median_time(lambda: book.verify(check_projections=False), reps, check)
    rate = count / chain.wall
    say(f"verify(check_projections=False), the chain: {count:,} entries, median of {reps}: {chain.wall:.2f} s "
        f"(CPU {chain.cpu:.2f} s) = {rate:,.0f} entries/s ({body_bytes / chain.wall / 1e6:,.0f} MB of bodies/s; "
        f"mean body {body_bytes / count:,.0f} bytes)")
    full, report = timed(lambda: book.verify())
    check(report)
    say(f"verify(), chain and projections: {count:,} entries, 1 run: {full.wall:.1f} s (CPU {full.cpu:.1f} s) = "
        f"{count / full.wall:,.0f} entries/s")
    results.add(f"verify chain only, {count:,} entries (entries/s)", f"{rate:,.0f}", f"{count / chain.cpu:,.0f}",
                ">= 200,000", "", verdict(rate >= 200_000))
    results.add(f"verify with projections, {count // 2:,} runs (entries/s)", f"{count / full.wall:,.0f}",
                f"{count / full.cpu:,.0f}", "(no target)", "", "info")
    results.notes.append(f"verify: {count // 2:,} runs x (run.launched + run.finished), bulk inserted with the chain "
                         f"by ledger.record.build_entry_body/chain_hash, projections by fold_entries + build_projection; mean body "
                         f"{body_bytes / count:,.0f} bytes; chain check: median of {reps}, full verify: 1 run")
    if profile_it:
        profile("verify(check_projections=False)", lambda: book.verify(check_projections=False))
        profile("verify() with projections", lambda: book.verify())
    book.engine.dispose()


# --- main -----------------------------------------------------------------------------------------------------


def print_table(results: Results) -> None:
    headers = ("figure", "measured", "by CPU time", "target", "MLflow / ledger", "")
    table = [headers] + [(r.figure, r.measured, r.cpu, r.target, r.peer_ratio, r.verdict) for r in results.rows]
    widths = [max(len(row[n]) for row in table) for n in range(len(headers))]
    say("")
    for n, row in enumerate(table):
        say("  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            say("  ".join("-" * w for w in widths))
    say("* measured: wall time (the targets are wall time); by CPU time: the same figure from this process's CPU "
        "seconds, nearer what an idle machine gives when other work competes for the cores")
    for note in results.notes:
        say(f"* {note}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="runs for appends and queries (default 100,000)")
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries for verify (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=1_000, help="runs per append_many call (default 1,000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each cheap timing (default 5)")
    parser.add_argument("--mlflow-reps", type=int, default=1,
                        help="repetitions of mlflow.search_runs over all runs (default 1: ~2 minutes each at 100k)")
    parser.add_argument("--outcome-calls", type=int, default=200, help="record_outcome calls timed (default 200)")
    parser.add_argument("--quick", action="store_true", help="10,000 runs, 50,000 entries, 3 reps: a smoke run")
    parser.add_argument("--skip-mlflow", action="store_true", help="leave out the MLflow peer")
    parser.add_argument("--profile", action="store_true", help="also print cProfile hot spots of each figure")
    parser.add_argument("--packages", type=int, default=None,
                        help="record only N of this interpreter's packages in the environment pin (default: all, "
                             "~200): smaller bodies, to see how the figures depend on the record's size")
    parser.add_argument("--keep", action="store_true", help="keep the temporary LEDGER_HOME and print where")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.entries, args.reps = min(args.runs, 10_000), min(args.entries, 50_000), min(args.reps, 3)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that a killed run still removes its files
    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    for name in ("LEDGER_DB_URL", "LEDGER_MLFLOW_URI", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    os.environ["LEDGER_HOME"] = str(tmp / "home")
    results = Results()
    try:
        from ledger import open_ledger

        say(f"bench_store: {args.runs:,} runs, {args.entries:,} entries, in {tmp}; python {sys.version.split()[0]}, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        RunFactory.packages = args.packages  # a class attribute, so that the verify builder's workers see it too
        factory = RunFactory()
        book = open_ledger()  # the default SQLite file in the fresh LEDGER_HOME
        ledger_db = tmp / "home" / "ledger.db"
        say(f"\n1. appends ({args.runs:,} runs into {ledger_db.name})")
        depth_of = bench_appends(book, factory, args.runs, args.batch, results)

        say(f"\n2. queries over {args.runs:,} runs")
        load, filtered = bench_queries(book, args.runs, depth_of, args.reps)
        filtered_rows = sum(1 for d in depth_of.values() if d == FILTER_VALUE)

        if not args.skip_mlflow:
            say(f"\n3. the peer: mlflow.search_runs over the same {args.runs:,} runs")
            bench_mlflow(tmp, ledger_db, args.runs, filtered_rows, args.mlflow_reps, args.reps, load, filtered,
                         results)
        else:
            add_query_rows(results, args.runs, filtered_rows, load, filtered)

        if args.outcome_calls:
            bench_record_outcome(book, factory, args.runs, args.outcome_calls, results)

        if args.profile:
            extra = [factory.record(i) for i in range(10**7, 10**7 + args.batch)]
            profile(f"append_many of {args.batch:,} runs", lambda: book.append_many(extra))
            profile("runs()", lambda: book.runs())
            profile("runs(where=...)", lambda: book.runs(where=f"params.{FILTER_PARAM} = '{FILTER_VALUE}'"))
            target = extra[0].run_id
            outcome = factory.outcome(0, extra[0].job_name, EPOCH, finished=True)
            profile("record_outcome, 20 calls", lambda: [book.record_outcome(target, outcome) for _ in range(20)])
        book.engine.dispose()

        say(f"\n4. verify over {args.entries:,} entries")
        bench_verify(tmp, args.entries, min(args.reps, 3), args.profile, results)
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(results)
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say(f"* whole run: {time.perf_counter() - began:.0f} s; peak memory {peak_mb:,.0f} MB; "
        f"load average at the end {os.getloadavg()[0]:.1f} (other work on the machine skews every figure)")
    return 0 if all(r.verdict != "FAIL" for r in results.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
