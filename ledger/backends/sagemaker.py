"""The SageMaker backend: send the request with boto3, wait for the job to end, describe it.

It costs money on real AWS, so callers ask for confirmation first (reproduce does). In tests it runs against
moto's server, where a job is Completed at once and never runs. The request was captured by the caller before it
comes here: the caller also keeps autolog from recording it a second time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ledger.backends.base import LaunchResult, LogFn
from ledger.capture import client_for
from ledger.capture.outcome import TERMINAL_STATUSES, capture_finished_outcome


class SageMakerBackend:
    name = "sagemaker"

    def __init__(self, session: Any = None, poll_seconds: float = 15.0, wait: bool = True, **_unused: Any):
        self.session = session
        self.poll_seconds = poll_seconds
        self.wait = wait

    def launch(self, request: dict[str, Any], *, job_dir: Path | None = None, log: LogFn | None = None,
               pins: dict[str, dict] | None = None, source_archive: dict[str, Any] | None = None) -> LaunchResult:
        log = log or print
        sagemaker = client_for(self.session, "sagemaker")
        response = sagemaker.create_training_job(**request)
        log(f"ledger: launched {response['TrainingJobArn']}")
        description = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
        while self.wait and description.get("TrainingJobStatus") not in TERMINAL_STATUSES:
            time.sleep(self.poll_seconds)
            description = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
        return LaunchResult(outcome=capture_finished_outcome(description, self.session))
