"""Local jobs' environments against their peers, side by side in one run (by hand, not in CI).

1. Start-up once the environment is cached: the same small script run directly with the environment's own
   `python train.py`, and as a local job (plan, the cached environment found by its lock digest, the namespace
   made, data and code staged, config files, the log streamed, model.tar.gz packed). Median of N runs, for the
   xgboost 1.7-1 profile and for a first local run's environment (the recorded set, layered). Aim: under 0.5 s
   added.
2. The first build of the xgboost 1.7-1 profile with uv and with pip (each from an empty package cache of its own:
   uv with a new UV_CACHE_DIR, pip with PIP_NO_CACHE_DIR), the same lock, the same Python. Median of B builds,
   and the ratio.

    .venv/bin/python bench/bench_job_environments.py [--runs 10] [--builds 3] [--skip-builds]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import count
from pathlib import Path

from ledger.backends.local import environments
from ledger.backends.local.backend import LocalBackend
from ledger.backends.local.environments import ensure_environment, find_profile, plan_environment
from ledger.capture.environment import capture_environment

SCRIPT = """import os
print("rows:", sum(1 for _ in open(os.path.join(os.environ.get("SM_CHANNEL_TRAIN", "data"), "train.csv"))))
"""
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def bench_start_up(work: Path, runs: int, image: str) -> tuple[float, float, str]:
    source, data = work / "src", work / "data"
    source.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    (source / "train.py").write_text(SCRIPT)
    (data / "train.csv").write_text("1,2,3\n" * 1000)
    backend = LocalBackend(home=work / "home")
    numbers = count()

    def request() -> dict:
        return {
            "TrainingJobName": f"bench-{next(numbers)}",
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "HyperParameters": {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": f'"{source.as_uri()}"'},
            "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
                "S3Uri": data.as_uri(), "S3DataType": "S3Prefix"}}}],
            "OutputDataConfig": {"S3OutputPath": (work / "out").as_uri()},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }

    first = backend.launch(request(), log=lambda line: None)  # builds the environment when it is not cached yet
    assert first.outcome.status == "Completed", first.outcome.failure_reason
    prepared = backend.prepare(request(), log=lambda line: None)
    python = str(prepared.environment.python)
    env = {**os.environ, "SM_CHANNEL_TRAIN": str(data)}
    direct = [timed(lambda: subprocess.run([python, str(source / "train.py")], env=env, check=True,
                                           capture_output=True)) for _ in range(runs)]
    as_job = [timed(lambda: backend.launch(request(), log=lambda line: None)) for _ in range(runs)]
    return statistics.median(direct), statistics.median(as_job), prepared.plan.describe()


def bench_first_build(work: Path, builds: int) -> tuple[float, float, str]:
    profile = find_profile("xgboost:1.7-1")
    launching = capture_environment()
    minor = next(m for m in profile.pythons if environments.find_python(m))
    plan = plan_environment(image=XGBOOST_IMAGE, recorded=None, current=(launching.python, launching.packages),
                            current_layer=None, requirements=None, pythons={minor})
    times = {"uv": [], "pip": []}
    real_find_uv = environments.find_uv
    for n in range(builds):
        for tool in ("uv", "pip"):
            cache = work / f"{tool}-{n}"
            os.environ["UV_CACHE_DIR"] = str(cache / "uv-cache")  # empty: a first build downloads everything
            os.environ["PIP_NO_CACHE_DIR"] = "1"
            environments.find_uv = real_find_uv if tool == "uv" else (lambda: None)
            try:
                times[tool].append(timed(lambda: ensure_environment(plan, cache / "environments", lambda line: None)))
            finally:
                environments.find_uv = real_find_uv
                os.environ.pop("UV_CACHE_DIR")
                os.environ.pop("PIP_NO_CACHE_DIR")
            print(f"  build {n + 1}/{builds} with {tool}: {times[tool][-1]:.1f} s", flush=True)
    return statistics.median(times["uv"]), statistics.median(times["pip"]), f"Python {minor}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--builds", type=int, default=3)
    parser.add_argument("--skip-builds", action="store_true")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="ledger-bench-env-") as tmp:
        os.environ.setdefault("LEDGER_ENV_CACHE", str(Path(tmp) / "environments"))
        print(f"1. start-up once the environment is cached (median of {args.runs})")
        print(f"   {'environment':<62} {'python train.py':>16} {'as a local job':>15} {'added':>8}")
        for image in (XGBOOST_IMAGE, "python:3.11"):
            work = Path(tmp) / f"start-{len(image)}"
            work.mkdir()
            direct, job, what = bench_start_up(work, args.runs, image)
            added = job - direct
            failed |= added >= 0.5
            print(f"   {what:<62} {direct:>14.3f} s {job:>13.3f} s {added:>6.3f} s  (aim < 0.5 s)")
        if not args.skip_builds:
            print(f"2. first build of the xgboost 1.7-1 profile, empty caches (median of {args.builds})")
            uv, pip, python = bench_first_build(Path(tmp) / "builds", args.builds)
            print(f"   {python}: uv {uv:.1f} s, pip {pip:.1f} s: pip takes {pip / uv:.1f}x as long as uv")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
