"""Pure: the SageMaker training contract for one job on this machine. A CreateTrainingJob request in, every
decision about running it out, with no I/O.

    plan_local_job        the request checked and read: channels, program, hyperparameters, metrics, limits
    build_training_env    the SM_* variables aws/sagemaker-training-toolkit sets (environment.Environment)
    build_user_args       hyperparameters as `--name value` arguments, as the toolkit passes them
    MetricParser          MetricDefinitions over the job's log lines, as CloudWatch shows them
    build_local_outcome   the job's end as DescribeTrainingJob would describe it

The job root is bound at /opt/ml in the job's own mount namespace (sandbox.py), so every path below is the
/opt/ml path SageMaker uses; where no namespace can be made it stays at its LEDGER_HOME path, and SM_* and
SAGEMAKER_BASE_DIR (which the toolkits honour) name that instead:

    <job root>/input/config/{hyperparameters,resourceconfig,inputdataconfig}.json
    <job root>/input/data/<channel>/     staged from file://, ledger-cas:// or s3:// (by recorded version ids)
    <job root>/code/                     the source directory or sourcedir.tar.gz
    <job root>/model/                    packed into <S3OutputPath>/<job>/output/model.tar.gz
    <job root>/output/data/              packed into <S3OutputPath>/<job>/output/output.tar.gz
    <job root>/output/failure            its text becomes the failure reason
    <job root>/job.log                   the job's output, as CloudWatch shows it
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.backends.algorithms import ALGORITHM_SCRIPTS, BUILTIN_METRIC_DEFINITIONS, builtin_algorithm
from ledger.capture.code import decode_hyperparameter
from ledger.capture.content_store import CAS_PREFIX
from ledger.errors import UsageError
from ledger.record import ModelArtifact, Outcome

HOST = "algo-1"
INSTANCE_GROUP = "homogeneousCluster"
NETWORK_INTERFACE = "eth0"
DEFAULT_MAX_RUNTIME = 86400  # SageMaker's default: one day
FAILURE_REASON_LIMIT = 1024  # SageMaker's FailureReason is at most 1024 characters
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
    entrypoint: tuple[str, ...] | None = None  # SDK 3.x ModelTrainer: ContainerEntrypoint + ContainerArguments


SM_TRAIN = "/opt/ml/input/data/sm_drivers/sm_train.sh"  # what SDK 3.x ModelTrainer's entrypoint runs


def split_hyperparameters(raw: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the user's hyperparameters, the SDK's sagemaker_* ones), both JSON-decoded."""
    decoded = {k: decode_hyperparameter(v) for k, v in raw.items()}
    is_sagemaker = {k: k in SAGEMAKER_HYPERPARAMETERS or k.startswith("sagemaker_") for k in decoded}
    user = {k: v for k, v in decoded.items() if not is_sagemaker[k]}
    sagemaker = {k: v for k, v in decoded.items() if is_sagemaker[k]}
    return user, sagemaker


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

    algorithm, entrypoint = None, None
    if spec.get("ContainerEntrypoint") and not program:
        entrypoint = (*spec["ContainerEntrypoint"], *(spec.get("ContainerArguments") or []))
        channel_names = {c.get("ChannelName") for c in request.get("InputDataConfig") or []}
        if "sm_drivers" not in channel_names or not any(SM_TRAIN in str(arg) for arg in entrypoint):
            # Only SDK 3.x ModelTrainer's entrypoint runs here: its drivers come in the sm_drivers channel. Any
            # other entrypoint is a program inside the image, which is not on this machine.
            raise UsageError(
                f"the request runs ContainerEntrypoint {' '.join(map(str, spec['ContainerEntrypoint']))!r} from its "
                "image, which the local backend does not have",
                "reproduce it on SageMaker: --backend sagemaker",
            )
    elif not program:
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
        entrypoint=tuple(map(str, entrypoint)) if entrypoint else None,
    )


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


# What ties a process to the ledger's own Python: a job has an environment of its own.
LEDGER_PYTHON_VARIABLES = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__")


def build_process_env(base: dict[str, str], plan: JobPlan, root: Path, sm_env: dict[str, str], *,
                      environment: Path | None = None, support: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment without stale SM_* values or the ledger's Python, then the request's
    Environment, then the contract. `environment` is the job's virtual environment (first on PATH, as an image's
    Python is), `support` what goes on the path after the job's code (container_support)."""
    env = {k: v for k, v in base.items() if not k.startswith("SM_") and k not in LEDGER_PYTHON_VARIABLES}
    env.update(plan.environment)
    env.update(sm_env)
    code_dir = str(root / "code")
    env.update(
        SAGEMAKER_BASE_DIR=str(root),
        TRAINING_JOB_NAME=plan.job_name,
        CURRENT_HOST=HOST,
        PYTHONUNBUFFERED="1",  # lines reach the log (and the metrics) as they are printed
        PYTHONPATH=os.pathsep.join([code_dir, *support]),
    )
    if environment is not None:
        env["VIRTUAL_ENV"] = str(environment)
        env["PATH"] = os.pathsep.join(p for p in (str(environment / "bin"), base.get("PATH")) if p)
    return env


def build_command(plan: JobPlan, root: Path, python: str | Path = sys.executable) -> list[str]:
    """The job's argv: the entry point with `python` (the job environment's), the built-in algorithm's stand-in, or
    SDK 3.x's ContainerEntrypoint as it was sent."""
    python = str(python)
    if plan.entrypoint:
        return list(plan.entrypoint)
    if plan.algorithm:
        return [python, str(ALGORITHM_SCRIPTS[plan.algorithm])]
    user_hps, _ = split_hyperparameters(plan.hyperparameters)
    program = root / "code" / plan.program
    if plan.program.endswith(".sh"):
        return ["/bin/sh", str(program), *build_user_args(user_hps)]
    if plan.program.endswith(".py"):
        return [python, str(program), *build_user_args(user_hps)]
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


def build_local_outcome(
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


def s3_relative_path(prefix: str, key: str) -> str:
    """Where an object under a channel prefix lands in the channel directory (as the SDK's local mode puts it)."""
    if key == prefix:
        return key.rsplit("/", 1)[-1]
    return key[len(prefix):].lstrip("/")
