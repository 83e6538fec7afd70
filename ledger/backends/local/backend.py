"""The local backend: runs a CreateTrainingJob request on this machine under the SageMaker training contract.

`LocalBackend.prepare` (before anything is recorded) plans the job (contract.py), builds or finds its Python
environment (environments.py) and finds how to make its namespace (sandbox.py); `launch` stages data and code
(staging.py), runs the job's process (process.py) in its namespace with /opt/ml its own, packs the artifacts
(staging.py) and describes the outcome (contract.py). A script-mode entry point runs with the job environment's
interpreter and the toolkit's SM_* environment; a built-in algorithm's image with no entry point runs this
project's stand-in for it (ledger/backends/algorithms/); SDK 3.x's ContainerEntrypoint runs as it was sent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ledger.backends.algorithms import ALGORITHM_SCRIPTS
from ledger.backends.base import LaunchResult, LogFn
from ledger.backends.local.contract import (
    HOST,
    SM_TRAIN,
    JobPlan,
    MetricParser,
    build_command,
    build_local_outcome,
    build_process_env,
    build_training_env,
    cloudwatch_form,
    plan_local_job,
)
from ledger.backends.local.environments import (
    MARKER,
    SUPPORT_DIR,
    EnvironmentPlan,
    JobEnvironment,
    ensure_environment,
    find_python,
    match_image,
    minor_of,
    plan_environment,
    read_lock_packages,
)
from ledger.backends.local.environments import find_unsatisfied_requirements as _find_unsatisfied
from ledger.backends.local.process import ProcessEnd, count_gpus, run_process
from ledger.backends.local.sandbox import OPT_ML, Sandbox, build_sandboxed_command, find_sandbox
from ledger.backends.local.staging import (
    S3,
    check_local_inputs,
    check_sdk3_drivers,
    damaged_inputs,
    known_secrets,
    layout_job_root,
    read_failure_text,
    read_requirements,
    save_artifact,
    seal_config_files,
    stage_channel,
    stage_code,
    write_config_files,
)
from ledger.capture.content_store import ContentStore
from ledger.capture.secrets import redact_known
from ledger.errors import LedgerError, NotFound, UsageError
from ledger.record import sha256_hex, utc_now

SM_TRAIN_NAME = SM_TRAIN.rsplit("/", 1)[-1]

LOG_TAIL_LINES = 20


def find_unsatisfied_requirements(requirements_text: str) -> list[str]:
    """The lines of a requirements.txt that this interpreter's packages do not satisfy; anything unreadable counts."""
    from ledger.capture.environment import installed_packages

    return _find_unsatisfied(requirements_text, installed_packages())


def _print_line(line: str) -> None:
    print(line, flush=True)


