"""The MLflow mirror: every ledger run as an MLflow run, fed through an outbox. The log stays the truth.

    outbox       `attach_mirror` adds an append listener: each entry appended queues its run in `mlflow_outbox`,
                 in the same transaction. No MLflow call is ever made while appending.
    plan         `plan_mirror(record)` (pure): the experiment, tags, params, metrics, datasets and artifacts.
    push         `push_outbox(ledger)` mirrors each queued run's current record and marks its rows pushed.
                 `ledger sync` calls it. With an `http(s)://` tracking server it also runs in a background
                 thread right after each append that queued something (best effort: skipped when the server
                 does not answer /health within 3 s); other tracking URIs (the default SQLite store) are
                 mirrored by `ledger sync` only, so capture never pays for importing MLflow.

Pushing is idempotent, so a crash between MLflow and the outbox only means one more push: the MLflow run is found
by its `ledger.run_id` tag (one experiment per project), params and tags already there are not sent again, and
metric points already in the run's history (same key, step, timestamp, value) are skipped. The MLflow run id is
written back as a `run.annotated` entry {mlflow_run_id, mlflow_experiment_id, mlflow_tracking_uri}; an
annotation carrying only those facts does not queue the run again.
"""

from __future__ import annotations

import atexit
import json
import math
import re
import tempfile
import threading
import warnings
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from ledger.errors import NotFound
from ledger.record import RunRecord, sha256_hex, utc_now
from ledger.store.engine import process_lock

