"""The local backend: runs a CreateTrainingJob request on this machine, following the SageMaker training contract.

The job root plays /opt/ml (aws/sagemaker-training-toolkit honours SAGEMAKER_BASE_DIR in its place):

    <job root>/input/config/{hyperparameters,resourceconfig,inputdataconfig}.json
    <job root>/input/data/<channel>/     staged from file://, ledger-cas:// or s3:// (by recorded version ids)
    <job root>/code/                     the source directory or sourcedir.tar.gz
    <job root>/model/                    packed into <S3OutputPath>/<job>/output/model.tar.gz
    <job root>/output/data/              packed into <S3OutputPath>/<job>/output/output.tar.gz
    <job root>/output/failure            its text becomes the failure reason
    <job root>/job.log                   the job's output, as CloudWatch shows it

A script-mode entry point runs with this interpreter and the toolkit's SM_* environment; a request for the
built-in XGBoost image with no entry point runs xgboost_algorithm.py, this project's local stand-in for it.

The module reads top to bottom: pure decisions (plan, environment, metrics, outcome), then the side effects
(staging, running, packing), then `LocalBackend.launch`, which strings them together.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ledger.backends.base import LaunchResult, LogFn
from ledger.content_store import (
    CAS_PREFIX,
    ContentStore,
    check_free_space,
    explain_no_space,
    extract_tar,
    local_path_of,
    manifest_digest,
    pack_tar_gz,
    parse_cas_uri,
    pin_file_channel_and_refusals,
    sha256_file,
    stage_cas_uri,
    stage_file_pin,
    tree_sha256,
)
from ledger.capture.code import decode_hyperparameter
from ledger.capture.data import parse_s3_uri
from ledger.capture.secrets import build_request_redaction, plan_known_secrets, redact_known
from ledger.errors import LedgerError, NotFound, UsageError
from ledger.record import ModelArtifact, Outcome, utc_now

ALGORITHM_SCRIPTS = {"xgboost": Path(__file__).with_name("xgboost_algorithm.py")}
WATCHDOG_SCRIPT = Path(__file__).with_name("job_watchdog.py")
# Repository names of the images whose built-in algorithm runs here (any registry, region, tag or digest).
BUILTIN_IMAGE_REPOSITORIES = {"sagemaker-xgboost": "xgboost", "xgboost": "xgboost"}

HOST = "algo-1"
INSTANCE_GROUP = "homogeneousCluster"
NETWORK_INTERFACE = "eth0"
DEFAULT_MAX_RUNTIME = 86400  # SageMaker's default: one day
FAILURE_REASON_LIMIT = 1024  # SageMaker's FailureReason is at most 1024 characters
LOG_TAIL_LINES = 20
STAGING_WORKERS = 8  # parallel S3 downloads when staging a channel
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# SageMaker defines these for the built-in XGBoost algorithm itself: a request need not name them.
BUILTIN_METRIC_DEFINITIONS = [
    {"Name": f"{channel}:{metric}", "Regex": rf".*\[[0-9]+\].*#011{channel}-{metric}:{_NUMBER}.*"}
    for channel in ("train", "validation") for metric in ("rmse", "mae", "logloss", "error", "auc", "merror")
]

# The toolkit's own hyperparameters (sagemaker_training/params.py); they never reach the script as arguments.
SAGEMAKER_HYPERPARAMETERS = (
    "sagemaker_program",
    "sagemaker_submit_directory",
    "sagemaker_enable_cloudwatch_metrics",
    "sagemaker_region",
    "sagemaker_container_log_level",
    "sagemaker_job_name",
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
)
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CHANNEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9.\-_]+$")


# --- pure: reading the request ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelPlan:
    name: str
    uri: str
    source: str  # "file" | "cas" | "s3"
    config: dict[str, str]  # its entry in inputdataconfig.json
    pin: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobPlan:
    job_name: str
    algorithm: str | None  # "xgboost" for a built-in algorithm; None for a script-mode entry point
    program: str | None
    submit_dir: str | None
    source_archive: dict[str, Any] | None
    channels: list[ChannelPlan]
    hyperparameters: dict[str, str]
    metric_definitions: list[tuple[str, re.Pattern]]
    max_runtime: int
    instance_type: str
    instance_count: int
    output_path: str
    environment: dict[str, str] = field(default_factory=dict)


def split_hyperparameters(raw: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the user's hyperparameters, the SDK's sagemaker_* ones), both JSON-decoded."""
    decoded = {k: decode_hyperparameter(v) for k, v in raw.items()}
    is_sagemaker = {k: k in SAGEMAKER_HYPERPARAMETERS or k.startswith("sagemaker_") for k in decoded}
    user = {k: v for k, v in decoded.items() if not is_sagemaker[k]}
    sagemaker = {k: v for k, v in decoded.items() if is_sagemaker[k]}
    return user, sagemaker


def builtin_algorithm(image: str | None) -> str | None:
    """'xgboost' for any registry/region/tag/digest of the SageMaker XGBoost image; None for anything else."""
    if not image:
        return None
    name = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    return BUILTIN_IMAGE_REPOSITORIES.get(name)


