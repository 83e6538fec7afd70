"""`ledger run`: launch a job without the SageMaker SDK, through the same capture path as autolog."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ledger.capture import client_for
from ledger.capture.content_store import open_content_store, pin_source_dir
from ledger.capture.data import parse_s3_uri
from ledger.cli.console import err, open_book_to_record, out, print_json
from ledger.errors import NotFound, UsageError
from ledger.run.launch import (
    ALGORITHMS,
    DEFAULT_ROLE,
    as_file_uri,
    build_algorithm_image,
    build_framework_image,
    build_job_name,
    build_request,
    launch_job,
    parse_assignments,
    parse_content_types,
)


def run_command(
    entry_point: Optional[str] = typer.Argument(None, help="The script to run, relative to --source-dir."),
    source_dir: Optional[Path] = typer.Option(None, "--source-dir", help="Directory with the script (default: the "
                                              "script's own directory)."),
    hp: List[str] = typer.Option([], "--hp", help="A hyperparameter NAME=VALUE; repeat for more."),
    channel: List[str] = typer.Option([], "--channel", help="An input channel NAME=PATH_OR_URI; repeat for more."),
    metric: List[str] = typer.Option([], "--metric", help="A metric NAME=REGEX over the log; repeat for more."),
    instance_type: str = typer.Option("ml.m5.large", help="The instance type to record (and use on SageMaker)."),
    instance_count: int = typer.Option(1, help="Instances (the local backend runs one)."),
    backend: str = typer.Option("local", help="local | sagemaker"),
    algorithm: Optional[str] = typer.Option(None, help="Run a built-in algorithm instead of a script: xgboost."),
    job_name: Optional[str] = typer.Option(None, help="TrainingJobName (default: a name with a timestamp)."),
    project: Optional[str] = typer.Option(None, help="Project to file the run under (default: the git repo name)."),
    image: Optional[str] = typer.Option(None, help="Training image (default: the SageMaker XGBoost image)."),
    framework: Optional[str] = typer.Option(None, help="A SageMaker framework image NAME:VERSION, as the SDK names them "
                                            "(xgboost:1.7-1, sklearn:1.2-1, pytorch:2.5.1): recorded as the image of "
                                            "the region; on the local backend its profile runs."),
    content_type: List[str] = typer.Option([], "--content-type", help="csv, libsvm or parquet: for every channel, "
                                           "or CHANNEL=TYPE; repeat for more (default text/csv)."),
    region: str = typer.Option("us-east-1", help="Region of the default image."),
    role: Optional[str] = typer.Option(None, help="IAM role ARN for SageMaker (required with --backend sagemaker)."),
    output_path: Optional[str] = typer.Option(None, help="S3OutputPath (default local: LEDGER_HOME/output)."),
    code_uri: Optional[str] = typer.Option(None, help="s3://bucket/prefix to upload the code to (sagemaker)."),
    max_runtime: int = typer.Option(86400, help="MaxRuntimeInSeconds: the job is stopped after this."),
    as_json: bool = typer.Option(False, "--json", help="Print the final record as JSON."),
):
    """Launch a training job and record it, on this machine (local) or on SageMaker."""
    book = open_book_to_record()  # a read-only ledger is refused here, before anything runs
    settings = book.settings
    if algorithm and algorithm not in ALGORITHMS:
        raise UsageError(f"unknown algorithm {algorithm!r}", f"use one of: {', '.join(sorted(ALGORITHMS))}")
    if not algorithm and not entry_point:
        raise UsageError("no entry point", "give a script (ledger run train.py) or --algorithm xgboost")
    if framework and image:
        raise UsageError("--framework and --image both name the image", "give one of them")
    if framework:
        image = build_framework_image(framework, region)
    hyperparameters = parse_assignments(hp, "--hp")
    metrics = parse_assignments(metric, "--metric")
    channels = parse_assignments(channel, "--channel")
    content_types = parse_content_types(content_type, list(channels))
    if backend == "local":
        channels = {name: as_file_uri(uri, name) for name, uri in channels.items()}
    elif any(not uri.startswith("s3://") for uri in channels.values()):
        raise UsageError("SageMaker reads channels from S3 only", "give s3:// URIs with --backend sagemaker")

    source_uri, source = None, None
    if entry_point:
        script = Path(entry_point)
        source = (source_dir or script.parent).expanduser().resolve()
        relative = entry_point if source_dir else script.name
        if not (source / relative).is_file():
            raise NotFound(f"entry point {relative} is not in {source}", "check the script's name and --source-dir")
        source_uri = _stage_source(source, backend, code_uri, settings, job_name or script.stem)
        entry_point = relative
    if backend == "sagemaker" and not (role and output_path):
        raise UsageError("--backend sagemaker needs --role and --output-path", "give both, e.g. --output-path "
                         "s3://my-bucket/output")
    request = build_request(
        job_name=job_name or build_job_name(Path(entry_point).stem if entry_point else algorithm),
        entry_point=entry_point, source_uri=source_uri, hyperparameters=hyperparameters, channels=channels,
        metrics=metrics, instance_type=instance_type, instance_count=instance_count,
        image=image or build_algorithm_image("xgboost", region), role=role or DEFAULT_ROLE,
        output_path=output_path or (settings.home / "output").as_uri(), max_runtime=max_runtime,
        content_types=content_types,
    )
    record = launch_job(book, request, backend=backend, project=project, workdir=source,
                        log=(lambda line: err.print(line, markup=False, highlight=False)) if as_json else None)
    if as_json:
        print_json(record.to_dict())
    else:
        metrics_text = ", ".join(f"{k}={v:.6g}" for k, v in sorted(record.outcome.metrics.items()) if v is not None)
        out.print(f"{record.run_id} {record.job_name}: {record.outcome.status}"
                  + (f" ({metrics_text})" if metrics_text else "")
                  + (f": {record.outcome.failure_reason}" if record.outcome.failure_reason else ""),
                  markup=False, highlight=False)
    if record.outcome.status != "Completed":
        raise typer.Exit(1)


def _stage_source(source: Path, backend: str, code_uri: str | None, settings, base: str) -> str:
    """Where the code is read from: the content store locally, an uploaded sourcedir.tar.gz on SageMaker."""
    archive = pin_source_dir(source, open_content_store(settings.home))
    if backend == "local":
        return archive["uri"]
    if not code_uri or not code_uri.startswith("s3://"):
        raise UsageError("--backend sagemaker needs --code-uri s3://bucket/prefix", "the code is uploaded there")
    bucket, prefix = parse_s3_uri(code_uri.rstrip("/") + "/")
    key = f"{prefix}{base}/source/sourcedir.tar.gz"
    client_for(None, "s3").upload_file(str(open_content_store(settings.home).path_of(archive["sha256"])), bucket, key)
    return f"s3://{bucket}/{key}"


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
