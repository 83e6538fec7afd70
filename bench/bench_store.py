"""The store at scale, beside MLflow, in one run (by hand, not in CI). Issue 16, "Speed and scale" (and issue 2).

Everything happens in a fresh temporary LEDGER_HOME with its own SQLite files (and, for PostgreSQL, a new database
on the server named by --postgres, dropped at the end); --keep keeps the files. Every phase prints its wall time,
its CPU time and its peak memory (the process's resident high-water mark, reset before the phase through
/proc/self/clear_refs; a child process's own peak where the phase runs the `ledger` command).

Runs are shaped like the demo's: an XGBoost job launched from a notebook (20 hyperparameters, two S3 channels, the
image by digest, the git commit, this interpreter's real package list), 3 final metrics and, as the demo's jobs
report them, a series of every round's metrics (50 rounds x 3 metrics).

1. appends: `Ledger.append_many` of --runs runs in batches of --batch, each run's outcome in its launched record
   (one entry a run). Aim: >= 2,000 runs/s (median batch).
2. queries on SQLite: `Ledger.runs()` into a DataFrame (aim < 2 s), `runs(where="params.max_depth = '7'")`
   (aim < 0.2 s), medians of --reps.
3. the same runs appended to PostgreSQL and the same two queries there (same aims).
4. the peer: `mlflow.search_runs` over the same runs in an MLflow SQLite store that MLflow's migrations create and
   bulk SQL fills (runs, 20 params, every step of each metric, latest metrics, 5 mlflow.* tags), checked first
   against a run logged through MLflow's API. Printed: both times and MLflow / ledger.
5. bytes per run: a log of the same --runs runs as the ledger writes them when jobs finish (a run.launched and a
   run.finished entry each, blobs, Merkle tree nodes, projections), built with the ledger's own functions,
   against the MLflow store of 4. Both files after VACUUM. Aim: at most MLflow's.
6. the big log: --entries entries (--entries / 2 runs, a launched and a finished entry each) built the same way:
   a. `ledger verify --full` in a child process, projections included: peak memory (aim < 500 MB) and time;
      also `Ledger.verify(check_projections=False)`, the chain and tree alone, for the rate;
   b. 1,000 new entries (500 runs through append_many, then record_outcome for each), then `Ledger.verify()`
      from the head the full verify remembered: aim < 1 s (and `ledger verify` in a child, start-up included);
   c. `ledger proof RUN`: `build_run_proof` for 20 runs spread over the log, median (aim < 50 ms), and its JSON's
      bytes per entry (aim < 2 KB); `ledger proof RUN --json` in a child, start-up included, for information.

    .venv/bin/python bench/bench_store.py                 # 100,000 runs, 1,000,000 entries (about an hour,
                                                               # ~12 GB of disk)
    .venv/bin/python bench/bench_store.py --quick         # 10,000 runs, 50,000 entries (a few minutes)
    .venv/bin/python bench/bench_store.py --profile       # also print cProfile hot spots of the query figures
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
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
    "num_round": lambda r: "50",
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
ROUNDS = 50  # the demo's num_round: one point of each metric a round
FILTER_PARAM, FILTER_VALUE = "max_depth", "7"
ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"
DIGEST = "sha256:" + "4f" * 32
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
MB = 1 << 20


# --- runs shaped like real runs -------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class RunFactory:
    """RunRecords as capture would make them for an XGBoost job launched from a notebook, like the demo's: the
    outcome with 3 final metrics and every round's. Deterministic."""

    packages: int | None = None
    """Keep only this many of the environment's packages (--packages); None keeps them all."""

    def __init__(self, seed: int = 7, rounds: int = ROUNDS):
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
        self.rounds = rounds  # 0: the outcome without a series (the runs of issue 2's figures)
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
        final = {"train:rmse": round(rmse * r.uniform(0.7, 0.95), 6), "validation:mae": round(rmse * 0.8, 6),
                 "validation:rmse": round(rmse, 6)}
        started = created + timedelta(seconds=90)
        rounds = self.rounds
        series = [{"name": name, "step": step, "timestamp": _iso(started + timedelta(seconds=12 * step)),
                   "value": round(value * (1 + (rounds - 1 - step) / rounds) * r.uniform(0.99, 1.01), 5)
                   if step < rounds - 1 else value}
                  for step in range(rounds) for name, value in final.items()]
        return Outcome(
            status="Completed", arn=arn, started_at=_iso(started),
            ended_at=_iso(created + timedelta(seconds=90 + 600)), billable_seconds=600 + i % 300,
            failure_reason=None, metrics=final, **({"metric_series": series} if series else {}),
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
    # (phase, wall s, CPU s, peak MB, resident MB at its start: memory freed earlier may stay resident)
    phases: list[tuple[str, float, float, float, float]] = field(default_factory=list)
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


def _status_mb(field_name: str) -> float:
    match = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    return int(match[1]) / 1024 if match else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def phase(results: Results, name: str):
    """Time a phase and take its peak resident memory: the high-water mark is reset first (Linux 4.0+), so the
    figure is this phase's, not the process's whole life."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # then the peak below is the process's so far: still an upper bound
    resident = _status_mb("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    results.phases.append((name, time.perf_counter() - wall, time.process_time() - cpu, _status_mb("VmHWM"),
                           resident))


@dataclass(frozen=True)
class Child:
    wall: float
    peak_mb: float  # the command's own process: its exact high-water mark
    tree_mb: float  # the command and its workers (verify forks some on a large log): the largest sum of their
    # proportional set sizes (a page shared by n processes counts 1/n in each), sampled every 0.1 s
    stdout: str


# The `ledger` command as its console script runs it, in a child that writes its own peak memory at exit: wait4's
# ru_maxrss would also count the parent's, which Linux carries into a child over fork and exec.
CHILD = """
import atexit, re, sys
peak_file = sys.argv.pop(1)
def peak():
    status = open("/proc/self/status").read()
    open(peak_file, "w").write(re.search(r"VmHWM:\\s+(\\d+) kB", status)[1])
atexit.register(peak)
sys.argv[0] = "ledger"
from ledger.cli import run
run()
"""


def _tree_pss(process) -> int:
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_child(args: list[str], env: dict[str, str]) -> Child:
    """Run `ledger ARGS...` as a user would; take its wall time, its own peak memory and its process tree's."""
    import psutil

    with tempfile.TemporaryDirectory() as scratch:
        peak_file, out, err = (Path(scratch) / name for name in ("peak", "out", "err"))
        with out.open("w") as stdout, err.open("w") as stderr:
            began = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-c", CHILD, str(peak_file), *args], env=env,
                                       stdout=stdout, stderr=stderr, text=True)
            watched, tree = psutil.Process(process.pid), 0
            while process.poll() is None:
                try:
                    tree = max(tree, _tree_pss(watched))
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.1)
            process.wait()
            wall = time.perf_counter() - began
        if process.returncode:
            raise SystemExit(f"ledger {' '.join(args)} failed ({process.returncode}): {err.read_text()[-2000:]}")
        return Child(wall, int(peak_file.read_text()) / 1024, tree / MB, out.read_text())


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


