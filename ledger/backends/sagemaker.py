"""The SageMaker backend: send the request with boto3, wait for the job to end, describe it.

It costs money on real AWS, so callers ask for confirmation first (reproduce does). In tests it runs against
moto's server, where a job is Completed at once and never runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ledger.backends.base import LaunchResult, LogFn
from ledger.recorder import TERMINAL_STATUSES, build_outcome, capture_model_artifact


class SageMakerBackend:
    name = "sagemaker"

    def __init__(self, session: Any = None, poll_seconds: float = 15.0, wait: bool = True):
        self.session = session
        self.poll_seconds = poll_seconds
        self.wait = wait

    def launch(self, request: dict[str, Any], *, job_dir: Path | None = None, log: LogFn | None = None,
               pins: dict[str, dict] | None = None, source_archive: dict[str, Any] | None = None) -> LaunchResult:
        from ledger.capture import client_for
        from ledger.hooks import already_captured

        log = log or print
        sagemaker = client_for(self.session, "sagemaker")
        with already_captured():  # the request was captured by our caller; autolog must not record it twice
            response = sagemaker.create_training_job(**request)
        log(f"ledger: launched {response['TrainingJobArn']}")
        description = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
        while self.wait and description.get("TrainingJobStatus") not in TERMINAL_STATUSES:
            time.sleep(self.poll_seconds)
            description = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
        uri = (description.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        artifact = capture_model_artifact(uri, self.session) if uri and description.get(
            "TrainingJobStatus") == "Completed" else None
        return LaunchResult(outcome=build_outcome(description, artifact))
