"""The local backend against its peers, side by side in one run (by hand, not in CI).

1. Added time: the same small script run directly with `python` and as a local job (staging a small file://
   channel and the code, writing the config files, streaming the log, packing model.tar.gz). Median of N runs.
   Aim: under 0.5 s added.
2. Staging a 1 GB file:// channel (hash, copy into the content store, link into the job) against `sha256sum` of
   the same file, both with the file in the page cache. Cold = the store does not have it yet; warm = it does.
   Aim: cold within 1.5x of sha256sum.

    .venv/bin/python bench/bench_local_backend.py [--runs 10] [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ledger.backends.local.backend import LocalBackend
from ledger.backends.local.contract import ChannelPlan
from ledger.backends.local.staging import S3, stage_channel
from ledger.capture.content_store import ContentStore

SCRIPT = """import os
print("rows:", sum(1 for _ in open(os.path.join(os.environ.get("SM_CHANNEL_TRAIN", "data"), "train.csv"))))
"""


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def bench_added_time(work: Path, runs: int) -> tuple[float, float]:
    source, data = work / "src", work / "data"
    source.mkdir()
    data.mkdir()
    (source / "train.py").write_text(SCRIPT)
    (data / "train.csv").write_text("1,2,3\n" * 1000)
    env = {**os.environ, "SM_CHANNEL_TRAIN": str(data)}
    backend = LocalBackend(home=work / "home")

    def direct():
        subprocess.run([sys.executable, str(source / "train.py")], env=env, check=True, capture_output=True)

    def as_job(n=iter(range(10**6))):
        request = {
            "TrainingJobName": f"bench-{next(n)}",
            "AlgorithmSpecification": {"TrainingImage": "python:3.11", "TrainingInputMode": "File"},
            "HyperParameters": {"sagemaker_program": '"train.py"',
                                "sagemaker_submit_directory": f'"{source.as_uri()}"'},
            "InputDataConfig": [{"ChannelName": "train",
                                 "DataSource": {"S3DataSource": {"S3Uri": data.as_uri(), "S3DataType": "S3Prefix"}}}],
            "OutputDataConfig": {"S3OutputPath": (work / "out").as_uri()},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        }
        assert backend.launch(request, log=lambda line: None).outcome.status == "Completed"

    direct(), as_job()  # warm up imports and the page cache
    direct_times = [timed(direct) for _ in range(runs)]
    job_times = [timed(as_job) for _ in range(runs)]
    return statistics.median(direct_times), statistics.median(job_times)


def bench_staging(work: Path, size_mb: int, runs: int) -> tuple[float, float, float]:
    big = work / "big" / "channel.bin"
    big.parent.mkdir()
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(size_mb):
            f.write(block[i % 256:] + block[: i % 256])  # distinct blocks, so nothing is trivially repetitive
    channel = ChannelPlan("train", big.parent.as_uri(), "file", {})

    def sha256sum():
        subprocess.run(["sha256sum", str(big)], check=True, capture_output=True)

    def stage(home: Path, n=iter(range(10**6))):
        stage_channel(channel, home / "jobs" / f"j{next(n)}" / "train", ContentStore(home), S3(), print)

    sha256sum()  # the file in the page cache for everyone
    sums = [timed(sha256sum) for _ in range(runs)]
    colds, warms = [], []
    for i in range(runs):
        home = work / f"home-{i}"
        colds.append(timed(lambda: stage(home)))
        warms.append(timed(lambda: stage(home)))
        shutil.rmtree(home)
    return statistics.median(sums), statistics.median(colds), statistics.median(warms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of the added-time bench (median)")
    parser.add_argument("--staging-runs", type=int, default=3, help="runs of the staging bench (median)")
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the staged file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        work = Path(tmp)
        (work / "a").mkdir()
        direct, job = bench_added_time(work / "a", args.runs)
        print(f"added time (median of {args.runs})")
        print(f"  python script.py            {direct:7.3f} s")
        print(f"  local backend job           {job:7.3f} s")
        print(f"  added                       {job - direct:7.3f} s   (aim < 0.5 s)   ratio {job / direct:.2f}x")
        (work / "s").mkdir()
        sums, cold, warm = bench_staging(work / "s", args.size_mb, args.staging_runs)
        print(f"staging a {args.size_mb} MB file:// channel (median of {args.staging_runs})")
        print(f"  sha256sum                   {sums:7.3f} s")
        print(f"  stage, cold content store   {cold:7.3f} s   ratio {cold / sums:.2f}x   (aim <= 1.5x)")
        print(f"  stage, warm content store   {warm:7.3f} s   ratio {warm / sums:.2f}x")


if __name__ == "__main__":
    main()