# --- 1 to 3: appends and queries, SQLite and PostgreSQL -------------------------------------------------------


def bench_appends(book, factory: RunFactory, runs: int, batch: int, results: Results, label: str,
                  aim: bool = True) -> dict[str, str]:
    """Load `runs` runs with append_many in batches; returns {run_id: max_depth} for checking the filters. `aim`:
    the rate is held to the aim (else printed for information)."""
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
        if done % max(batch, runs // 5) == 0 or done == runs:
            say(f"  appended {done:>9,} runs   this batch {rates[-1]:>8,.0f} runs/s ({cpu_rates[-1]:,.0f}/s by CPU time)")
    median_rate, median_cpu_rate = statistics.median(rates), statistics.median(cpu_rates)
    say(f"append_many on {label}, batches of {batch:,}: median {median_rate:,.0f} runs/s ({median_cpu_rate:,.0f}/s by "
        f"CPU time); sustained {runs / total:,.0f} runs/s over {runs:,} runs ({total:.1f} s); first batch "
        f"{rates[0]:,.0f}/s, last {rates[-1]:,.0f}/s")
    results.add(f"{label}: append_many, batch {batch:,} (runs/s, median of {len(rates)})", f"{median_rate:,.0f}",
                f"{median_cpu_rate:,.0f}", ">= 2,000" if aim else "(no target)", "",
                verdict(median_rate >= 2000) if aim else "info")
    return depth_of


def entry_sizes(factory: RunFactory) -> tuple[int, int, int]:
    """(bytes of a launched entry as stored, of its finished entry, of the same launch with everything inline)."""
    from ledger.record import build_entry_body, launch_payload, plan_launch_entry, plan_small_payload

    launched = factory.record(0, finished=False)
    outcome = factory.outcome(0, launched.job_name, EPOCH, finished=True)
    small, _ = plan_launch_entry(launched)
    finished, _ = plan_small_payload("run.finished", {"outcome": outcome.model_dump(mode="json")})
    return (len(build_entry_body("run.launched", launched.run_id, small).encode()),
            len(build_entry_body("run.finished", launched.run_id, finished).encode()),
            len(build_entry_body("run.launched", launched.run_id, launch_payload(launched)).encode()))


def bench_queries(book, runs: int, depth_of: dict[str, str], reps: int, label: str) -> tuple[Timing, Timing]:
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
    say(f"{label}: ledger.runs(): {runs:,} runs into a DataFrame, median of {reps}: {load.wall:.3f} s "
        f"(CPU {load.cpu:.3f} s)")
    filtered = median_time(lambda: book.runs(where=where), reps, check_filtered)
    say(f'{label}: ledger.runs(where="{where}"): {len(expected):,} runs, median of {reps}: {filtered.wall:.3f} s '
        f"(CPU {filtered.cpu:.3f} s)")
    return load, filtered


def add_query_rows(results: Results, label: str, runs: int, filtered_rows: int, load: Timing, filtered: Timing,
                   peer_load: Timing | None = None, peer_filtered: Timing | None = None) -> None:
    results.add(f"{label}: runs(), {runs:,} runs -> DataFrame (s)", f"{load.wall:.3f}", f"{load.cpu:.3f}", "< 2",
                f"{peer_load.wall / load.wall:.1f}x" if peer_load else "-", verdict(load.wall < 2))
    results.add(f"{label}: runs(where={FILTER_PARAM}={FILTER_VALUE}), {filtered_rows:,} runs (s)",
                f"{filtered.wall:.3f}", f"{filtered.cpu:.3f}", "< 0.2",
                f"{peer_filtered.wall / filtered.wall:.1f}x" if peer_filtered else "-", verdict(filtered.wall < 0.2))


@contextmanager
def postgres_database(admin_url: str):
    """A new database on the server of `admin_url` (a libpq URL to an existing database), dropped afterwards;
    yields its SQLAlchemy URL."""
    import psycopg

    name = f"ledger_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- 4: MLflow, the peer --------------------------------------------------------------------------------------


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

    from ledger.store.blobs import decode_blob

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
    cursor = source.execute(
        "SELECT r.run_id, r.job_name, r.created_at, r.params_json, r.code_commit, e.body FROM runs r "
        "JOIN entries e ON e.run_id = r.run_id AND e.kind = 'run.launched' WHERE r.status = 'Completed' "
        "ORDER BY r.run_id")
    blob_reader = sqlite3.connect(ledger_db)
    while chunk := cursor.fetchmany(10_000):
        runs, params, metrics, latest, tags = [], [], [], [], []
        for run_id, job_name, created_at, params_json, commit, body in chunk:
            uuid = _mlflow_id(run_id)
            start = int(datetime.fromisoformat(created_at).timestamp() * 1000)
            end = start + 690_000
            runs.append((uuid, job_name, "NOTEBOOK", "", "", "alice", "FINISHED", start, end, "", "active",
                         f"{artifact_root}/{uuid}/artifacts", int(experiment_id), None))
            params += [(k, v, uuid) for k, v in json.loads(params_json).items()]
            # every round's metrics, as MLflow's XGBoost autolog logs them: the series the ledger keeps as a blob
            digest = json.loads(body)["payload"]["outcome"]["metric_series_sha256"]
            stored, encoding = blob_reader.execute("SELECT data, encoding FROM blobs WHERE sha256 = ?",
                                                   (digest,)).fetchone()
            last: dict[str, tuple] = {}
            for point in json.loads(decode_blob(stored, encoding)):
                at = int(datetime.fromisoformat(point["timestamp"]).timestamp() * 1000)
                row = (point["name"], point["value"], at, uuid, point["step"], 0)
                metrics.append(row)
                last[point["name"]] = row
            latest += last.values()
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
                           "VALUES (?,?,?,?,?,?)", latest)
            db.executemany('INSERT INTO tags ("key", value, run_uuid) VALUES (?,?,?)', tags)
        count += len(chunk)
    blob_reader.close()
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
                 load: Timing, filtered: Timing, results: Results) -> Path:
    """search_runs over the same runs; returns the MLflow store's path (for its bytes per run)."""
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
    say(f"ratio MLflow / ledger on SQLite (wall): all runs {everything.wall / load.wall:.1f}x, "
        f"filter {subset.wall / filtered.wall:.1f}x")
    add_query_rows(results, "SQLite", runs, filtered_rows, load, filtered, everything, subset)
    results.add(f"peer mlflow.search_runs, {runs:,} runs (s)", f"{everything.wall:.2f}", f"{everything.cpu:.2f}",
                "", "", "peer")
    results.add("peer mlflow.search_runs, filter (s)", f"{subset.wall:.2f}", f"{subset.cpu:.2f}", "", "", "peer")
    results.notes.append(f"MLflow: {'1 run' if reps_all == 1 else f'median of {reps_all}'} (all runs, after a "
                         f"1,000-run warm-up) and median of {reps_filter} (filter); runs carry 20 params, "
                         f"{len(METRICS)} metrics x {ROUNDS} steps (metrics) and their latest values "
                         "(latest_metrics), 5 mlflow.* tags")
    return mlflow_db


