"""A stand-in for AWS on this machine, for offline notebooks, demos and tests. It is not AWS: what runs here proves
nothing about a run on AWS, and nothing here reaches an AWS account.

    aws = start_local_aws()      # moto's server on 127.0.0.1, and this process pointed at it
    ...                          # SageMaker SDK 2.x / 3.x, boto3 and the ledger work unchanged
    aws.stop()                   # the environment as it was before

What it does:
  * starts moto's ThreadedMotoServer (S3, ECR, SageMaker, STS, CloudWatch Logs, ...) on 127.0.0.1, a free port;
  * sets AWS_ENDPOINT_URL, fake credentials and the region in os.environ (so child processes such as `!ledger ...`
    reach it too), and a SageMaker SDK config that opts out of telemetry and names the default bucket (which it
    creates), and SAGEMAKER_VALIDATE_ROLE=false (SDK 3.x checks the role with IAM SimulatePrincipalPolicy, which
    moto does not answer); every variable it set is put back as it was by stop();
  * publishes a placeholder manifest for the built-in XGBoost image in the image account SageMaker uses in the
    region, and lets ECR calls that name that account (registryId) read it, as AWS lets anyone pull those images.
    Its digest is the sha256 of the placeholder manifest, not of AWS's image;
  * makes training jobs run. moto records a CreateTrainingJob and calls it Completed at once, without running
    anything. A botocore handler keeps the request as it was sent (before-call) and, once moto has accepted it
    (after-call), runs it on the ledger's LocalBackend, as SageMaker would run the container: the channels as they
    are in S3 now, model.tar.gz written to <S3OutputPath>/<job>/output/model.tar.gz (where moto's
    DescribeTrainingJob says it is), the job's log in CloudWatch Logs (/aws/sagemaker/TrainingJobs), and the
    job's status, failure reason, times and final metrics put into moto's description of the job (instead of
    moto's made-up ones). The job runs while CreateTrainingJob returns: when the SDK first asks, it has ended.
    What the local backend runs is what can run here: the built-in XGBoost image, and script-mode jobs (an entry
    point run with this Python environment); any other job ends Failed, saying why.

It runs for every CreateTrainingJob sent to it, including those the ledger itself sends (a reproduction on the
`sagemaker` backend), so the ledger's own settle (DescribeTrainingJob) records a real model digest.

moto is a test dependency; install the stand-in with: pip install 'sagemaker-ledger[local-aws]'.
Start it before any boto3 client or SageMaker session is made: clients made earlier keep pointing at AWS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ledger.errors import LedgerError

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account: the user's own
ACCESS_KEY = "local-aws-stand-in"
DEFAULT_BUCKET = f"sagemaker-{REGION}-{ACCOUNT}"  # the name the SageMaker SDKs give the default bucket
# The AWS-owned accounts and repositories of the built-in images the stand-in publishes (and the local backend runs).
BUILTIN_IMAGES = {REGION: ("683313688378", "sagemaker-xgboost", ("1.7-1", "1.5-1", "1.3-1"))}
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
INSTALL_HINT = "install the stand-in with: pip install 'sagemaker-ledger[local-aws]'"
_CURRENT: LocalAWS | None = None  # the running stand-in of this process

CREATE_SENT = "before-call.sagemaker.CreateTrainingJob"
CREATE_DONE = "after-call.sagemaker.CreateTrainingJob"
ECR_SEND = "before-send.ecr"
REQUEST_KEY = "local_aws_request"  # where before-call leaves the sent request in the request context

_ENV_NAMES = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "AWS_SECURITY_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
              "SAGEMAKER_USER_CONFIG_OVERRIDE", "SAGEMAKER_VALIDATE_ROLE")


@dataclass
class LocalAWS:
    """A running stand-in. `endpoint` is moto's URL; `stop()` ends it and restores the environment."""

    endpoint: str
    region: str
    workdir: Path
    jobs: dict[str, dict] = field(default_factory=dict)  # job name -> what the stand-in did with it
    _server: Any = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    _saved_log_level: int | None = None
    _handlers: list[tuple[str, Any]] = field(default_factory=list)
    _lock: Any = field(default_factory=threading.Lock)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._server is not None else "stopped"
        return f"<LocalAWS stand-in for AWS (moto), {state} at {self.endpoint}, region {self.region}>"

    # --- the handlers ---------------------------------------------------------------------------------------

    def _mine(self, url: str | None) -> bool:
        return self._server is not None and bool(url) and url.startswith(self.endpoint)

    def _keep_sent_request(self, params: dict, context: dict | None = None, **_: Any) -> None:
        """before-call: the request exactly as it goes out (after the ledger pinned it and botocore validated it)."""
        if context is None or not self._mine(params.get("url")):
            return
        try:
            context[REQUEST_KEY] = json.loads(params.get("body") or b"{}")
        except ValueError:
            pass

    def _run_accepted_job(self, parsed: dict, context: dict | None = None, **_: Any) -> None:
        """after-call: moto accepted the job; run it here, as SageMaker would, before the SDK asks about it."""
        request = (context or {}).pop(REQUEST_KEY, None)
        arn = (parsed or {}).get("TrainingJobArn")
        if not request or not arn:
            return
        try:
            self.run_training_job(request, arn)
        except Exception as error:  # noqa: BLE001 - the stand-in must never break the caller's create call
            try:
                self._set_job(arn, status="Failed", failure_reason=f"the local AWS stand-in failed: {error}")
            except Exception:  # noqa: BLE001, S110 - moto then describes the job as it made it
                pass

    def _read_as_registry(self, request: Any, **_: Any) -> None:
        """before-send ECR: a call that names a registry (registryId) is answered by moto as that account, so the
        built-in images published under AWS's image accounts can be read, as anyone can pull them on AWS."""
        if not self._mine(getattr(request, "url", None)):
            return
        try:
            registry = json.loads(request.body or b"{}").get("registryId")
        except (ValueError, AttributeError, TypeError):
            return
        if registry:
            request.headers["x-moto-account-id"] = str(registry)

    # --- running a job ----------------------------------------------------------------------------------------

    def run_training_job(self, request: dict, arn: str) -> dict:
        """Run a CreateTrainingJob request on this machine and make moto describe what happened."""
        from ledger.backends.local import LocalBackend

        name = request["TrainingJobName"]
        lines: list[str] = []
        started = time.time()
        try:
            result = LocalBackend(home=self.workdir).launch(request, job_dir=self.workdir / "jobs" / name,
                                                            log=lines.append)
            outcome = result.outcome
            status, reason, metrics = outcome.status, outcome.failure_reason, outcome.metrics
        except LedgerError as error:  # a job this machine cannot run: it fails, saying why, as a job would
            status, reason, metrics = "Failed", f"the local AWS stand-in cannot run this job: {error}", {}
            lines.append(reason)
        ended = time.time()
        self._set_job(arn, status=status, failure_reason=reason if status != "Completed" else None,
                      metrics=metrics, started=started, ended=ended, request=request)
        try:
            self._put_log(name, lines, started)
        except Exception as error:  # noqa: BLE001 - the job's outcome stands without its log
            lines.append(f"the local AWS stand-in could not write the log to CloudWatch Logs: {error}")
        done = {"status": status, "failure_reason": reason, "metrics": metrics, "seconds": round(ended - started, 3),
                "log_lines": len(lines)}
        with self._lock:
            self.jobs[name] = done
        return done

    def _set_job(self, arn: str, *, status: str, failure_reason: str | None = None, metrics: dict | None = None,
                 started: float | None = None, ended: float | None = None, request: dict | None = None) -> None:
        """Change moto's record of the job (moto runs in this process): what DescribeTrainingJob will answer."""
        from datetime import UTC, datetime

        from moto.sagemaker.models import sagemaker_backends

        _, _, _, region, account, resource = arn.split(":", 5)
        job = sagemaker_backends[account][region].training_jobs.get(resource.split("/", 1)[1])
        if job is None:
            return
        stamp = datetime.fromtimestamp(ended or time.time(), tz=UTC)
        job.training_job_status = job.secondary_status = status
        if failure_reason:
            job.failure_reason = failure_reason[:1024]
        if request is not None:  # moto replaces the metric definitions with its own example; put the sent ones back
            job.algorithm_specification["MetricDefinitions"] = list(
                (request.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or [])
        job.final_metric_data_list = [{"MetricName": k, "Value": float(v), "Timestamp": stamp}
                                      for k, v in sorted((metrics or {}).items())]
        if started is not None and ended is not None:
            job.training_start_time = datetime.fromtimestamp(started, tz=UTC)
            job.training_end_time = job.last_modified_time = stamp
            job.billable_time_in_seconds = max(1, round(ended - started))
        if status != "Completed":
            job.model_artifacts = None  # SageMaker keeps no model of a failed job

    def _put_log(self, name: str, lines: list[str], started: float) -> None:
        """The job's output in CloudWatch Logs, where the SDKs' fit(logs=True) reads it."""
        import boto3

        logs = boto3.client("logs", endpoint_url=self.endpoint, region_name=self.region)
        try:
            logs.create_log_group(logGroupName=LOG_GROUP)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        stream = f"{name}/algo-1-{int(started)}"
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
        stamp = int(started * 1000)
        events = [{"timestamp": stamp + i, "message": line or " "} for i, line in enumerate(lines)]
        for i in range(0, len(events), 5000):
            logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events[i:i + 5000])

    # --- stopping ---------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server, remove the handlers and put back every environment variable the stand-in set."""
        global _CURRENT
        if self._server is None:
            return
        if _CURRENT is self:
            _CURRENT = None
        _uninstall(self._handlers)
        self._handlers = []
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}
        if self._saved_log_level is not None:
            logging.getLogger("werkzeug").setLevel(self._saved_log_level)
        server, self._server = self._server, None
        try:
            server.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _install(handlers: list[tuple[str, Any]]) -> None:
    """For every botocore session made from now on (BUILTIN_HANDLERS), and for boto3's default session."""
    import boto3
    from botocore import handlers as builtin

    builtin.BUILTIN_HANDLERS.extend(handlers)
    if boto3.DEFAULT_SESSION is not None:
        for event, handler in handlers:
            boto3.DEFAULT_SESSION.events.register(event, handler)


