"""What autolog() adds to an SDK 2.x `Estimator.fit()` (by hand, not in CI).

One process starts a moto server, puts a versioned channel of N objects (default 1,000) in S3 and the built-in
XGBoost image in moto's ECR (under the AWS account the SDK names), then times `fit(wait=True)` of an SDK 2.x
`Estimator` with that image, with and without `ledger.autolog()`, interleaved, and prints the medians, the added
time and the ratio. It also counts the S3 requests capture makes (a RequestCounter on the boto3 session capture
uses), by operation, and cross-checks them against every S3 request of the process (a before-call handler on
botocore's BUILTIN_HANDLERS). Aim: one ListObjectVersions call per 1,000 objects per channel, plus a constant.

The SDK's poll sleep is patched out, so `fit()` returns as soon as moto says Completed (at once). moto runs in this
process, so its server-side work is part of both timings.

    .venv/bin/python bench/bench_capture.py [--runs 5] [--objects 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import types
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

AWS_ACCOUNT = "683313688378"  # the AWS-owned account of the built-in XGBoost image in us-east-1
REGION = "us-east-1"
BUCKET = "bench-data"
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
DIGEST = "sha256:" + "ab" * 32
ALL_S3_CALLS: Counter[str] = Counter()


def _count_every_s3_call(model=None, **_):
    ALL_S3_CALLS[model.name if model is not None else "?"] += 1


def start_aws(work: Path) -> object:
    """moto on 127.0.0.1, and this process's environment pointed at it; SDK 2.x quiet and offline."""
    from botocore import handlers

    # Before any botocore session exists, so that every session and client of the process counts its S3 calls.
    handlers.BUILTIN_HANDLERS.append(("before-call.s3", _count_every_s3_call))
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    config = work / "sagemaker-config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION=REGION, AWS_REGION=REGION, LEDGER_HOME=str(work / "ledger-home"),
        SAGEMAKER_USER_CONFIG_OVERRIDE=str(config), SAGEMAKER_SUPPRESS_V2_WARNING="1",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "LEDGER_DB_URL", "LEDGER_STRICT", "LEDGER_DATA_PIN",
                 "LEDGER_MLFLOW_URI", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    for noisy in ("werkzeug", "botocore", "sagemaker", "alembic"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return server


def as_aws_account(request, **_):
    """moto's multi-account header: this ECR call reads the AWS-owned image account (stands for cross-account
    read access to the image, which real AWS grants for its built-in algorithm images)."""
    request.headers["x-moto-account-id"] = AWS_ACCOUNT


def put_fixtures(objects: int) -> None:
    import boto3

    ecr = boto3.client("ecr")
    ecr.meta.events.register("before-send.ecr.*", as_aws_account)
    ecr.create_repository(repositoryName="sagemaker-xgboost")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"digest": "sha256:" + "1" * 64, "size": 1,
                           "mediaType": "application/vnd.docker.container.image.v1+json"}, "layers": []}
    ecr.put_image(repositoryName="sagemaker-xgboost", imageManifest=json.dumps(manifest), imageTag="1.7-1",
                  imageDigest=DIGEST)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=f"abalone/train/part-{i:05d}.csv",
                                              Body=f"{i % 29},0.455,0.365,0.095\n".encode()), range(objects)))