# --- 5 and 6: logs as the ledger writes them, built with its own functions ------------------------------------


_worker: tuple[RunFactory, set[str]] | None = None


def build_runs(span: tuple[int, int]) -> list[tuple]:
    """In a worker process: runs start..stop-1, each as the ledger writes a job that finished: a run.launched entry
    (`plan_launch_entry`) and a run.finished entry (`plan_small_payload`), the blobs they name (each sent once by
    this worker, already encoded as the store keeps it), and the projection rows the folded run implies
    (`build_projection`; its last_seq and last_hash are the parent's to fill in, as only it knows the chain)."""
    from ledger.record import build_entry_body, fold_entries, plan_launch_entry, plan_small_payload
    from ledger.store.blobs import encode_blob
    from ledger.store.projection import build_projection

    global _worker
    if _worker is None:
        _worker = (RunFactory(), set())
    factory, sent = _worker
    factory.rng = random.Random(span[0])  # deterministic, whichever worker builds the span
    built = []
    for i in range(*span):
        launched = factory.record(i, finished=False)
        created = EPOCH + timedelta(seconds=37 * i)
        outcome = factory.outcome(i, launched.job_name, created, finished=True)
        launch, blobs = plan_launch_entry(launched)
        finish, more = plan_small_payload("run.finished", {"outcome": outcome.model_dump(mode="json")})
        facts = []
        for kind, payload, at in (("run.launched", launch, created + timedelta(seconds=1)),
                                  ("run.finished", finish, created + timedelta(seconds=700))):
            recorded_at = _iso(at)
            facts.append((kind, build_entry_body(kind, launched.run_id, payload, recorded_at), recorded_at))
        encoded = []
        for digest, data in {**blobs, **more}.items():
            if digest not in sent:
                sent.add(digest)
                encoded.append((digest, len(data), *encode_blob(data)))
        projection = build_projection(fold_entries([(n, body, "", "") for n, (_, body, _) in enumerate(facts, 1)]))
        built.append((launched.run_id, facts, encoded, projection))
    return built