OUTBOX = "mlflow_outbox"
MIRROR_FACTS = frozenset({"mlflow_run_id", "mlflow_experiment_id", "mlflow_tracking_uri"})
DATASET_DIGEST_CHARS = 36  # MLflow refuses a dataset digest longer than this; the full one is in the profile
STATUSES = {"Completed": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED"}
_PENDING_FLAG = "ledger.mlflow_outbox_pending"
_BAD_KEY_CHARACTERS = re.compile(r"[^/\w.\- :]")


# --- the outbox: written inside the append transaction --------------------------------------------------------


def build_outbox_rows(entries) -> list[dict]:
    """Pure: one outbox row per entry, except annotations that only carry the mirror's own facts."""
    rows = []
    for entry in entries:
        if entry.kind == "run.annotated" and set(json.loads(entry.body)["payload"]) <= MIRROR_FACTS:
            continue
        rows.append({"run_id": entry.run_id, "seq": entry.seq, "enqueued_at": entry.recorded_at})
    return rows


def save_outbox_rows(conn, entries) -> None:
    """The append listener: queue the entries' runs in the append's own transaction."""
    rows = build_outbox_rows(entries)
    if rows:
        conn.execute(text(f"INSERT INTO {OUTBOX} (run_id, seq, enqueued_at, attempts) "
                          "VALUES (:run_id, :seq, :enqueued_at, 0)"), rows)
        conn.info[_PENDING_FLAG] = True  # seen when the connection goes back to the pool, after commit


def attach_mirror(book) -> None:
    """Called by open_ledger: the outbox listener, and the best-effort push after commit for a tracking server."""
    book.append_listeners.append(save_outbox_rows)
    if is_tracking_server(book.settings.mlflow_uri):

        @event.listens_for(book.engine, "checkin")
        def _after_append(_dbapi_connection, connection_record):
            if connection_record is not None and connection_record.info.pop(_PENDING_FLAG, False):
                _background.schedule(book)


def is_tracking_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


# --- the plan: pure -------------------------------------------------------------------------------------------


@dataclass
class MirrorPlan:
    experiment: str
    run_name: str
    start_ms: int
    end_ms: int | None
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[tuple[str, float, int, int]]  # (key, value, timestamp ms, step)
    datasets: list[dict[str, Any]]  # {name, digest, source, profile}


def mirror_key(name: str) -> str:
    """A name MLflow accepts as a param, metric or tag key."""
    key = _BAD_KEY_CHARACTERS.sub("_", str(name)).strip("/") or "_"
    return key.replace("..", "__")


def _ms(iso: str | None) -> int | None:
    if not iso:
        return None
    return int(datetime.fromisoformat(iso).timestamp() * 1000)  # Python 3.11 reads the trailing Z


MLFLOW_PARAM_CHARS = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH: MLflow refuses a longer param value


def build_param_value(value: str) -> str:
    """Pure: a hyperparameter as an MLflow param (already redacted). One longer than MLflow takes is cut, and says
    so with the whole value's sha256: the ledger keeps the whole value; refusing the run would mirror nothing."""
    if len(value) <= MLFLOW_PARAM_CHARS:
        return value
    note = f"… [cut by the ledger: {len(value)} characters, sha256 {sha256_hex(value)}]"
    return value[: MLFLOW_PARAM_CHARS - len(note)] + note


def plan_mirror(record: RunRecord) -> MirrorPlan:
    pins, outcome = record.pins, record.outcome
    code, hardware = pins.code, pins.hardware
    created = _ms(record.created_at) or 0
    ended = _ms(outcome.ended_at)
    status = STATUSES.get(outcome.status or "", "RUNNING")
    source = (pins.hyperparameters.get("sagemaker_program")
              or (record.request.get("AlgorithmSpecification") or {}).get("TrainingImage") or record.job_name)
    artifact = outcome.model_artifact
    tags = {
        "mlflow.runName": record.job_name,
        "mlflow.user": record.created_by,
        "mlflow.source.type": "JOB",
        "mlflow.source.name": source.strip('"'),
        "mlflow.source.git.commit": code.commit,
        "mlflow.source.git.repoURL": code.repo_url,
        "mlflow.source.git.branch": code.branch,
        "ledger.run_id": record.run_id,
        "ledger.project": record.project,
        "ledger.backend": record.backend,
        "ledger.status": outcome.status,
        "ledger.image_digest": pins.image.digest,
        "ledger.image_uri": pins.image.pinned_uri or pins.image.uri,
        "ledger.image.stood_in": pins.image.stood_in(),  # a local run: what ran in place of the image
        "ledger.hardware.requested": hardware.describe_requested(),
        "ledger.hardware.ran": hardware.describe_ran(record.backend),
        "ledger.gap_count": str(len(pins.gaps)),
        "ledger.verdict": record.verdict.result if record.verdict else None,
        "ledger.reproduction_of": record.reproduction_of,
        "ledger.code.dirty": None if code.dirty is None else str(code.dirty).lower(),
        "ledger.code.diff_sha256": code.diff_sha256,
        "ledger.environment.fingerprint": pins.environment.fingerprint,
        "ledger.model.uri": artifact.uri if artifact else None,
        "ledger.model.tree_sha256": artifact.tree_sha256 if artifact else None,
    }
    for channel, pin in sorted(pins.data.items()):
        tags[f"ledger.data.{mirror_key(channel)}.manifest_sha256"] = pin.manifest_sha256
    tags = {key: str(value) for key, value in tags.items() if value not in (None, "")}

    params = {mirror_key(k): build_param_value(str(v)) for k, v in sorted(pins.hyperparameters.items())}
    for key, value in (("instance_type", hardware.instance_type), ("instance_count", hardware.instance_count)):
        if value is not None:
            params.setdefault(key, str(value))

    metrics: list[tuple[str, float, int, int]] = []
    last_point: dict[str, tuple[float, int]] = {}
    for point in (outcome.model_extra or {}).get("metric_series") or []:
        value = point.get("value")
        if value is None or not math.isfinite(float(value)):
            continue
        key, step = mirror_key(point["name"]), int(point.get("step") or 0)
        metrics.append((key, float(value), _ms(point.get("timestamp")) or ended or created, step))
        last_point[key] = (float(value), step)
    for name, value in sorted(outcome.metrics.items()):
        if value is None or not math.isfinite(float(value)):
            continue
        key = mirror_key(name)
        if key in last_point and last_point[key][0] == float(value):
            continue  # the series already ends with the final value
        step = last_point[key][1] + 1 if key in last_point else 0
        metrics.append((key, float(value), ended or created, step))

    datasets = []
    for channel, pin in sorted(pins.data.items()):
        profile = {"manifest_sha256": pin.manifest_sha256, "object_count": pin.object_count,
                   "total_bytes": pin.total_bytes, "pinned": pin.pinned, "snapshot_uri": pin.snapshot_uri}
        datasets.append({"name": channel, "digest": (pin.manifest_sha256 or "unpinned")[:DATASET_DIGEST_CHARS],
                         "source": pin.uri, "profile": profile})
    return MirrorPlan(experiment=record.project, run_name=record.job_name,
                      start_ms=created, end_ms=ended if status != "RUNNING" else None,
                      status=status, tags=tags, params=params, metrics=metrics, datasets=datasets)


def plan_batches(params: dict[str, str], tags: dict[str, str], metrics: list) -> list[tuple[list, list, list]]:
    """Split into log_batch calls within MLflow's limits: 100 params, 100 tags, 1000 entities a call."""
    params, tags, metrics, batches = list(params.items()), list(tags.items()), list(metrics), []
    while params or tags or metrics or not batches:
        p, params = params[:100], params[100:]
        t, tags = tags[:100], tags[100:]
        room = 1000 - len(p) - len(t)
        m, metrics = metrics[:room], metrics[room:]
        batches.append((p, t, m))
    return batches


# --- pushing ----------------------------------------------------------------------------------------------------


@dataclass
class MirrorReport:
    tracking_uri: str
    mirrored: list[str] = field(default_factory=list)  # ledger run ids mirrored by this push
    failed: dict[str, str] = field(default_factory=dict)  # ledger run id -> why
    pending: int = 0  # runs still queued afterwards
    error: str | None = None  # why nothing (more) could be pushed

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def pending_runs(book) -> dict[str, int]:
    """{run_id: newest outbox row id} of the runs queued and not yet pushed, oldest first."""
    with book._reading() as conn:
        rows = conn.execute(text(f"SELECT run_id, MIN(id), MAX(id) FROM {OUTBOX} WHERE pushed_at IS NULL "
                                 "GROUP BY run_id ORDER BY MIN(id)")).all()
    return {row[0]: row[2] for row in rows}


def _redact(uri: str) -> str:
    from ledger.capture.secrets import redact_url_password

    return redact_url_password(uri)


def check_tracking_server(uri: str, timeout: float = 1.0) -> str | None:
    """None when the tracking server answers /health (or the URI is not a server); else why not."""
    if not is_tracking_server(uri):
        return None
    import requests

    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as error:
        return f"MLflow at {_redact(uri)} is unreachable ({type(error).__name__})"
    return None if response.ok else f"MLflow at {_redact(uri)} answered /health with {response.status_code}"


def push_outbox(book, tracking_uri: str | None = None, *, artifacts: bool = True,
                timeout: float = 5.0) -> MirrorReport:
    """Mirror every queued run to MLflow. Never raises for an MLflow failure: the run stays queued, and the report
    says why. A run that fails alone (say MLflow refuses a value) is marked with its error and retried next time."""
    uri = tracking_uri or book.settings.mlflow_uri
    report = MirrorReport(tracking_uri=_redact(uri))
    if not pending_runs(book):
        return report
    report.error = check_tracking_server(uri, timeout)
    if report.error is None:
        with _push_lock(book):
            _push_pending(book, uri, report, artifacts, timeout)
    report.pending = len(pending_runs(book))
    return report


def _push_pending(book, uri: str, report: MirrorReport, artifacts: bool, timeout: float) -> None:
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
    except Exception as error:  # noqa: BLE001 - a broken MLflow install leaves the outbox as it is
        report.error = f"cannot open MLflow at {report.tracking_uri}: {type(error).__name__}: {error}"
        return
    experiments: dict[str, str] = {}
    for run_id, newest in pending_runs(book).items():  # read again under the lock: another pusher may have won
        try:
            mirror_run(client, book, book.get(run_id), uri, artifacts=artifacts, experiments=experiments)
        except Exception as error:  # noqa: BLE001 - MLflow failures never fail the ledger
            report.failed[run_id] = f"{type(error).__name__}: {error}".strip()[:2000]
            _mark(book, run_id, newest, report.failed[run_id])
            report.error = check_tracking_server(uri, timeout)
            if report.error:
                return  # the server went away: the rest waits for the next push
            continue
        _mark(book, run_id, newest, None)
        report.mirrored.append(run_id)


def _mark(book, run_id: str, newest: int, error: str | None) -> None:
    with book._writing() as conn:
        if error is None:
            conn.execute(text(f"UPDATE {OUTBOX} SET pushed_at = :now, attempts = attempts + 1, last_error = NULL "
                              "WHERE run_id = :r AND id <= :newest AND pushed_at IS NULL"),
                         {"now": utc_now(), "r": run_id, "newest": newest})
        else:
            conn.execute(text(f"UPDATE {OUTBOX} SET attempts = attempts + 1, last_error = :e "
                              "WHERE run_id = :r AND id <= :newest AND pushed_at IS NULL"),
                         {"e": error, "r": run_id, "newest": newest})


@contextmanager
def _push_lock(book):
    """One pusher at a time per ledger (two could both create the same MLflow run): a thread lock, and across
    processes an advisory lock on PostgreSQL or a file lock beside the SQLite file."""
    database = book.engine.url.database if book.engine.dialect.name == "sqlite" else None
    lock_file = Path(database).with_name(Path(database).name + ".mlflow-lock") \
        if database and database != ":memory:" else None
    with _thread_lock, process_lock(book.engine, "ledger.mlflow_push", lock_file):
        yield


_thread_lock = threading.RLock()


def _experiment_id(client, name: str, uri: str, cache: dict[str, str]) -> str:
    if name in cache:
        return cache[name]
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:///"):  # MLflow's default would be ./mlruns wherever `ledger sync` runs
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).resolve().as_uri()
        try:
            cache[name] = client.create_experiment(name, artifact_location=location, tags={"ledger.project": name})
            return cache[name]
        except Exception:  # created meanwhile by another pusher? then it is there now
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    cache[name] = experiment.experiment_id
    return cache[name]


