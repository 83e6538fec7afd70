"""The local backend: runs a CreateTrainingJob request on this machine under the SageMaker training contract.

`LocalBackend.launch` strings the parts together: the pure plan (contract.py), staging (staging.py), the job's
process (process.py), the artifacts (staging.py) and the outcome (contract.py). A script-mode entry point runs
with this interpreter and the toolkit's SM_* environment; a request for a built-in algorithm's image with no entry
point runs this project's stand-in for it (ledger/backends/algorithms/).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from ledger.backends.base import LaunchResult, LogFn
from ledger.backends.local.contract import (
    HOST,
    JobPlan,
    MetricParser,
    build_command,
    build_local_outcome,
    build_process_env,
    build_training_env,
    cloudwatch_form,
    plan_local_job,
)
from ledger.backends.local.process import ProcessEnd, count_gpus, run_process
from ledger.backends.local.staging import (
    S3,
    check_local_inputs,
    damaged_inputs,
    known_secrets,
    layout_job_root,
    read_failure_text,
    save_artifact,
    seal_config_files,
    stage_channel,
    stage_code,
    write_config_files,
)
from ledger.capture.content_store import ContentStore
from ledger.capture.secrets import redact_known
from ledger.errors import LedgerError, NotFound, UsageError
from ledger.record import utc_now

LOG_TAIL_LINES = 20


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


def _print_line(line: str) -> None:
    print(line, flush=True)


class LocalBackend:
    """Runs a CreateTrainingJob request on this machine. See the module docstring for the layout."""

    name = "local"

    def __init__(self, home: str | Path | None = None, stop_grace_seconds: float = 120.0, **_unused: Any):
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
        outcome = build_local_outcome(
            exit_code=end.exit_code,
            stopped_by=end.stopped_by,
            max_runtime=plan.max_runtime,
            failure_text=read_failure_text(root, plan),
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
        known = known_secrets(plan)
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
        damaged = damaged_inputs(root)
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
