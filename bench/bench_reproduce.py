"""Reproduce at scale, against moto's S3 (run by hand; not part of CI).

    1. plan: the preflight (observe_world + plan_reproduction) of a recorded job whose channel has N objects
    2. staging: the local backend downloading those N recorded versions into a job root
    3. snapshot: N recorded versions copied server-side with 16 parallel copies, against one copy at a time

Usage: python bench/bench_reproduce.py [--objects 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    home = tempfile.mkdtemp(prefix="bench-reproduce-")
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1", LEDGER_HOME=home)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import boto3

    from ledger.backends.local.contract import ChannelPlan
    from ledger.backends.local.staging import S3, stage_s3_channel
    from ledger.capture.data import snapshot_channel
    from ledger.run.preflight import observe_world, plan_reproduction
    from ledger.run.recorder import capture_request, save_launch
    from ledger.store.ledger import open_ledger

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bench")
    s3.put_bucket_versioning(Bucket="bench", VersioningConfiguration={"Status": "Enabled"})
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket="bench", Key=f"train/part-{i:05d}.csv", Body=f"{i},1,2\n"),
                      range(args.objects)))
    print(f"uploaded {args.objects} objects in {time.perf_counter() - start:.1f} s")

    request = {"TrainingJobName": "bench-job", "RoleArn": "arn:aws:iam::123456789012:role/r",
               "AlgorithmSpecification": {"TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/"
                                          "sagemaker-xgboost:1.7-1", "TrainingInputMode": "File"},
               "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
                   "S3DataType": "S3Prefix", "S3Uri": "s3://bench/train/"}}}],
               "OutputDataConfig": {"S3OutputPath": "s3://bench/out"},
               "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
               "StoppingCondition": {"MaxRuntimeInSeconds": 60}}
    book = open_ledger()
    record = save_launch(book, capture_request(request), announce=False)
    pin = record.pins.data["train"]
    assert pin.object_count == args.objects and pin.pinned
    s3.put_object(Bucket="bench", Key="train/part-00000.csv", Body=b"overwritten\n")  # one drifted object

    plan_seconds = median_time(lambda: plan_reproduction(record, observe_world(book, record), "local", {}),
                               args.repeat)
    plan = plan_reproduction(record, observe_world(book, record), "local", {})
    assert "data train" in [c.pin for c in plan.drifted], plan.drifted  # (the image is unpinned here too)

    def stage():
        with tempfile.TemporaryDirectory() as tmp:
            channel = ChannelPlan("train", pin.uri, "s3", {}, pin.model_dump(mode="json"))
            staged = stage_s3_channel(S3(), channel, Path(tmp), lambda line: None)
            assert staged["manifest_sha256"] == pin.manifest_sha256

    stage_seconds = median_time(stage, max(1, args.repeat // 2))

    counter = iter(range(10_000))

    def snapshot(workers: int):
        uri, gaps = snapshot_channel(pin, snapshot_prefix_uri=f"s3://bench/snap-{next(counter)}/", max_workers=workers)
        assert uri and not gaps, gaps

    parallel = median_time(lambda: snapshot(16), max(1, args.repeat // 2))
    serial = median_time(lambda: snapshot(1), max(1, args.repeat // 2))
    server.stop()

    n = args.objects
    print()
    print(f"{'figure':<52}{'median':>10}")
    print(f"{'plan (preflight) for ' + str(n) + ' objects':<52}{plan_seconds:>9.3f}s")
    print(f"{'staging ' + str(n) + ' recorded versions (local backend)':<52}{stage_seconds:>9.3f}s")
    print(f"{'plan + staging':<52}{plan_seconds + stage_seconds:>9.3f}s")
    print(f"{'snapshot of ' + str(n) + ' versions, 16 parallel copies':<52}{parallel:>9.3f}s")
    print(f"{'snapshot of ' + str(n) + ' versions, one copy at a time':<52}{serial:>9.3f}s")
    print(f"{'ratio (one at a time / parallel)':<52}{serial / parallel:>9.2f}x")


if __name__ == "__main__":
    main()