def find_mirror_run(client, experiment_id: str, run_id: str):
    """The MLflow run that mirrors ledger run `run_id`, or None."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`ledger.run_id` = '{run_id}'",
                               max_results=2, order_by=["attributes.start_time ASC"])
    return found[0] if found else None


def mirror_run(client, book, record: RunRecord, uri: str, *, artifacts: bool = True,
               experiments: dict[str, str] | None = None) -> str:
    """Make the MLflow run of `record` hold all of it; returns the MLflow run id. Safe to repeat."""
    from mlflow.entities import Metric, Param, RunTag

    plan = plan_mirror(record)
    experiment_id = _experiment_id(client, plan.experiment, uri, experiments if experiments is not None else {})
    existing = find_mirror_run(client, experiment_id, record.run_id)
    if existing is None:
        run = client.create_run(experiment_id, start_time=plan.start_ms, run_name=plan.run_name,
                                tags={k: v for k, v in plan.tags.items() if k in ("ledger.run_id", "mlflow.user")})
        mlflow_run_id, have_params, have_tags, have_inputs = run.info.run_id, {}, {}, set()
    else:
        mlflow_run_id, data = existing.info.run_id, existing.data
        have_params, have_tags = dict(data.params), dict(data.tags)
        inputs = existing.inputs.dataset_inputs if existing.inputs else []
        have_inputs = {(i.dataset.name, i.dataset.digest) for i in inputs}

    facts = {"mlflow_run_id": mlflow_run_id, "mlflow_experiment_id": experiment_id,
             "mlflow_tracking_uri": _redact(uri)}
    annotations = (record.model_extra or {}).get("annotations") or {}
    if any(annotations.get(k) != v for k, v in facts.items()):
        record = book.annotate(record.run_id, facts)  # the linked id is in `ledger show` and in record.json

    params = {k: v for k, v in plan.params.items() if k not in have_params}  # a param is never changed
    tags = {k: v for k, v in plan.tags.items() if have_tags.get(k) != v}
    metrics = plan.metrics
    if existing is not None and metrics:
        seen = {(m.key, m.step, m.timestamp, m.value)
                for key in {m[0] for m in metrics} for m in client.get_metric_history(mlflow_run_id, key)}
        metrics = [m for m in metrics if (m[0], m[3], m[2], m[1]) not in seen]
    for p, t, m in plan_batches(params, tags, metrics):
        if p or t or m:
            client.log_batch(mlflow_run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in m],
                             params=[Param(k, v) for k, v in p], tags=[RunTag(k, v) for k, v in t])
    new_inputs = [d for d in plan.datasets if (d["name"], d["digest"]) not in have_inputs]
    if new_inputs:
        client.log_inputs(mlflow_run_id, datasets=[_dataset_input(d) for d in new_inputs])
    if artifacts:
        _log_artifacts(client, book, record, mlflow_run_id)
    if existing is None or existing.info.status != plan.status or existing.info.end_time != plan.end_ms:
        _set_status(client, mlflow_run_id, plan.status, plan.end_ms)
    return mlflow_run_id


def _set_status(client, mlflow_run_id: str, status: str, end_ms: int | None) -> None:
    """The run's status and end time. Through the store: MlflowClient.set_terminated would print "View run at"
    to stdout (which `ledger sync --json` owns), and update_run cannot set the end time."""
    from mlflow.entities import RunStatus

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if store is None:
        client.update_run(mlflow_run_id, status=status)
        return
    store.update_run_info(mlflow_run_id, run_status=RunStatus.from_string(status), end_time=end_ms, run_name=None)


def _dataset_input(spec: dict[str, Any]):
    from mlflow.entities import Dataset, DatasetInput, InputTag

    try:
        from mlflow.data.dataset_source_registry import resolve_dataset_source

        source = resolve_dataset_source(spec["source"])
        source_type, source_json = source._get_source_type(), source.to_json()
    except Exception:  # noqa: BLE001 - a source MLflow has no class for (ledger-cas://, file://): its URI
        source_type, source_json = "external", json.dumps({"uri": spec["source"]})
    dataset = Dataset(name=spec["name"], digest=spec["digest"], source_type=source_type, source=source_json,
                      profile=json.dumps(spec["profile"], sort_keys=True))
    return DatasetInput(dataset=dataset, tags=[InputTag(key="mlflow.data.context", value=spec["name"])])


def build_artifact_files(book, record: RunRecord) -> dict[str, bytes]:
    """{relative path: bytes}: the record, each channel's manifest, the git diff, the job log."""
    files = {"ledger/record.json": json.dumps(record.to_dict(), indent=2, sort_keys=True).encode("utf-8")}
    for channel, pin in record.pins.data.items():
        manifest = pin.model_dump(mode="json")
        files[f"ledger/data/{mirror_key(channel)}.manifest.json"] = json.dumps(manifest, indent=2).encode("utf-8")
    from ledger.capture.secrets import redact_bytes

    if record.pins.code.diff_sha256:
        with suppress(NotFound):  # a record whose diff was never stored: its digest is in the tags
            # Redacted when captured; again here for diffs stored by a ledger that did not redact them.
            files["ledger/code/git.diff"] = redact_bytes(book.get_blob(record.pins.code.diff_sha256))[0]
    log_path = (record.outcome.model_extra or {}).get("log_path")
    candidates = [Path(log_path)] if log_path else []
    candidates.append(book.settings.home / "jobs" / record.job_name / "job.log")
    for path in candidates:
        if path.is_file():
            files["ledger/job.log"] = redact_bytes(path.read_bytes())[0]  # a log from a job run elsewhere too
            break
    return files