def build_log(url: str, path: Path, runs: int) -> int:
    """A SQLite ledger of `runs` finished runs (2 entries each) written with the ledger's own functions: entries,
    blobs, Merkle tree nodes (`merkle.CompactRange`, as `append_leaves` stores them) and projections. Returns the
    number of entries."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from ledger import merkle, open_ledger
    from ledger.record import ZERO_HASH, chain_hash
    from ledger.store.projection import PROJECTION_TABLES, RUN_COLUMNS

    open_ledger(url).engine.dispose()  # the schema, made by the ledger's own migrations
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")  # 256 MB: the hash indexes take random inserts
    tables = {"entries": ("seq", "run_id", "kind", "body", "prev_hash", "entry_hash", "recorded_at"),
              "blobs": ("sha256", "size", "data", "encoding"), "tree_nodes": ("level", "idx", "hash"),
              "runs": tuple(RUN_COLUMNS), **PROJECTION_TABLES}
    rows: dict[str, list] = {table: [] for table in tables}
    seen_blobs: set[str] = set()
    tree = merkle.CompactRange()
    seq, prev = 0, ZERO_HASH

    def flush() -> None:
        with db:
            for table, columns in tables.items():
                db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                               rows[table])
                rows[table].clear()

    span = 2_000
    spans = [(start, min(start + span, runs)) for start in range(0, runs, span)]
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=multiprocessing.get_context("fork")) as pool:
        for done, built in enumerate(pool.map(build_runs, spans), 1):
            for run_id, facts, encoded, projection in built:
                for kind, body, recorded_at in facts:
                    seq += 1
                    entry_hash = chain_hash(prev, body)
                    rows["entries"].append((seq, run_id, kind, body, prev, entry_hash, recorded_at))
                    rows["tree_nodes"] += tree.append(merkle.entry_leaf_hash(body))
                    prev = entry_hash
                for digest, size, stored, encoding in encoded:
                    if digest not in seen_blobs:
                        seen_blobs.add(digest)
                        rows["blobs"].append((digest, size, stored, encoding))
                projection.run.update(last_seq=seq, last_hash=prev)
                rows["runs"].append(tuple(projection.run[c] for c in RUN_COLUMNS))
                for table, columns in PROJECTION_TABLES.items():
                    rows[table] += [tuple(row[c] for c in columns) for row in getattr(projection, table)]
            flush()
            if done % max(1, len(spans) // 5) == 0:
                say(f"  built {seq:>10,} entries")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return seq


def vacuumed_size(path: Path) -> int:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
    return path.stat().st_size


def table_bytes(path: Path) -> dict[str, int]:
    """Bytes of each table with its indexes (SQLite's dbstat), or {} where SQLite was built without it."""
    try:
        with sqlite3.connect(path) as db:
            names = dict(db.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
            sizes: dict[str, int] = {}
            for name, size in db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"):
                table = names.get(name, name)
                sizes[table] = sizes.get(table, 0) + size
            return sizes
    except sqlite3.Error:
        return {}


def bench_bytes_per_run(tmp: Path, runs: int, mlflow_db: Path | None, results: Results) -> None:
    path = tmp / "finished-runs.db"
    timing, count = timed(lambda: build_log(f"sqlite:///{path}", path, runs))
    say(f"a log of {runs:,} finished runs ({count:,} entries) built in {timing.wall:.0f} s (not measured)")
    ledger_bytes = vacuumed_size(path)
    by_table = table_bytes(path)
    shares = ", ".join(f"{table} {size / runs:,.0f}" for table, size in sorted(by_table.items(), key=lambda kv: -kv[1])
                       if size / runs >= 10)
    say(f"ledger: {ledger_bytes / runs:,.0f} bytes a run ({ledger_bytes / MB:,.0f} MB after VACUUM); by table: "
        f"{shares}")
    if mlflow_db is None:
        results.add(f"bytes per run in the store, {runs:,} runs", f"{ledger_bytes / runs:,.0f}", "", "<= MLflow's",
                    "-", "info")
        return
    mlflow_bytes = vacuumed_size(mlflow_db)
    mlflow_tables = table_bytes(mlflow_db)
    shares = ", ".join(f"{table} {size / runs:,.0f}" for table, size in
                       sorted(mlflow_tables.items(), key=lambda kv: -kv[1]) if size / runs >= 10)
    say(f"MLflow: {mlflow_bytes / runs:,.0f} bytes a run ({mlflow_bytes / MB:,.0f} MB after VACUUM); by table: "
        f"{shares}")
    results.add(f"bytes per run in the store, {runs:,} runs like the demo's", f"{ledger_bytes / runs:,.0f}", "",
                f"<= {mlflow_bytes / runs:,.0f}", f"{mlflow_bytes / ledger_bytes:.2f}x",
                verdict(ledger_bytes <= mlflow_bytes))
    results.notes.append("bytes per run: the ledger holds each run's whole record (request, pins, the series) with "
                         "its chain, Merkle tree and projections; MLflow the same runs' params, metrics with every "
                         "step, latest metrics and tags. Both SQLite files after VACUUM.")


def bench_big_log(tmp: Path, entries: int, reps: int, results: Results, env: dict[str, str]) -> None:
    from ledger import open_ledger
    from ledger.audit.proofs import build_run_proof
    from ledger.store.integrity import load_verified_head

    path = tmp / "big.db"
    url = f"sqlite:///{path}"
    with phase(results, f"build a log of {entries:,} entries"):
        timing, count = timed(lambda: build_log(url, path, entries // 2))
    say(f"the big log: {count:,} entries ({count // 2:,} runs), {path.stat().st_size / MB:,.0f} MB, built in "
        f"{timing.wall:.0f} s (not measured)")
    env = {**env, "LEDGER_DB_URL": url}

    # a. everything, projections included, as a user runs it
    child = run_child(["verify", "--full"], env)
    assert child.stdout.startswith("OK:"), child.stdout
    peak = max(child.peak_mb, child.tree_mb)
    say(f"`ledger verify --full`, {count:,} entries with projections: {child.wall:.1f} s; peak {child.peak_mb:,.0f} "
        f"MB in its process, {child.tree_mb:,.0f} MB with its chain workers (the largest sum of their proportional "
        "set sizes)")
    results.phases.append((f"ledger verify --full ({count:,} entries, a child process and its workers)", child.wall,
                           float("nan"), peak, float("nan")))
    results.add(f"verify --full with projections, {count:,} entries: peak memory (MB)", f"{peak:,.0f}", "",
                "< 500", "", verdict(peak < 500))
    results.add(f"verify --full with projections, {count:,} entries (s)", f"{child.wall:.1f}", "", "(no target)",
                "", "info")
    book = open_ledger(url)
    with phase(results, f"Ledger.verify(check_projections=False), {count:,} entries"):
        chain = median_time(lambda: book.verify(check_projections=False), reps,
                            lambda report: report.ok or sys.exit(f"verify failed: {report.problems[:3]}"))
    say(f"Ledger.verify(check_projections=False): median of {reps}: {chain.wall:.2f} s = {count / chain.wall:,.0f} "
        "entries/s (chain, Merkle tree and blobs)")
    results.add(f"verify chain + tree + blobs, {count:,} entries (entries/s)", f"{count / chain.wall:,.0f}",
                f"{count / chain.cpu:,.0f}", "(no target)", "", "info")

    # b. what is new since the head verified last
    remembered = load_verified_head(book)
    assert remembered and remembered.size == count, remembered
    factory = RunFactory(seed=11)
    with phase(results, "1,000 new entries (500 runs: append_many + record_outcome)"):
        new = [factory.record(10**8 + n, finished=False) for n in range(500)]
        book.append_many(new)
        for n, record in enumerate(new):
            book.record_outcome(record.run_id, factory.outcome(10**8 + n, record.job_name, EPOCH, finished=True))
    with phase(results, "Ledger.verify() of the 1,000 new entries"):
        since, report = timed(lambda: book.verify(since=remembered, remembered=remembered))
    assert report.ok and report.checked_from == count + 1 and report.entries == count + 1000, report
    child = run_child(["verify"], env)
    assert child.stdout.startswith("OK:"), child.stdout
    say(f"Ledger.verify() from the remembered head, 1,000 new entries on {count:,}: {since.wall:.3f} s (CPU "
        f"{since.cpu:.3f} s); `ledger verify` in a child, start-up included: {child.wall:.2f} s, peak "
        f"{max(child.peak_mb, child.tree_mb):,.0f} MB")
    results.add(f"verify after 1,000 new entries on {count:,} (s)", f"{since.wall:.3f}", f"{since.cpu:.3f}", "< 1",
                "", verdict(since.wall < 1))
    results.add("  the same, `ledger verify` with Python's start-up (s)", f"{child.wall:.2f}", "", "(no target)", "",
                "info")

    # c. a run's proof
    with sqlite3.connect(path) as db:
        picks = [db.execute("SELECT run_id FROM runs ORDER BY run_id LIMIT 1 OFFSET ?", (n * (count // 2) // 20,))
                 .fetchone()[0] for n in range(20)]
    times, paths, whole = [], [], []
    with phase(results, "build_run_proof, 20 runs"):
        for run_id in picks:
            build_run_proof(book, run_id)  # warm the run's pages, as a second call would find them
            timing, proof = timed(lambda run_id=run_id: build_run_proof(book, run_id))
            times.append(timing.wall)
            items = proof["entries"]
            paths.append(statistics.mean(len(json.dumps(item["audit_path"])) for item in items))
            whole.append(len(json.dumps({k: proof[k] for k in ("tree_size", "root_hash", "checkpoint", "entries")}))
                         / len(items))
            check_proof(proof)
    child = run_child(["proof", picks[0], "--json"], env)
    assert json.loads(child.stdout)["tree_size"] == count + 1000
    proof_ms = statistics.median(times) * 1000
    path_bytes, per_entry = statistics.median(paths), statistics.median(whole)
    say(f"build_run_proof on {count + 1000:,} entries: median of 20 runs {proof_ms:.2f} ms; an entry's audit path "
        f"{path_bytes:,.0f} bytes of JSON ({len(items[0]['audit_path'])} hashes); with its stored body and the "
        f"checkpoint, {per_entry:,.0f} bytes an entry; `ledger proof RUN --json` in a child, start-up included: "
        f"{child.wall:.2f} s")
    results.add(f"ledger proof RUN on {count + 1000:,} entries (ms, median of 20)", f"{proof_ms:.2f}", "", "< 50", "",
                verdict(proof_ms < 50))
    results.add("  proof of an entry: its audit path (bytes)", f"{path_bytes:,.0f}", "", "< 2,048", "",
                verdict(path_bytes < 2048))
    results.add("  the JSON an entry, its body and the checkpoint included (bytes)", f"{per_entry:,.0f}", "",
                "(no target)", "", "info")
    results.add("  the same, `ledger proof RUN --json` with Python's start-up (s)", f"{child.wall:.2f}", "",
                "(no target)", "", "info")
    book.engine.dispose()


def check_proof(proof: dict) -> None:
    """The proof checks out (RFC 9162 2.1.3.2), as a reviewer's verifier would find."""
    from ledger import merkle

    for item in proof["entries"]:
        leaf = merkle.leaf_hash(item["body"].encode("utf-8"))
        assert merkle.verify_inclusion(leaf, item["leaf_index"], proof["tree_size"],
                                       [bytes.fromhex(h) for h in item["audit_path"]], bytes.fromhex(proof["root_hash"]))


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
    say("\npeak memory of each phase: the resident high-water mark, reset before it (in this process: what it held "
        "at the phase's start, some of it freed earlier but kept by the allocator, counts too)")
    width = max(len(name) for name, *_ in results.phases)
    for name, wall, cpu, peak, resident in results.phases:
        cpu_text = " " * 16 if cpu != cpu else f"  CPU {cpu:8.1f} s"
        start = "" if resident != resident else f"  (resident at its start {resident:7,.0f} MB)"
        say(f"  {name.ljust(width)}  {wall:8.1f} s{cpu_text}  peak {peak:7,.0f} MB{start}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000, help="runs for appends, queries and bytes per run "
                                                                  "(default 100,000)")
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries of the big log (default 1,000,000)")
    parser.add_argument("--batch", type=int, default=1_000, help="runs per append_many call (default 1,000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each cheap timing (default 5)")
    parser.add_argument("--mlflow-reps", type=int, default=1,
                        help="repetitions of mlflow.search_runs over all runs (default 1: ~2 minutes each at 100k)")
    parser.add_argument("--postgres", default=os.environ.get("LEDGER_TEST_PG",
                                                             "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="a libpq URL of the PostgreSQL server to make a scratch database on (default: "
                             "$LEDGER_TEST_PG, else postgres@127.0.0.1:5432)")
    parser.add_argument("--quick", action="store_true", help="10,000 runs, 50,000 entries, 3 reps: a smoke run")
    parser.add_argument("--skip-mlflow", action="store_true", help="leave out the MLflow peer")
    parser.add_argument("--skip-postgres", action="store_true", help="leave out PostgreSQL")
    parser.add_argument("--skip-big-log", action="store_true", help="leave out bytes per run and the big log (5, 6)")
    parser.add_argument("--profile", action="store_true", help="also print cProfile hot spots of the queries")
    parser.add_argument("--packages", type=int, default=None,
                        help="record only N of this interpreter's packages in the environment pin (default: all)")
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
    child_env = dict(os.environ)
    results = Results()
    try:
        from ledger import open_ledger

        say(f"bench_store: {args.runs:,} runs, {args.entries:,} entries, in {tmp}; python {sys.version.split()[0]}, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        RunFactory.packages = args.packages  # a class attribute, so that the log builder's workers see it too
        factory = RunFactory()
        launched, finished, inline = entry_sizes(factory)
        say(f"entries of a run: launched {launched:,} bytes, finished {finished:,} bytes (the launch with its "
            f"package list, series and manifests inline: {inline:,} bytes)")
        results.notes.append(f"a run's entries: launched {launched:,} bytes, finished {finished:,} bytes; inline, "
                             f"as before issue 16, the launch alone was {inline:,} bytes")
        book = open_ledger()  # the default SQLite file in the fresh LEDGER_HOME
        ledger_db = tmp / "home" / "ledger.db"
        say(f"\n1. appends: {args.runs:,} runs like the demo's into SQLite")
        with phase(results, f"SQLite: append_many of {args.runs:,} runs with series"):
            depth_of = bench_appends(book, factory, args.runs, args.batch, results, "SQLite, runs with a series",
                                     aim=False)
        filtered_rows = sum(1 for d in depth_of.values() if d == FILTER_VALUE)
        plain_runs = min(args.runs, 20 * args.batch)
        say(f"   and {plain_runs:,} runs as issue 2 measured them (3 final metrics, no series), into another file")
        plain_book = open_ledger(f"sqlite:///{tmp / 'plain.db'}")
        with phase(results, f"SQLite: append_many of {plain_runs:,} runs without series"):
            bench_appends(plain_book, RunFactory(rounds=0), plain_runs, args.batch, results,
                          "SQLite, runs as in issue 2")
        plain_book.engine.dispose()

        say(f"\n2. queries over {args.runs:,} runs in SQLite")
        with phase(results, "SQLite: runs() and runs(where=...)"):
            load, filtered = bench_queries(book, args.runs, depth_of, args.reps, "SQLite")
        if args.profile:
            profile("runs()", lambda: book.runs())
            profile("runs(where=...)", lambda: book.runs(where=f"params.{FILTER_PARAM} = '{FILTER_VALUE}'"))
        book.engine.dispose()

        if not args.skip_postgres:
            say(f"\n3. the same {args.runs:,} runs in PostgreSQL")
            with postgres_database(args.postgres) as pg_url:
                pg_book = open_ledger(pg_url)
                with phase(results, f"PostgreSQL: append_many of {args.runs:,} runs with series"):
                    pg_depth = bench_appends(pg_book, RunFactory(), args.runs, args.batch, results,
                                             "PostgreSQL, runs with a series", aim=False)
                with phase(results, "PostgreSQL: runs() and runs(where=...)"):
                    pg_load, pg_filtered = bench_queries(pg_book, args.runs, pg_depth, args.reps, "PostgreSQL")
                add_query_rows(results, "PostgreSQL", args.runs, sum(d == FILTER_VALUE for d in pg_depth.values()),
                               pg_load, pg_filtered)
                pg_book.engine.dispose()

        mlflow_db = None
        if not args.skip_mlflow:
            say(f"\n4. the peer: mlflow.search_runs over the same {args.runs:,} runs")
            with phase(results, "MLflow: fill and search_runs"):
                mlflow_db = bench_mlflow(tmp, ledger_db, args.runs, filtered_rows, args.mlflow_reps, args.reps, load,
                                         filtered, results)
        else:
            add_query_rows(results, "SQLite", args.runs, filtered_rows, load, filtered)

        if not args.skip_big_log:
            say(f"\n5. bytes per run: {args.runs:,} finished runs as the ledger writes them")
            bench_bytes_per_run(tmp, args.runs, mlflow_db, results)

            say(f"\n6. the big log: {args.entries:,} entries")
            bench_big_log(tmp, args.entries, min(args.reps, 3), results, child_env)
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_table(results)
    say(f"* whole run: {time.perf_counter() - began:.0f} s; load average at the end {os.getloadavg()[0]:.1f} (other "
        "work on the machine skews every figure)")
    return 0 if all(r.verdict != "FAIL" for r in results.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