def make_fit():
    import sagemaker
    import sagemaker.session
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput

    fast_time = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
    fast_time.sleep = lambda seconds: None
    sagemaker.session.time = fast_time  # fit(wait=True) polls with a sleep of several seconds
    image = sagemaker.image_uris.retrieve("xgboost", REGION, "1.7-1")
    inputs = {"train": TrainingInput(f"s3://{BUCKET}/abalone/train/", content_type="csv")}

    def fit() -> None:
        # A new Session a fit, as a notebook cell that builds its estimator does; made while autolog is on or off.
        session = sagemaker.Session(default_bucket=BUCKET)
        estimator = Estimator(image_uri=image, role=ROLE, instance_count=1, instance_type="ml.m5.xlarge",
                              output_path=f"s3://{BUCKET}/output", sagemaker_session=session,
                              hyperparameters={"num_round": 50, "objective": "reg:squarederror", "max_depth": 5})
        estimator.fit(inputs, wait=True, logs=False)

    return fit


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def measure_parts(session, runs: int) -> tuple[float, float]:
    """Two parts of capture timed on their own: the paginated version listing (mostly moto's server time) and the
    environment fingerprint."""
    from ledger.capture.data import list_latest_versions
    from ledger.capture.environment import capture_environment

    s3 = session.client("s3")
    listing = statistics.median(timed(lambda: list_latest_versions(s3, BUCKET, "abalone/train/")) for _ in range(runs))
    environment = statistics.median(timed(capture_environment) for _ in range(runs))
    return listing, environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed fits with and without autolog (default 5)")
    parser.add_argument("--objects", type=int, default=1000, help="objects in the channel (default 1000)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        work = Path(tmp)
        server = start_aws(work)
        try:
            began = time.perf_counter()
            put_fixtures(args.objects)
            print(f"fixtures: {args.objects} objects in s3://{BUCKET}/abalone/train/ and the XGBoost image in ECR "
                  f"({time.perf_counter() - began:.1f} s)", flush=True)
            os.chdir(work)  # not a git repository: the code pin is a gap, as for a notebook outside git
            return run(args, make_fit())
        finally:
            server.stop()


def run(args, fit) -> int:
    import boto3

    import ledger
    from ledger.capture import RequestCounter
    from ledger.store.ledger import open_ledger

    capture_session = boto3.Session()  # capture's own AWS calls go through this session only
    capture_session.events.register("before-send.ecr.*", as_aws_account)
    counter = RequestCounter().attach(capture_session, "s3")

    def with_autolog():
        ledger.autolog(project="bench", boto_session=capture_session)
        try:
            fit()
        finally:
            ledger.autolog(disable=True)

    # Warm up both paths: imports, the SDK's first-use work, the ledger database's migrations.
    fit()
    with_autolog()
    off_times, on_times, per_fit_calls, all_calls_off, all_calls_on = [], [], [], [], []
    for _ in range(args.runs):  # interleaved, so that drift in the machine's load hits both alike
        before = sum(ALL_S3_CALLS.values())
        off_times.append(timed(fit))
        all_calls_off.append(sum(ALL_S3_CALLS.values()) - before)
        counter.reset()
        before = sum(ALL_S3_CALLS.values())
        on_times.append(timed(with_autolog))
        all_calls_on.append(sum(ALL_S3_CALLS.values()) - before)
        per_fit_calls.append(dict(counter.calls))

    book = open_ledger()
    frame = book.runs()
    record = book.get(frame["run_id"].iloc[-1])
    channel = record.pins.data["train"]
    assert channel.object_count == args.objects and channel.pinned, channel
    assert record.pins.image.digest == DIGEST, record.pins.image
    assert record.outcome.status == "Completed", record.outcome

    off, on = statistics.median(off_times), statistics.median(on_times)
    calls = per_fit_calls[-1]
    listings = calls.get("ListObjectVersions", 0)
    expected_listings = math.ceil(args.objects / 1000)
    capture_total = sum(calls.values())
    process_delta = statistics.median(all_calls_on) - statistics.median(all_calls_off)
    print(f"\nSDK 2.x Estimator.fit(wait=True), built-in XGBoost image, 1 channel of {args.objects} objects, "
          f"against moto; median of {args.runs} runs each (interleaved)")
    print(f"  {'without autolog':<28}{off * 1000:9.0f} ms   (all runs: {', '.join(f'{t * 1000:.0f}' for t in off_times)})")
    print(f"  {'with autolog':<28}{on * 1000:9.0f} ms   (all runs: {', '.join(f'{t * 1000:.0f}' for t in on_times)})")
    print(f"  {'added by autolog':<28}{(on - off) * 1000:9.0f} ms")
    print(f"  {'ratio':<28}{on / off:9.2f} x")
    print(f"\nS3 requests made by capture, one fit: {capture_total} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(calls.items()))})")
    print(f"  every S3 request of the process, one fit: {statistics.median(all_calls_off):.0f} without autolog, "
          f"{statistics.median(all_calls_on):.0f} with (difference {process_delta:.0f})")
    print(f"  ListObjectVersions calls: {listings} for {args.objects} objects "
          f"(aim: {expected_listings}, one per 1,000 objects per channel); "
          f"other S3 calls: {capture_total - listings} (the constant)")
    same_every_fit = all(c == calls for c in per_fit_calls)
    print(f"  the same in every fit: {'yes' if same_every_fit else per_fit_calls}")
    listing_time, environment_time = measure_parts(capture_session, args.runs)
    print(f"\nwhere the added time goes (medians, measured apart): listing the {args.objects} versions on moto "
          f"({expected_listings} page(s)) {listing_time * 1000:.0f} ms; capture_environment (installed packages) {environment_time * 1000:.0f} ms")
    print(f"\nrecord {record.run_id}: {channel.object_count} objects pinned by version, image {record.pins.image.digest[:19]}…, "
          f"{len(record.pins.gaps)} gap(s): {', '.join(g.what for g in record.pins.gaps) or 'none'}")
    return 0 if listings == expected_listings else 1


if __name__ == "__main__":
    sys.exit(main())