def _uninstall(handlers: list[tuple[str, Any]]) -> None:
    import boto3
    from botocore import handlers as builtin

    builtin.BUILTIN_HANDLERS[:] = [h for h in builtin.BUILTIN_HANDLERS if h not in handlers]
    if boto3.DEFAULT_SESSION is not None:
        for event, handler in handlers:
            boto3.DEFAULT_SESSION.events.unregister(event, handler)


def _sdk_config(path: Path) -> Path:
    """A SageMaker SDK config (2.x and 3.x): no telemetry sent to AWS about stand-in jobs, and the default bucket
    named, so the SDKs do not ask STS at its fixed regional endpoint (which ignores AWS_ENDPOINT_URL)."""
    path.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
                    f"      Session:\n        DefaultS3Bucket: {DEFAULT_BUCKET}\n")
    return path


def build_placeholder_manifest(repository: str, tag: str) -> bytes:
    """Pure: the manifest the stand-in publishes for a built-in image (no layers: nothing can be pulled)."""
    config = "sha256:" + hashlib.sha256(f"local-aws-stand-in/{repository}:{tag}".encode()).hexdigest()
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 0,
                                  "digest": config}, "layers": []}, sort_keys=True).encode()


def _publish_builtin_images(endpoint: str, region: str) -> None:
    import boto3

    account, repository, tags = BUILTIN_IMAGES.get(region, (None, None, ()))
    if not account:
        return
    ecr = boto3.client("ecr", endpoint_url=endpoint, region_name=region)
    ecr.meta.events.register("before-send.ecr.*", lambda request, **_: request.headers.__setitem__(
        "x-moto-account-id", account))
    try:
        ecr.create_repository(repositoryName=repository)
    except ecr.exceptions.RepositoryAlreadyExistsException:  # moto's state outlives a stand-in in this process
        return
    for tag in tags:
        manifest = build_placeholder_manifest(repository, tag)
        ecr.put_image(repositoryName=repository, imageManifest=manifest.decode(), imageTag=tag,
                      imageDigest="sha256:" + hashlib.sha256(manifest).hexdigest())


