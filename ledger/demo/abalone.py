"""`ledger demo`, the main job, offline: train XGBoost on abalone three ways, record, reproduce, verify.

Everything lives under LEDGER_HOME/demo: the data (split from the copy of abalone the package carries), a git
project with the training script (and a local bare "origin", so the commit is pushed somewhere), and the runs.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from ledger.audit.collect import collect_report
from ledger.audit.render import render_html
from ledger.capture.content_store import open_content_store, pin_source_dir
from ledger.record import RunRecord
from ledger.run.launch import DEFAULT_ROLE, build_algorithm_image, build_job_name, build_request, launch_job
from ledger.run.reproduce import Reproduction, reproduce
from ledger.store.integrity import VerifyReport

PROJECT = "abalone-demo"
METRIC_REGEX = r".*\[[0-9]+\].*#011{}-rmse:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"
SEX = {"M": "1,0,0", "F": "0,1,0", "I": "0,0,1"}


@dataclass
class DemoResult:
    runs: list[RunRecord]
    reproduction: Reproduction | None
    verified: VerifyReport
    report: Path | None = None  # the audit report of the demo's runs


def build_csv_rows(raw: str) -> tuple[list[str], list[str]]:
    """Pure: abalone rows as the SageMaker XGBoost examples use them (label first, Sex one-hot, no header),
    split deterministically: every fifth row is validation."""
    train, validation = [], []
    for i, line in enumerate(line for line in raw.splitlines() if line.strip()):
        sex, *measures, rings = line.strip().split(",")
        row = ",".join([rings, SEX[sex], *measures])
        (validation if i % 5 == 0 else train).append(row)
    return train, validation


def prepare_data(root: Path) -> dict[str, Path]:
    raw = resources.files("ledger").joinpath("data/abalone.data").read_text()
    train, validation = build_csv_rows(raw)
    channels = {}
    for name, rows in (("train", train), ("validation", validation)):
        directory = root / "data" / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"abalone-{name}.csv").write_text("\n".join(rows) + "\n")
        channels[name] = directory
    return channels


def prepare_project(root: Path) -> Path:
    """A git project holding train.py, committed and pushed to a local bare origin, like a cloned repository."""
    project = root / "project"
    if (project / ".git").is_dir():
        return project
    project.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(str(resources.files("ledger").joinpath("data/demo/train.py")), project / "train.py")
    origin = root / "origin.git"

    def git(*args: str, cwd: Path = project) -> None:
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)

    try:
        git("init", "-q", "-b", "main")
        git("add", "train.py")
        git("-c", "user.name=Ledger Demo", "-c", "user.email=demo@ledger.invalid", "commit", "-q", "-m",
            "XGBoost on abalone, script mode")
        git("init", "-q", "--bare", str(origin), cwd=root)
        git("remote", "add", "origin", str(origin))
        git("push", "-q", "origin", "main")
    except (OSError, subprocess.CalledProcessError):
        pass  # no git here: the runs record the missing commit as a gap, and the demo goes on
    return project


def run_demo(book, step: Callable[[str], None] = lambda text: None) -> DemoResult:
    """The demo, recorded in `book` (the ledger the `ledger demo` command opened), under its LEDGER_HOME."""
    settings = book.settings
    root = settings.home / "demo"
    step("Preparing the abalone data and a git project")
    channels = {name: path.as_uri() for name, path in prepare_data(root).items()}
    project = prepare_project(root)
    metrics = {"train:rmse": METRIC_REGEX.format("train"), "validation:rmse": METRIC_REGEX.format("validation")}
    common = dict(metrics=metrics, channels=channels, instance_type="ml.m5.xlarge",
                  image=build_algorithm_image("xgboost", "us-east-1"), role=DEFAULT_ROLE,
                  output_path=(settings.home / "output").as_uri(), max_runtime=600)
    source = pin_source_dir(project, open_content_store(settings.home))["uri"]
    jobs = [
        ("script mode, max_depth=3", build_request(
            job_name=build_job_name("abalone-script-d3"), entry_point="train.py", source_uri=source,
            hyperparameters={"num_round": "50", "max_depth": "3", "eta": "0.2", "objective": "reg:squarederror"},
            **common)),
        ("script mode, max_depth=6", build_request(
            job_name=build_job_name("abalone-script-d6"), entry_point="train.py", source_uri=source,
            hyperparameters={"num_round": "50", "max_depth": "6", "eta": "0.2", "objective": "reg:squarederror"},
            **common)),
        ("built-in XGBoost algorithm", build_request(
            job_name=build_job_name("abalone-builtin"), entry_point=None, source_uri=None,
            hyperparameters={"num_round": "50", "max_depth": "5", "eta": "0.2", "subsample": "0.8",
                             "objective": "reg:squarederror", "seed": "7"},
            **common)),
    ]
    runs = []
    for label, request in jobs:
        step(f"Training and recording: {label}")
        runs.append(launch_job(book, request, backend="local", project=PROJECT, workdir=project,
                               log=lambda line: None))
    step(f"Reproducing {runs[0].job_name} from its pins")
    reproduction = reproduce(book, runs[0].run_id, backend="local", log=lambda line: None)
    step("Verifying the hash chain and every projection")
    verified = book.verify()
    step("Writing the audit report")
    report = root / "audit.html"
    report.write_text(render_html(collect_report(book, project=PROJECT)), encoding="utf-8")
    return DemoResult(runs=runs, reproduction=reproduction, verified=verified, report=report)