@dataclass
class Preparation:
    """What `prepare` made ready for one job: its environment (built), its namespace, and the gaps to record."""

    job: JobPlan
    plan: EnvironmentPlan
    environment: JobEnvironment
    sandbox: Sandbox
    gaps: list[dict[str, str]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """What stood in for the image, for the record (pins.image.ran): observed, and how."""
        plan, env, profile = self.plan, self.environment, self.plan.profile
        running = (f"running SDK 3.x's {' '.join(self.job.entrypoint[:1])} {SM_TRAIN_NAME}" if self.job.entrypoint
                   else f"running the ledger's {self.job.algorithm} stand-in "
                   f"(ledger/backends/algorithms/{ALGORITHM_SCRIPTS[self.job.algorithm].name})" if self.job.algorithm
                   else f"running the entry point {self.job.program}")
        exact = ("" if plan.python_exact is None else
                 " (the image's own minor version)" if plan.python_exact else f" (the image has {profile.image_python})")
        requirements = self.requirements_text
        return {
            "kind": "python environment", "fingerprint": plan.lock_sha256, "lock_sha256": plan.lock_sha256,
            "origin": plan.origin, "profile": profile.name if profile else None, "image": plan.image,
            "python": env.python_version, "python_exact": plan.python_exact,
            "image_python": profile.image_python if profile else None,
            "requirements": {"sha256": sha256_hex(requirements), "installed_on_top": bool(plan.requirements)}
            if requirements else None,
            "deviations": list(plan.deviations), "built_with": env.tool,
            "namespace": self.sandbox.how if self.sandbox.available else None,
            **({"recorded_set": read_lock_packages(plan.base_lock)} if plan.origin == "recorded set" else {}),
            **({"layered_over": env.layer} if env.layer else {}),
            "how": f"{plan.describe()}, Python {env.python_version}{exact}, {running}",
        }

    @property
    def packages(self) -> dict[str, str]:
        """The job environment's packages: its own, over the set of the environment it is layered over."""
        layer = read_lock_packages(self.plan.base_lock) if self.environment.layer else {}
        return dict(sorted({**layer, **self.environment.packages}.items()))

    @property
    def requirements_text(self) -> str | None:
        return self.plan.requirements if self.plan.requirements else (
            self.requirements_seen if self.plan.requirements_satisfied else None)

    requirements_seen: str | None = None


class LocalBackend:
    """Runs a CreateTrainingJob request on this machine. See the module docstring for the layout."""

    name = "local"

    def __init__(self, home: str | Path | None = None, stop_grace_seconds: float = 120.0, **_unused: Any):
        self.home = Path(home) if home else None
        self.stop_grace_seconds = stop_grace_seconds  # SageMaker gives a stopped job 120 s after SIGTERM

    def plan(self, request: dict[str, Any], *, pins: dict[str, dict] | None = None,
             source_archive: dict[str, Any] | None = None, image: str | None = None,
             recorded: tuple[str, dict] | None = None) -> tuple[JobPlan, EnvironmentPlan]:
        """The job and its environment, planned and checked, nothing built: what the preflight asks. `image` is the
        image as named by tag where the request names it by digest; `recorded` the run's recorded (Python,
        packages), for a relaunch. Raises a LedgerError for what cannot run here."""
        from ledger.capture.environment import capture_environment

        settings = self._settings()
        job = plan_local_job(request, home=settings.home, pins=pins, source_archive=source_archive)
        check_local_inputs(job)
        if job.entrypoint and not find_sandbox().available:
            raise UsageError(f"SDK 3.x's drivers read /opt/ml, and no private mount namespace can be made here: "
                             f"{find_sandbox().why_not}", "run as root, or allow user namespaces; or reproduce it "
                             "on SageMaker: --backend sagemaker")
        s3 = S3()
        if job.entrypoint:
            check_sdk3_drivers(job, s3)
        requirements = read_requirements(job, ContentStore(settings.home), s3)
        launching = capture_environment()
        current = (launching.python, launching.packages)
        image = image or (request.get("AlgorithmSpecification") or {}).get("TrainingImage")
        profile, _ = match_image(image)
        minors = ([m for m, kind in profile.pythons.items() if kind == "exact"] + [minor_of(current[0])] if profile
                  else [minor_of((recorded or current)[0])])
        kwargs = dict(image=image, recorded=recorded, current=current, requirements=requirements,
                      current_layer=_site_packages_of_this_environment())
        for minor in dict.fromkeys(minors):  # the image's own Python first, if it is cached or on this machine
            candidate = None
            try:
                candidate = plan_environment(**kwargs, pythons={minor})
            except UsageError:
                continue
            if (settings.env_cache / candidate.cache_key / MARKER).is_file() or find_python(minor):  # built, or can be
                return job, candidate
        return job, plan_environment(**kwargs, pythons=set())  # raises: which Python is missing, and what to do

    def prepare(self, request: dict[str, Any], *, pins: dict[str, dict] | None = None,
                source_archive: dict[str, Any] | None = None, image: str | None = None,
                recorded: tuple[str, dict] | None = None, log: LogFn | None = None) -> Preparation:
        """Plan the job, build (or find) its environment, find its namespace: before the run is recorded, so that
        a job that cannot run here leaves no record, and the record says what ran."""
        log = log or _print_line
        job, plan = self.plan(request, pins=pins, source_archive=source_archive, image=image, recorded=recorded)
        environment = ensure_environment(plan, self._settings().env_cache, log)
        sandbox = find_sandbox()
        gaps = [] if sandbox.available else [{
            "what": "/opt/ml", "why": f"no private mount namespace could be made ({sandbox.why_not}): the job ran "
            "with its tree at LEDGER_HOME/jobs/<job>, and SM_* and SAGEMAKER_BASE_DIR named that path",
            "fix": "run as root, or allow user namespaces (kernel.unprivileged_userns_clone=1), with unshare "
                   "(util-linux) on PATH"}]
        requirements = plan.requirements or (read_requirements(job, ContentStore(self._settings().home), S3())
                                             if plan.requirements_satisfied else None)
        return Preparation(job=job, plan=plan, environment=environment, sandbox=sandbox, gaps=gaps,
                           requirements_seen=requirements)

    def _settings(self):
        from ledger.config import load_settings

        settings = load_settings()
        return settings if self.home is None else replace(settings, home=self.home)

    def launch(
        self,
        request: dict[str, Any],
        *,
        job_dir: Path | None = None,
        log: LogFn | None = None,
        pins: dict[str, dict] | None = None,
        source_archive: dict[str, Any] | None = None,
        prepared: Preparation | None = None,
    ) -> LaunchResult:
        log = log or _print_line
        home = self._settings().home
        plan = plan_local_job(request, home=home, pins=pins, source_archive=source_archive)
        root = Path(job_dir) if job_dir else home / "jobs" / plan.job_name
        check_local_inputs(plan)
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"the job root {root} already exists", "give the job a new TrainingJobName")
        if prepared is None:
            prepared = self.prepare(request, pins=pins, source_archive=source_archive, log=log)
            for gap in prepared.gaps:
                log(f"ledger: gap: {gap['what']}: {gap['why']}")
        if plan.instance_count > 1:
            log(f"ledger: the job asks for {plan.instance_count} instances; the local backend runs one ({HOST})")

        started, started_at = time.monotonic(), utc_now()
        store, s3 = ContentStore(home), S3()
        data_pins, code = self._prepare(plan, root, store, s3, log)
        try:
            end, metrics, tail = self._run(plan, root, log, prepared, deadline=started + plan.max_runtime)
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

    def _run(self, plan: JobPlan, root: Path, log: LogFn, prepared: Preparation, *,
             deadline: float) -> tuple[ProcessEnd, MetricParser, list[str]]:
        """Run the job in its environment and namespace; every line to job.log, the metrics and `log`."""
        sandbox, environment = prepared.sandbox, prepared.environment
        seen = OPT_ML if sandbox.available else root  # where the job sees its tree
        sm_env = build_training_env(plan, seen, num_cpus=os.cpu_count() or 1, num_gpus=count_gpus())
        # a profile's job, and the built-in algorithm's stand-in, which reads channels with the XGBoost surface
        support = [str(SUPPORT_DIR)] if prepared.plan.profile is not None or plan.algorithm else []
        env = build_process_env(dict(os.environ), plan, seen, sm_env, environment=environment.path, support=support)
        command = build_command(plan, seen, environment.python)
        metrics = MetricParser(plan.metric_definitions)
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        known = known_secrets(plan)
        with open(root / "job.log", "w", encoding="utf-8") as log_file, \
                tempfile.TemporaryDirectory(prefix="ledger-job-") as scratch:

            def on_line(raw: str) -> None:
                line = cloudwatch_form(raw)
                metrics.feed(line, utc_now())
                line = redact_known(line, known)  # what is kept and shown has no secret in it
                log_file.write(line + "\n")
                log_file.flush()
                tail.append(line)
                log(line)

            if prepared.plan.requirements_satisfied:
                log("ledger: requirements.txt is satisfied by this environment; nothing to install")
            if sandbox.available:
                command = build_sandboxed_command(sandbox, command, tree=root, scratch=Path(scratch),
                                                  workdir=seen / "code", readonly=[environment.path])
            what = plan.program or (f"{plan.algorithm} (built-in algorithm)" if plan.algorithm else SM_TRAIN_NAME)
            log(f"ledger: running {what} in {prepared.plan.describe()} (Python {environment.python_version}), "
                + ("/opt/ml its own" if sandbox.available else "at its LEDGER_HOME paths"))
            end = run_process(command, cwd=root / "code", env=env, max_runtime=max(0.0, deadline - time.monotonic()),
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


def _site_packages_of_this_environment() -> str:
    """The launching environment's site-packages: a first run's environment is layered over it."""
    import sysconfig

    return sysconfig.get_paths()["purelib"]