def _channel_uri(channel: dict) -> str:
    source = channel.get("DataSource") or {}
    if "S3DataSource" in source:
        s3 = source["S3DataSource"]
        data_type = s3.get("S3DataType", "S3Prefix")
        if data_type != "S3Prefix":
            raise UsageError(
                f"channel {channel.get('ChannelName')!r} has S3DataType {data_type}, which the local backend "
                "does not stage",
                "use S3Prefix (a prefix or a single object)",
            )
        return s3["S3Uri"]
    if "FileDataSource" in source:  # what the SageMaker SDK's local mode sends for file:// inputs
        return source["FileDataSource"]["FileUri"]
    raise UsageError(
        f"channel {channel.get('ChannelName')!r} has no S3DataSource or FileDataSource",
        "the local backend stages s3://, file:// and ledger-cas:// channels",
    )


def _channel_source(uri: str) -> str:
    if uri.startswith("s3://"):
        return "s3"
    if uri.startswith(CAS_PREFIX):
        return "cas"
    return "file"


def plan_local_job(
    request: dict[str, Any],
    *,
    home: Path,
    pins: dict[str, dict] | None = None,
    source_archive: dict[str, Any] | None = None,
) -> JobPlan:
    """Every decision the request implies, checked, with no I/O. Raises UsageError for what cannot run here."""
    pins = pins or {}
    job_name = request.get("TrainingJobName") or ""
    if not JOB_NAME_PATTERN.match(job_name):
        raise UsageError(f"TrainingJobName {job_name!r} is not a valid job name",
                         "use 1-63 letters, digits and hyphens, starting with a letter or digit")
    spec = request.get("AlgorithmSpecification") or {}
    input_mode = spec.get("TrainingInputMode", "File")
    raw_hps = dict(request.get("HyperParameters") or {})
    _, sm_hps = split_hyperparameters(raw_hps)
    program = sm_hps.get("sagemaker_program")
    submit_dir = sm_hps.get("sagemaker_submit_directory")

    algorithm = None
    if spec.get("ContainerEntrypoint") and not program:
        # SDK 3.x ModelTrainer sends its script this way (through the sm_drivers channel); running the image's
        # built-in algorithm instead would record a run of something else.
        raise UsageError(
            f"the request runs ContainerEntrypoint {' '.join(map(str, spec['ContainerEntrypoint']))!r}, "
            "which the local backend does not run",
            "reproduce it on SageMaker: --backend sagemaker",
        )
    if not program:
        image = spec.get("TrainingImage") or spec.get("AlgorithmName")
        algorithm = builtin_algorithm(image)
        if algorithm is None:
            raise UsageError(
                f"image {image!r} has no entry point and is not a built-in algorithm the local backend runs",
                "supported: the SageMaker XGBoost image (sagemaker-xgboost); or give a script "
                "(hyperparameter sagemaker_program, ledger run ENTRY_POINT)",
            )

    channels = []
    for channel in request.get("InputDataConfig") or []:
        name = channel.get("ChannelName") or ""
        if not CHANNEL_NAME_PATTERN.match(name):
            raise UsageError(f"channel name {name!r} is not valid", "use letters, digits, '.', '-' and '_'")
        mode = channel.get("InputMode") or input_mode
        if mode == "Pipe":
            raise UsageError(f"channel {name!r} uses Pipe input mode, which the local backend does not emulate",
                             "use File (or FastFile) input mode")
        uri = _channel_uri(channel)
        s3 = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        config = {
            "TrainingInputMode": "File" if mode == "FastFile" else mode,  # FastFile reads like File for a script
            "S3DistributionType": s3.get("S3DataDistributionType", "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
        }
        if channel.get("ContentType"):
            config["ContentType"] = channel["ContentType"]
        channels.append(ChannelPlan(name, uri, _channel_source(uri), config, pins.get(name)))

    metric_definitions = []
    for definition in spec.get("MetricDefinitions") or (BUILTIN_METRIC_DEFINITIONS if algorithm else []):
        try:
            metric_definitions.append((definition["Name"], re.compile(definition["Regex"])))
        except re.error as exc:
            raise UsageError(f"metric {definition['Name']!r} has an invalid regex: {exc}",
                             "fix its Regex in MetricDefinitions") from None

    resources = request.get("ResourceConfig") or {}
    stopping = request.get("StoppingCondition") or {}
    output = (request.get("OutputDataConfig") or {}).get("S3OutputPath") or (home / "artifacts").as_uri()
    return JobPlan(
        job_name=job_name,
        algorithm=algorithm,
        program=str(program) if program else None,
        submit_dir=str(submit_dir) if submit_dir else None,
        source_archive=source_archive,
        channels=channels,
        hyperparameters={k: str(v) for k, v in raw_hps.items()},
        metric_definitions=metric_definitions,
        max_runtime=int(stopping.get("MaxRuntimeInSeconds") or DEFAULT_MAX_RUNTIME),
        instance_type=resources.get("InstanceType", "local"),
        instance_count=int(resources.get("InstanceCount") or 1),
        output_path=output,
        environment={k: str(v) for k, v in (request.get("Environment") or {}).items()},
    )


# --- pure: the training contract -------------------------------------------------------------------------------


def build_resource_config(instance_type: str) -> dict[str, Any]:
    """resourceconfig.json as SageMaker writes it for one host."""
    return {
        "current_host": HOST,
        "current_instance_type": instance_type,
        "current_group_name": INSTANCE_GROUP,
        "hosts": [HOST],
        "instance_groups": [{"instance_group_name": INSTANCE_GROUP, "instance_type": instance_type, "hosts": [HOST]}],
        "network_interface_name": NETWORK_INTERFACE,
    }


def build_user_args(hyperparameters: dict[str, Any]) -> list[str]:
    """--name value pairs, sorted by name, formatted as the toolkit's mapping.to_cmd_args does (str() of values)."""
    args = []
    for name in sorted(hyperparameters):
        value = hyperparameters[name]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{name}" if len(name) > 1 else f"-{name}", "" if value is None else str(value)]
    return args


def _env_value(value: Any) -> str:
    # The toolkit's mapping.to_env_vars: strings as they are, None as "", the rest as compact sorted JSON.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def build_training_env(plan: JobPlan, root: Path, *, num_cpus: int, num_gpus: int) -> dict[str, str]:
    """The SM_* variables of aws/sagemaker-training-toolkit (environment.Environment.to_env_vars) for this job."""
    user_hps, sm_hps = split_hyperparameters(plan.hyperparameters)
    input_dir, output_dir = root / "input", root / "output"
    channel_dirs = {c.name: str(input_dir / "data" / c.name) for c in plan.channels}
    input_data_config = {c.name: c.config for c in plan.channels}
    resource_config = build_resource_config(plan.instance_type)
    program = plan.program  # None for a built-in algorithm, which has no user entry point
    module_name = program[:-3] if program and program.endswith(".py") else program
    framework_params = {k: v for k, v in sm_hps.items() if k not in SAGEMAKER_HYPERPARAMETERS}
    group = resource_config["instance_groups"][0]
    properties = {
        "additional_framework_parameters": framework_params,
        "channel_input_dirs": channel_dirs,
        "current_host": HOST,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": [HOST],
        "current_instance_type": plan.instance_type,
        "distribution_hosts": [],
        "distribution_instance_groups": [],
        "framework_module": plan.environment.get("SAGEMAKER_TRAINING_MODULE"),
        "hosts": [HOST],
        "hyperparameters": user_hps,
        "input_config_dir": str(input_dir / "config"),
        "input_data_config": input_data_config,
        "input_dir": str(input_dir),
        "instance_groups": [INSTANCE_GROUP],
        "instance_groups_dict": {INSTANCE_GROUP: group},
        "is_hetero": False,
        "is_master": True,
        "is_modelparallel_enabled": None,
        "job_name": plan.job_name,
        "log_level": sm_hps.get("sagemaker_container_log_level", 20),
        "master_hostname": HOST,
        "model_dir": str(root / "model"),
        "module_dir": plan.submit_dir or str(root / "code"),
        "module_name": module_name,
        "network_interface_name": NETWORK_INTERFACE,
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "output_data_dir": str(output_dir / "data"),
        "output_dir": str(output_dir),
        "output_intermediate_dir": str(output_dir / "intermediate"),
        "resource_config": resource_config,
        "user_entry_point": program,
    }
    env = {
        "hosts": properties["hosts"],
        "network_interface_name": NETWORK_INTERFACE,
        "hps": user_hps,
        "user_entry_point": program,
        "framework_params": framework_params,
        "resource_config": resource_config,
        "input_data_config": input_data_config,
        "output_data_dir": properties["output_data_dir"],
        "channels": sorted(channel_dirs),
        "current_host": HOST,
        "current_instance_type": plan.instance_type,
        "current_instance_group": INSTANCE_GROUP,
        "current_instance_group_hosts": [HOST],
        "instance_groups": [INSTANCE_GROUP],
        "instance_groups_dict": properties["instance_groups_dict"],
        "distribution_instance_groups": [],
        "is_hetero": False,
        "module_name": module_name,
        "log_level": properties["log_level"],
        "framework_module": properties["framework_module"],
        "input_dir": properties["input_dir"],
        "input_config_dir": properties["input_config_dir"],
        "output_dir": properties["output_dir"],
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "model_dir": properties["model_dir"],
        "module_dir": properties["module_dir"],
        "training_env": properties,
        "user_args": build_user_args(user_hps),
        "output_intermediate_dir": properties["output_intermediate_dir"],
    }
    env.update({f"channel_{name}": path for name, path in channel_dirs.items()})
    env.update({f"hp_{name}": value for name, value in user_hps.items()})
    return {f"SM_{key.upper()}": _env_value(value) for key, value in env.items()}


def build_process_env(base: dict[str, str], plan: JobPlan, root: Path, sm_env: dict[str, str]) -> dict[str, str]:
    """This process's environment without stale SM_* values, then the request's Environment, then the contract."""
    env = {k: v for k, v in base.items() if not k.startswith("SM_")}
    env.update(plan.environment)
    env.update(sm_env)
    code_dir = str(root / "code")
    env.update(
        SAGEMAKER_BASE_DIR=str(root),
        TRAINING_JOB_NAME=plan.job_name,
        CURRENT_HOST=HOST,
        PYTHONUNBUFFERED="1",  # lines reach the log (and the metrics) as they are printed
        PYTHONPATH=os.pathsep.join(p for p in (code_dir, base.get("PYTHONPATH")) if p),
    )
    return env


def build_command(plan: JobPlan, root: Path) -> list[str]:
    if plan.algorithm:
        return [sys.executable, str(ALGORITHM_SCRIPTS[plan.algorithm])]
    user_hps, _ = split_hyperparameters(plan.hyperparameters)
    program = root / "code" / plan.program
    if plan.program.endswith(".sh"):
        return ["/bin/sh", str(program), *build_user_args(user_hps)]
    if plan.program.endswith(".py"):
        return [sys.executable, str(program), *build_user_args(user_hps)]
    return [str(program), *build_user_args(user_hps)]


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def cloudwatch_form(line: str) -> str:
    """A log line as CloudWatch shows a training job's: control characters as '#' and three octal digits.

    So a tab is '#011', which is what the metric regexes users copy (e.g. '#011validation-rmse:') expect.
    """
    return _CONTROL_CHARACTERS.sub(lambda m: f"#{ord(m.group()):03o}", line)


class MetricParser:
    """MetricDefinitions over log lines: a point for each line a regex matches, its first group as the value."""

    def __init__(self, definitions: list[tuple[str, re.Pattern]]):
        self.definitions = definitions
        self.series: list[dict[str, Any]] = []
        self._steps: dict[str, int] = {}

    def feed(self, line: str, timestamp: str) -> None:
        for name, pattern in self.definitions:
            match = pattern.search(line)
            if not match:
                continue
            try:
                value = float(match.group(1) if pattern.groups else match.group(0))
            except ValueError:
                continue  # SageMaker drops a match that is not a number
            if not math.isfinite(value):
                continue  # the record is canonical JSON, which has no NaN or Infinity
            step = self._steps.get(name, 0)
            self._steps[name] = step + 1
            self.series.append({"name": name, "step": step, "value": value, "timestamp": timestamp})

    def final(self) -> dict[str, float]:
        return {point["name"]: point["value"] for point in self.series}


def build_failure_reason(failure_text: str | None, exit_code: int | None, log_tail: list[str]) -> str:
    if failure_text and failure_text.strip():
        reason = failure_text.strip()
        if len(reason) > FAILURE_REASON_LIMIT:
            reason = reason[: FAILURE_REASON_LIMIT - 1] + "…"  # its author put the gist first
        return reason
    tail = "\n".join(log_tail).strip()
    reason = f"AlgorithmError: the process exited with code {exit_code}"
    reason += f"; the log ends with:\n{tail}" if tail else "; it wrote nothing to the log"
    if len(reason) > FAILURE_REASON_LIMIT:
        reason = "…" + reason[-(FAILURE_REASON_LIMIT - 1):]  # the end of a traceback says the most
    return reason


def build_outcome(
    *,
    exit_code: int | None,
    stopped_by: str | None,
    max_runtime: int,
    failure_text: str | None,
    log_tail: list[str],
    started_at: str,
    ended_at: str,
    seconds: float,
    metrics: dict[str, float],
    model_artifact: dict[str, Any] | None,
    upload_error: str | None = None,
) -> Outcome:
    """Status and reason as DescribeTrainingJob would give them (a job past MaxRuntime is Stopped, not Failed)."""
    extra: dict[str, Any] = {}
    if stopped_by == "max_runtime":
        status, extra["secondary_status"] = "Stopped", "MaxRuntimeExceeded"
        reason = (f"MaxRuntimeExceeded: the job reached StoppingCondition.MaxRuntimeInSeconds={max_runtime} "
                  "and was stopped")
    elif stopped_by == "interrupt":
        status, extra["secondary_status"] = "Stopped", "Stopped"
        reason = "Stopped: the local run was interrupted"
    elif upload_error:
        status, reason = "Failed", upload_error
    elif exit_code == 0:
        status, reason = "Completed", None
    else:
        status, reason = "Failed", build_failure_reason(failure_text, exit_code, log_tail)
    return Outcome(
        status=status,
        arn=None,
        started_at=started_at,
        ended_at=ended_at,
        billable_seconds=max(1, math.ceil(seconds)),
        failure_reason=reason,
        metrics=metrics,
        model_artifact=ModelArtifact(**model_artifact) if model_artifact and status != "Failed" else None,
        **extra,
    )


def find_unsatisfied_requirements(requirements_text: str) -> list[str]:
    """The lines of a requirements.txt that this interpreter does not satisfy; anything unreadable counts.

    A line we cannot judge (an option, a URL, an editable) is returned as unsatisfied, so pip decides.
    """
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    unsatisfied = []
    for raw in requirements_text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            unsatisfied.append(line)
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            unsatisfied.append(line)
            continue
        if requirement.url or not requirement.specifier.contains(installed, prereleases=True):
            unsatisfied.append(line)
    return unsatisfied


# --- side effects: staging --------------------------------------------------------------------------------------


def s3_relative_path(prefix: str, key: str) -> str:
    """Where an object under a channel prefix lands in the channel directory (as the SDK's local mode puts it)."""
    if key == prefix:
        return key.rsplit("/", 1)[-1]
    return key[len(prefix):].lstrip("/")


class S3:
    """One boto3 S3 client for a launch, made on first use (boto3 honours AWS_ENDPOINT_URL and the profile)."""

    def __init__(self):
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("s3")
        return self._client

    def call(self, what: str, fn: Callable, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404", "NotFound"}:
                raise NotFound(f"{what}: {code}", "check that the object (version) still exists") from None
            raise LedgerError(f"{what}: {exc}", "check the AWS credentials and permissions") from None
        except BotoCoreError as exc:
            raise LedgerError(f"{what}: {exc}", "check the AWS endpoint, region and credentials") from None

    def download(self, bucket: str, key: str, dest: Path, version_id: str | None = None) -> dict[str, Any]:
        """Write one object (one exact version when given) to dest; returns {version_id, etag, size}."""
        kwargs = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        what = f"reading s3://{bucket}/{key}" + (f" version {version_id}" if version_id else "")
        response = self.call(what, self.client.get_object, **kwargs)
        with explain_no_space(f"s3://{bucket}/{key}", dest, response.get("ContentLength")):
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as f:
                shutil.copyfileobj(response["Body"], f, 8 << 20)
        # ETags without their quotes, as capture records them, so the two manifests digest alike.
        return {"version_id": response.get("VersionId"), "etag": (response.get("ETag") or "").strip('"') or None,
                "size": response.get("ContentLength")}

    def list_objects(self, bucket: str, prefix: str) -> list[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        objects = []
        pages = self.call(f"listing s3://{bucket}/{prefix}", lambda: list(paginator.paginate(Bucket=bucket,
                                                                                              Prefix=prefix)))
        for page in pages:
            objects += [o for o in page.get("Contents", []) if not o["Key"].endswith("/")]
        return objects

    def upload(self, path: Path, uri: str) -> str | None:
        """Put a file at uri; returns the new object's version id (None when the bucket has no versioning)."""
        bucket, key = parse_s3_uri(uri)
        with open(path, "rb") as body:
            response = self.call(f"writing {uri}", self.client.put_object, Bucket=bucket, Key=key, Body=body)
        return response.get("VersionId")


def _inside(dest: Path, relative: str) -> Path:
    target = (dest / relative).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise UsageError(f"object key {relative!r} would land outside its channel", "rename the object")
    return target


def stage_s3_channel(s3: S3, channel: ChannelPlan, dest: Path, log: LogFn) -> dict[str, Any]:
    """Download a channel: the pinned object versions when the pin has them, else the prefix's current objects.

    Returns a pin-shaped dict of what was read, with the version ids S3 reported for it.
    """
    pin = channel.pin or {}
    pinned_objects = pin.get("objects") or []
    bucket, prefix = parse_s3_uri(pin.get("uri") or channel.uri)
    if pinned_objects:
        wanted = [(o["key"], o.get("version_id"), o.get("etag")) for o in pinned_objects]
        needed = sum(o.get("size") or 0 for o in pinned_objects)
    else:
        sizes = {o["Key"]: o.get("Size") or 0 for o in s3.list_objects(bucket, prefix)}
        # A prefix that names an object exactly is that one object (as the SDK's local mode reads it).
        wanted = [(key, None, None) for key in ([prefix] if prefix in sizes else sizes)]
        needed = sum(sizes[key] for key, _, _ in wanted)
    what = f"channel {channel.name}"
    check_free_space(what, dest, needed)
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(item: tuple[str, str | None, str | None]) -> dict[str, Any]:
        key, version_id, pinned_etag = item
        got = s3.download(bucket, key, _inside(dest, s3_relative_path(prefix, key)), version_id)
        if pinned_etag and not version_id and got["etag"] != pinned_etag:
            log(f"ledger: warning: s3://{bucket}/{key} changed since it was pinned (ETag {got['etag']}, "
                f"pinned {pinned_etag}) and its bucket keeps no versions")
        return {"key": key, **got}

    s3.client  # made once, before the threads share it
    with explain_no_space(what, dest, needed), ThreadPoolExecutor(max_workers=STAGING_WORKERS) as pool:
        objects = sorted(pool.map(fetch, wanted), key=lambda o: o["key"])  # S3 serves many GETs at once
    return {
        "uri": pin.get("uri") or channel.uri,
        "kind": "S3Prefix",
        "objects": objects,
        "object_count": len(objects),
        "total_bytes": sum(o["size"] or 0 for o in objects),
        "manifest_sha256": manifest_digest(objects),
        "pinned": bool(objects) and all(o["version_id"] for o in objects),
        "snapshot_uri": pin.get("snapshot_uri"),
    }


def stage_channel(channel: ChannelPlan, dest: Path, store: ContentStore, s3: S3, log: LogFn) -> dict[str, Any]:
    """Stage one channel into dest and return the pin of what was staged."""
    if channel.source == "s3":
        return stage_s3_channel(s3, channel, dest, log)
    if channel.source == "cas":
        pin, _ = stage_cas_uri(channel.uri, dest, store)
        return pin
    pin = channel.pin if channel.pin and channel.pin.get("kind") == "file" else None
    if pin is None:
        # Pin now: the job reads immutable copies, and the record can name exactly what it read.
        pin, refused = pin_file_channel_and_refusals(channel.uri, store)
        for link in refused:
            log(f"ledger: warning: channel {channel.name}: symbolic link {link}: not staged")
    stage_file_pin(pin, dest, store)
    return pin


def stage_code(plan: JobPlan, code_dir: Path, store: ContentStore, s3: S3) -> dict[str, Any] | None:
    """Put the source code in code_dir; returns {uri, version_id, sha256, tree_sha256} of what was staged.

    A full disk is a NoSpace error naming code_dir and the bytes the code needs (where they can be known first).
    """
    uri = plan.submit_dir
    if not uri:
        return None
    needed = None
    if uri.startswith(CAS_PREFIX) and store.has(parse_cas_uri(uri)):
        archive = store.path_of(parse_cas_uri(uri))
        needed = archive.stat().st_size + _unpacked_size(archive)  # a copy of it beside code_dir, then its files
        check_free_space(f"the code of {plan.job_name}", code_dir, needed)
    with explain_no_space(f"the code of {plan.job_name}", code_dir, needed):
        return _stage_code(plan, uri, code_dir, store, s3)


def _unpacked_size(archive: Path) -> int:
    """Bytes the files of an archive take once unpacked."""
    with tarfile.open(archive, "r:*") as tar:
        return sum(member.size for member in tar if member.isfile())


def _extract_code(archive: Path, code_dir: Path, what: str) -> None:
    """Unpack the code, after checking there is room for it."""
    check_free_space(what, code_dir, _unpacked_size(archive))
    extract_tar(archive, code_dir)


def _stage_code(plan: JobPlan, uri: str, code_dir: Path, store: ContentStore, s3: S3) -> dict[str, Any]:
    pinned = plan.source_archive if plan.source_archive and plan.source_archive.get("uri") == uri else {}
    version_id, sha256 = None, None
    if uri.startswith("s3://"):
        archive = code_dir.parent / "sourcedir.tar.gz"
        bucket, key = parse_s3_uri(uri)
        version_id = s3.download(bucket, key, archive, pinned.get("version_id"))["version_id"]
        sha256 = _checked_archive_digest(archive, pinned.get("sha256"), uri)
        _extract_code(archive, code_dir, f"the code of {plan.job_name}")
        archive.unlink()
    elif uri.startswith(CAS_PREFIX):
        sha256 = parse_cas_uri(uri)
        extract_tar(store.stage(sha256, code_dir.parent / "sourcedir.tar.gz"), code_dir)
        (code_dir.parent / "sourcedir.tar.gz").unlink()
    else:
        path = local_path_of(uri)
        if path.is_dir():
            check_free_space(f"the code of {plan.job_name}", code_dir,
                             sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
            shutil.copytree(path, code_dir, dirs_exist_ok=True)
        else:
            sha256 = _checked_archive_digest(path, pinned.get("sha256"), uri)
            _extract_code(path, code_dir, f"the code of {plan.job_name}")
    return {"uri": uri, "version_id": version_id, "sha256": sha256, "tree_sha256": tree_sha256(code_dir)}


def _checked_archive_digest(archive: Path, expected: str | None, uri: str) -> str:
    digest = sha256_file(archive)
    if expected and digest != expected:
        raise LedgerError(f"the source archive {uri} is not the one pinned (sha256 {digest[:12]}…, "
                          f"pinned {expected[:12]}…)", "pin the source archive by version id, or launch anew")
    return digest


def check_local_inputs(plan: JobPlan) -> None:
    """Fail before anything runs when a local channel, source directory or entry point is missing."""
    for channel in plan.channels:
        if channel.source == "file" and not (channel.pin and channel.pin.get("kind") == "file"):
            if not local_path_of(channel.uri).exists():
                raise NotFound(f"channel {channel.name!r}: {channel.uri} does not exist",
                               "check the channel's path (file:///absolute/path or a path)")
    if plan.algorithm:
        return
    if not plan.submit_dir:
        raise UsageError(f"the entry point {plan.program!r} has no source directory",
                         "set the hyperparameter sagemaker_submit_directory (ledger run --source-dir DIR)")
    if plan.submit_dir.startswith(("s3://", CAS_PREFIX)):
        return  # checked once staged, still before anything runs
    source = local_path_of(plan.submit_dir)
    if not source.exists():
        raise NotFound(f"source directory {plan.submit_dir} does not exist", "check --source-dir")
    if source.is_dir() and not (source / plan.program).is_file():
        raise NotFound(f"entry point {plan.program!r} is not in {source}",
                       "check the entry point's name, relative to the source directory")


def layout_job_root(root: Path) -> None:
    for sub in ("input/config", "input/data", "code", "model", "output/data", "output/intermediate"):
        (root / sub).mkdir(parents=True, exist_ok=True)


def write_config_files(plan: JobPlan, root: Path) -> None:
    config = root / "input" / "config"
    # The job reads its secrets here: only its owner may, and seal_config_files redacts them once it has ended.
    descriptor = os.open(config / "hyperparameters.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(plan.hyperparameters, indent=2))
    (config / "resourceconfig.json").write_text(json.dumps(build_resource_config(plan.instance_type), indent=2))
    (config / "inputdataconfig.json").write_text(json.dumps({c.name: c.config for c in plan.channels}, indent=2))


def _known_secrets(plan: JobPlan) -> list[str]:
    """The request's secrets, to clean what the job writes of them (it may print its own)."""
    return plan_known_secrets(build_request_redaction(
        {"HyperParameters": plan.hyperparameters, "Environment": plan.environment}).secrets)


def _read_failure_text(root: Path, plan: JobPlan) -> str | None:
    text = _read_failure_file(root)
    return redact_known(text, _known_secrets(plan)) if text else text


def seal_config_files(plan: JobPlan, root: Path) -> None:
    """After the job: hyperparameters.json keeps what the job read, with every secret redacted."""
    redacted = build_request_redaction({"HyperParameters": plan.hyperparameters}).request["HyperParameters"]
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(redacted, indent=2))


def count_gpus() -> int:
    """GPUs as the toolkit counts them (nvidia-smi --list-gpus); 0 without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


# --- side effects: running ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessEnd:
    exit_code: int | None
    stopped_by: str | None  # "max_runtime" | "interrupt" | None


def _pump_lines(stream, on_line: Callable[[str], None]) -> None:
    for raw in iter(stream.readline, b""):
        try:
            on_line(raw.decode("utf-8", "replace").rstrip("\n"))
        except Exception:  # a broken log sink must not stop the pipe being drained, or the job would block
            pass
    stream.close()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent dies (Linux prctl PR_SET_PDEATHSIG); None
    elsewhere. prctl is looked up here, before the fork: the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os.kill(os.getpid(), signal.SIGKILL)

    return set_parent_death_signal


def _start_watchdog(pgid: int) -> subprocess.Popen | None:
    """job_watchdog.py, which kills the group `pgid` if this process dies before it says the job is over."""
    try:
        return subprocess.Popen([sys.executable, "-I", "-S", str(WATCHDOG_SCRIPT), str(pgid)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return None  # the job still dies with its launcher (parent-death signal); its children may not


def _stop_watchdog(watchdog: subprocess.Popen | None) -> None:
    if watchdog is None:
        return
    try:
        watchdog.stdin.write(b"x")  # the job is over: the watchdog must not kill a group id that may be reused
        watchdog.stdin.close()
    except OSError:
        pass
    watchdog.wait()


def run_process(
    argv: list[str], *, cwd: Path, env: dict[str, str], max_runtime: float, stop_grace: float,
    on_line: Callable[[str], None],
) -> ProcessEnd:
    """Run argv in its own process group, stdout and stderr merged line by line into on_line.

    Past max_runtime the group gets SIGTERM, then SIGKILL after stop_grace seconds, as SageMaker stops a job.
    When the main process ends, whatever it left running in its group is killed, as when a container ends.
    The job dies with this process, however this process dies: the job's main process by a parent-death signal,
    the rest of its group by job_watchdog.py.
    """
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent())
    watchdog = _start_watchdog(proc.pid)
    pump = threading.Thread(target=_pump_lines, args=(proc.stdout, on_line), daemon=True)
    pump.start()
    stopped_by = None
    try:
        proc.wait(timeout=max_runtime)
    except subprocess.TimeoutExpired:
        stopped_by = "max_runtime"
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    if stopped_by:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=stop_grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    _stop_watchdog(watchdog)
    pump.join(timeout=10)
    return ProcessEnd(proc.returncode, stopped_by)


# --- side effects: artifacts -------------------------------------------------------------------------------------


def save_artifact(source_dir: Path, name: str, plan: JobPlan, root: Path, s3: S3) -> dict[str, Any]:
    """Pack source_dir into <S3OutputPath>/<job>/output/<name>; returns {uri, version_id, sha256, tree_sha256}."""
    packed = root / "packed" / name
    sha256 = pack_tar_gz(source_dir, packed)
    uri = f"{plan.output_path.rstrip('/')}/{plan.job_name}/output/{name}"
    version_id = None
    if uri.startswith("s3://"):
        version_id = s3.upload(packed, uri)
    else:
        dest = local_path_of(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(packed, dest)
        uri = dest.as_uri()
    # The digest of the archive as stored (what a reader of the artifact gets), not of the directory it came from.
    return {"uri": uri, "version_id": version_id, "sha256": sha256, "tree_sha256": tree_sha256(packed)}


def _damaged_inputs(root: Path) -> list[str]:
    """Staged inputs the job wrote into (their mtime moved from 0): the content store's copy changed with them."""
    data = root / "input" / "data"
    return [str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and p.stat().st_mtime != 0
            and p.stat().st_nlink > 1]


def _read_failure_file(root: Path) -> str | None:
    failure = root / "output" / "failure"
    return failure.read_text(errors="replace") if failure.is_file() else None


def _print_line(line: str) -> None:
    print(line, flush=True)


# --- the backend -------------------------------------------------------------------------------------------------


class LocalBackend:
    """Runs a CreateTrainingJob request on this machine. See the module docstring for the layout."""

    name = "local"

    def __init__(self, home: str | Path | None = None, stop_grace_seconds: float = 120.0):
        self.home = Path(home) if home else None
        self.stop_grace_seconds = stop_grace_seconds  # SageMaker gives a stopped job 120 s after SIGTERM

    def launch(
        self,
        request: dict[str, Any],
        *,
        job_dir: Path | None = None,
        log: LogFn | None = None,
        pins: dict[str, dict] | None = None,
        source_archive: dict[str, Any] | None = None,
    ) -> LaunchResult:
        from ledger.config import load_settings

        log = log or _print_line
        home = self.home or load_settings().home
        plan = plan_local_job(request, home=home, pins=pins, source_archive=source_archive)
        root = Path(job_dir) if job_dir else home / "jobs" / plan.job_name
        check_local_inputs(plan)
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"the job root {root} already exists", "give the job a new TrainingJobName")
        if plan.instance_count > 1:
            log(f"ledger: the job asks for {plan.instance_count} instances; the local backend runs one ({HOST})")

        started, started_at = time.monotonic(), utc_now()
        store, s3 = ContentStore(home), S3()
        data_pins, code = self._prepare(plan, root, store, s3, log)
        try:
            end, metrics, tail = self._run(plan, root, log, deadline=started + plan.max_runtime)
        finally:
            seal_config_files(plan, root)
        model_artifact, output_artifact, upload_error = self._save_artifacts(plan, root, end, s3, log)
        outcome = build_outcome(
            exit_code=end.exit_code,
            stopped_by=end.stopped_by,
            max_runtime=plan.max_runtime,
            failure_text=_read_failure_text(root, plan),
            log_tail=tail,
            started_at=started_at,
            ended_at=utc_now(),
            seconds=time.monotonic() - started,
            metrics=metrics.final(),
            model_artifact=model_artifact,
            upload_error=upload_error,
        )
        log(f"ledger: {plan.job_name} {outcome.status}"
            + (f": {outcome.failure_reason}" if outcome.status != "Completed" else ""))
        return LaunchResult(outcome=outcome, series=metrics.series, job_dir=root, log_path=root / "job.log",
                            data_pins=data_pins, source_archive=code, output_artifact=output_artifact)

    def _prepare(self, plan: JobPlan, root: Path, store: ContentStore, s3: S3,
                 log: LogFn) -> tuple[dict[str, dict], dict | None]:
        """Lay out the job root and stage data and code; on any failure, leave no half-made job root behind."""
        created_root = not root.exists()
        try:
            layout_job_root(root)
            write_config_files(plan, root)
            data_pins = {}
            for channel in plan.channels:
                log(f"ledger: staging channel {channel.name} from {channel.uri}")
                dest = root / "input" / "data" / channel.name
                data_pins[channel.name] = stage_channel(channel, dest, store, s3, log)
            code = stage_code(plan, root / "code", store, s3)
            if plan.program and not (root / "code" / plan.program).is_file():
                raise NotFound(f"entry point {plan.program!r} is not in the source {plan.submit_dir}",
                               "check the entry point's name, relative to the source directory")
        except BaseException:
            if created_root:
                shutil.rmtree(root, ignore_errors=True)
            raise
        return data_pins, code

    def _run(self, plan: JobPlan, root: Path, log: LogFn, *,
             deadline: float) -> tuple[ProcessEnd, MetricParser, list[str]]:
        """Install requirements if needed, then run the job; every line to job.log, the metrics and `log`."""
        sm_env = build_training_env(plan, root, num_cpus=os.cpu_count() or 1, num_gpus=count_gpus())
        env = build_process_env(dict(os.environ), plan, root, sm_env)
        metrics = MetricParser(plan.metric_definitions)
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        known = _known_secrets(plan)
        with open(root / "job.log", "w", encoding="utf-8") as log_file:

            def on_line(raw: str) -> None:
                line = cloudwatch_form(raw)
                metrics.feed(line, utc_now())
                line = redact_known(line, known)  # what is kept and shown has no secret in it
                log_file.write(line + "\n")
                log_file.flush()
                tail.append(line)
                log(line)

            end = self._install_requirements(root, env, on_line, plan, log)
            if end is None:
                log(f"ledger: running {plan.program or plan.algorithm + ' (built-in algorithm)'}")
                end = run_process(build_command(plan, root), cwd=root / "code", env=env,
                                  max_runtime=max(0.0, deadline - time.monotonic()),
                                  stop_grace=self.stop_grace_seconds, on_line=on_line)
        damaged = _damaged_inputs(root)
        if damaged:
            log(f"ledger: warning: the job wrote into its staged inputs ({', '.join(damaged[:3])}); their content "
                "store objects are no longer trusted and will be stored again when next pinned")
        return end, metrics, list(tail)

    def _save_artifacts(self, plan: JobPlan, root: Path, end: ProcessEnd, s3: S3,
                        log: LogFn) -> tuple[dict | None, dict | None, str | None]:
        """model.tar.gz (not for a failed job: SageMaker keeps none) and output.tar.gz; an upload error as text."""
        model_artifact = output_artifact = None
        try:
            if end.exit_code == 0 or end.stopped_by:
                model_artifact = save_artifact(root / "model", "model.tar.gz", plan, root, s3)
            output_artifact = save_artifact(root / "output" / "data", "output.tar.gz", plan, root, s3)
        except LedgerError as exc:
            error = f"ClientError: uploading the artifacts failed: {exc}"
            log(f"ledger: {error}")
            return model_artifact, output_artifact, error
        return model_artifact, output_artifact, None

    def _install_requirements(self, root: Path, env: dict[str, str], on_line, plan: JobPlan,
                              log: LogFn) -> ProcessEnd | None:
        """pip install -r code/requirements.txt, only when something in it is missing (so offline runs work).

        Returns the ProcessEnd of a failed or stopped install (the job ends there), else None.
        """
        requirements = root / "code" / "requirements.txt"
        if not requirements.is_file():
            return None
        missing = find_unsatisfied_requirements(requirements.read_text())
        if not missing:
            log("ledger: requirements.txt is satisfied by this environment; nothing to install")
            return None
        log(f"ledger: installing requirements into {sys.prefix}: {', '.join(missing)}")
        end = run_process([sys.executable, "-m", "pip", "install", "-r", str(requirements)], cwd=root / "code",
                          env=env, max_runtime=plan.max_runtime, stop_grace=self.stop_grace_seconds,
                          on_line=on_line)
        if end.exit_code == 0 and not end.stopped_by:
            return None
        if not end.stopped_by:
            (root / "output" / "failure").write_text(
                f"InstallRequirementsError: pip install -r requirements.txt exited with code {end.exit_code}")
        return end


__all__ = [
    "ChannelPlan",
    "JobPlan",
    "LocalBackend",
    "MetricParser",
    "build_command",
    "build_outcome",
    "build_resource_config",
    "build_training_env",
    "build_user_args",
    "builtin_algorithm",
    "cloudwatch_form",
    "decode_hyperparameter",
    "find_unsatisfied_requirements",
    "plan_local_job",
    "split_hyperparameters",
]