def current_local_aws() -> LocalAWS | None:
    """The stand-in this process started and has not stopped, or None."""
    return _CURRENT


def start_local_aws(region: str = REGION) -> LocalAWS:
    """Start the stand-in for AWS (see the module docstring) and point this process and its children at it.
    While one is running, this returns it (a notebook cell run twice starts one stand-in).

    Raises LedgerError when moto is not installed. The stand-in is not AWS: nothing reaches an AWS account.
    """
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise LedgerError("the local AWS stand-in needs moto's server, which is not installed", INSTALL_HINT) from None
    import boto3

    workdir = Path(tempfile.mkdtemp(prefix="ledger-local-aws-"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = LocalAWS(endpoint=f"http://{host}:{port}", region=region, workdir=workdir, _server=server)
    aws._saved_env = {name: os.environ.get(name) for name in _ENV_NAMES}
    server_log = logging.getLogger("werkzeug")  # the server logs every request at INFO: not in a notebook
    aws._saved_log_level = server_log.level
    server_log.setLevel(logging.WARNING)
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        os.environ.pop(name, None)
    os.environ.update({"AWS_ENDPOINT_URL": aws.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                       "AWS_SECRET_ACCESS_KEY": ACCESS_KEY, "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
                       "SAGEMAKER_USER_CONFIG_OVERRIDE": str(_sdk_config(workdir / "sagemaker-config.yaml")),
                       "SAGEMAKER_VALIDATE_ROLE": "false"})  # SDK 3.x asks IAM SimulatePrincipalPolicy: moto has none
    try:
        aws._handlers = [(CREATE_SENT, aws._keep_sent_request), (CREATE_DONE, aws._run_accepted_job),
                         (ECR_SEND, aws._read_as_registry)]
        _install(aws._handlers)
        s3 = boto3.client("s3", endpoint_url=aws.endpoint, region_name=region)
        if DEFAULT_BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=DEFAULT_BUCKET)
        _publish_builtin_images(aws.endpoint, region)
    except BaseException:
        aws.stop()
        raise
    _CURRENT = aws
    return aws


__all__ = ["LocalAWS", "build_placeholder_manifest", "current_local_aws", "start_local_aws"]
