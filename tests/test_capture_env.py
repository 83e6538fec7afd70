"""Environment, hardware and caller capture."""

from __future__ import annotations

import json
import platform
import socket
import time

import boto3
import pytest

from ledger.capture.environment import (
    build_environment_pin,
    capture_caller,
    capture_environment,
    installed_packages,
    normalize_package_name,
)
from ledger.capture.hardware import CATALOGUE_PATH, capture_hardware, load_instance_catalogue
from ledger.record import digest

# --- environment ------------------------------------------------------------------------------------------------


def test_environment_pin():
    pin = capture_environment()
    assert pin.python == platform.python_version() and pin.platform == platform.platform()
    assert pin.packages["pydantic"] and pin.packages["gitpython"]  # normalized: GitPython -> gitpython
    assert all(name == normalize_package_name(name) for name in pin.packages)
    assert pin.fingerprint == digest({"python": pin.python, "platform": pin.platform, "packages": pin.packages})
    assert normalize_package_name("Foo_Bar.baz") == "foo-bar-baz"


def test_fingerprint_changes_with_any_package():
    a = build_environment_pin("3.11.7", "Linux", {"numpy": "2.4.0"})
    b = build_environment_pin("3.11.7", "Linux", {"numpy": "2.4.1"})
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == build_environment_pin("3.11.7", "Linux", {"numpy": "2.4.0"}).fingerprint


def test_environment_is_cached_and_copied():
    capture_environment()
    start = time.perf_counter()
    for _ in range(100):
        pin = capture_environment()
    assert (time.perf_counter() - start) / 100 < 0.005  # a scan takes ~100 ms; a cached capture is a few stats
    pin.packages["changed-by-caller"] = "1"
    assert "changed-by-caller" not in capture_environment().packages


def test_an_install_is_seen_without_restarting(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert "ledger-test-pkg" not in capture_environment().packages
    time.sleep(0.01)  # a distinct mtime on coarse file systems
    dist = site / "ledger_test_pkg-1.2.3.dist-info"  # what `pip install` leaves behind
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: Ledger_Test.Pkg\nVersion: 1.2.3\n")
    assert capture_environment().packages["ledger-test-pkg"] == "1.2.3"
    assert installed_packages()["ledger-test-pkg"] == "1.2.3"


# --- caller -----------------------------------------------------------------------------------------------------


def test_caller_is_the_sts_arn(aws):
    assert capture_caller(boto3.Session()) == "arn:aws:sts::123456789012:user/moto"


def test_caller_without_aws_is_user_at_host(monkeypatch):
    from botocore.config import Config

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    sts = session.client("sts", config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    who = capture_caller(sts)
    assert who.endswith("@" + socket.gethostname()) and len(who) > len(socket.gethostname()) + 1


# --- hardware ---------------------------------------------------------------------------------------------------


def test_catalogue_covers_the_common_types_and_is_consistent():
    catalogue = load_instance_catalogue()
    for name in ("ml.m5.xlarge", "ml.m6i.2xlarge", "ml.c5.2xlarge", "ml.c6i.4xlarge", "ml.r5.large",
                 "ml.g4dn.xlarge", "ml.g5.12xlarge", "ml.p3.2xlarge", "ml.p4d.24xlarge", "ml.p5.48xlarge",
                 "ml.trn1.32xlarge", "ml.t3.medium"):  # fmt: skip
        assert name in catalogue, name
    for name, spec in catalogue.items():
        assert name.startswith("ml.") and spec["vcpu"] > 0 and spec["memory_gib"] > 0, name
        assert (spec["gpu"] is None) == (spec["gpu_count"] == 0), name
    assert json.loads(CATALOGUE_PATH.read_text())["about"]


def test_catalogued_instance():
    pin, gaps = capture_hardware({"ResourceConfig": {"InstanceType": "ml.p4d.24xlarge", "InstanceCount": 2, "VolumeSizeInGB": 100}})
    assert not gaps
    assert (pin.instance_type, pin.instance_count, pin.volume_gb) == ("ml.p4d.24xlarge", 2, 100)
    assert (pin.vcpu, pin.memory_gib, pin.gpu, pin.gpu_count, pin.catalogued) == (96, 1152, "NVIDIA A100", 8, True)
    cpu, _ = capture_hardware({"ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5}})
    assert (cpu.vcpu, cpu.memory_gib, cpu.gpu, cpu.gpu_count) == (4, 16, None, 0)


def test_uncatalogued_instance_is_recorded_without_a_gap():
    pin, gaps = capture_hardware({"ResourceConfig": {"InstanceType": "ml.x99.large", "InstanceCount": 1, "VolumeSizeInGB": 5}})
    assert not gaps and pin.instance_type == "ml.x99.large" and pin.vcpu is None and pin.catalogued is False


@pytest.mark.parametrize("instance_type", ["local", "local_gpu"])
def test_local_mode_records_this_machine(instance_type):
    pin, gaps = capture_hardware({"ResourceConfig": {"InstanceType": instance_type, "InstanceCount": 1, "VolumeSizeInGB": 30}})
    assert not gaps
    assert pin.host == socket.gethostname() and pin.vcpu >= 1 and pin.memory_gib > 0
    assert pin.gpu_count >= 0


def test_heterogeneous_cluster():
    request = {
        "ResourceConfig": {
            "InstanceGroups": [
                {"InstanceGroupName": "gpu", "InstanceType": "ml.p4d.24xlarge", "InstanceCount": 2},
                {"InstanceGroupName": "data", "InstanceType": "ml.c5.18xlarge", "InstanceCount": 4},
            ],
            "VolumeSizeInGB": 50,
        }
    }
    pin, gaps = capture_hardware(request)
    assert not gaps and pin.instance_type is None and pin.instance_count == 6 and pin.volume_gb == 50
    assert [(g["name"], g["gpu_count"], g["vcpu"]) for g in pin.instance_groups] == [("gpu", 8, 96), ("data", 0, 72)]


def test_missing_resource_config_is_a_gap():
    pin, gaps = capture_hardware({})
    assert pin.instance_type is None and len(gaps) == 1