def _log_artifacts(client, book, record: RunRecord, mlflow_run_id: str) -> None:
    with tempfile.TemporaryDirectory(prefix="ledger-mirror-") as tmp:
        for relative, data in build_artifact_files(book, record).items():
            path = Path(tmp) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        client.log_artifacts(mlflow_run_id, str(Path(tmp) / "ledger"), artifact_path="ledger")


# --- the best-effort push right after an append -------------------------------------------------------------------


class _BackgroundPusher:
    """One daemon thread a process drains the ledgers that queued something; at exit it gets a few seconds."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queued: dict[str, Any] = {}
        self._thread: threading.Thread | None = None

    def schedule(self, book) -> None:
        with self._lock:
            self._queued[book.where] = book
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, name="ledger-mlflow-mirror", daemon=True)
                self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queued:
                    self._thread = None
                    return
                _, book = self._queued.popitem()
            try:
                push_outbox(book, timeout=3.0)
            except Exception as error:  # noqa: BLE001 - the outbox keeps the run for `ledger sync`
                warnings.warn(f"ledger: mirroring to MLflow failed ({error}); `ledger sync` will retry",
                              stacklevel=1)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the pushes in flight; True when none is left."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()


_background = _BackgroundPusher()
wait_for_mirror = _background.wait
atexit.register(wait_for_mirror, 10.0)
