"""Capture time against the size of one hyperparameter, 1 KB to 1 MB (issue 13, item 6), by hand, not in CI.

`capture_request` (the path autolog's handler and `ledger run` take; local backend, data pinning off, no git
repository, so what grows is the secret scan) on a request whose one hyperparameter is N characters, for two
shapes of value:

    prose        words, one URL with a password and one AWS key id in them (what a config blob looks like)
    letters      one run of letters with '://' in the middle: the old URL-password regex's worst case

Each figure is the median of --reps runs. Beside it, the old regex (`[A-Za-z][A-Za-z0-9+.-]*://…`, quadratic)
on the same value, only up to --old-limit characters (past that it runs for minutes: 40 KB took 6 s, 1 MB more
than ten minutes), and the scan alone (`redact_text`).

    .venv/bin/python bench/bench_capture_secrets.py [--reps 3] [--old-limit 40000]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = (1_000, 10_000, 40_000, 100_000, 1_000_000)  # 40 KB: where the old regex took 6 s
OLD_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s\"']*):(?P<password>[^@/\s\"']+)@")
WORDS = "learning rate depth the of model train validation epoch batch size loss metric data s3 bucket".split()


def build_value(shape: str, size: int) -> str:
    if shape == "letters":
        half = size // 2
        return "a" * half + "://" + "b" * (size - half - 3)
    rng = random.Random(size)
    words, length = [], 0
    while length < size - 120:
        words.append(rng.choice(WORDS))
        length += len(words[-1]) + 1
    middle = len(words) // 2
    words[middle:middle] = ["postgres://ml:pw-1,x@db/ckpt", "AKIAIOSFODNN7QWERTYU"]
    return " ".join(words)[:size]


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--old-limit", type=int, default=40_000, help="largest value the old regex is timed on")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ledger-bench-secrets-") as tmp:
        os.environ["LEDGER_HOME"] = str(Path(tmp) / "home")
        from ledger.capture.secrets import redact_text
        from ledger.config import load_settings
        from ledger.run.recorder import capture_request

        settings = load_settings(data_pin="off")
        workdir = Path(tmp) / "not-a-repository"
        workdir.mkdir()
        redact_text("warm up: import detect-secrets")
        print(f"{'shape':8} {'size':>9} {'capture_request':>16} {'scan alone':>11} {'old regex':>11} {'ratio':>7}")
        for shape in ("prose", "letters"):
            for size in SIZES:
                value = build_value(shape, size)
                request = {"TrainingJobName": "bench", "AlgorithmSpecification": {"TrainingImage": "local"},
                           "HyperParameters": {"config": value, "lr": "0.1"}}
                capture = median_time(lambda: capture_request(request, settings=settings, workdir=workdir,
                                                              backend="local"), args.reps)
                scan = median_time(lambda: redact_text(value), args.reps)
                old = median_time(lambda: OLD_URL_PASSWORD.sub("x", value), args.reps) if size <= args.old_limit \
                    else None
                old_text = f"{old:10.3f}s" if old is not None else f"{'not run':>11}"
                ratio = f"{old / scan:6.1f}x" if old is not None else f"{'':>7}"
                print(f"{shape:8} {size:>9,} {capture:15.3f}s {scan:10.3f}s {old_text} {ratio}", flush=True)


if __name__ == "__main__":
    main()
