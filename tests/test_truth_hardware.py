"""Issue 12, item 1: a record says what was requested apart from what ran, for hardware and for the image.

A local run of `ml.m5.4xlarge` asked for 16 vCPU and 64 GiB and ran on this machine; a local run of the
`sagemaker-xgboost:1.7-1` image ran in the ledger's own Python environment. Each record, `ledger show`, the
dashboard, the audit report and the MLflow tags say both.
"""

from __future__ import annotations

import html
import json
import os
import platform
import socket

from streamlit.testing.v1 import AppTest

from ledger.capture.hardware import _memory_gib_from_meminfo, capture_hardware
from ledger.cli import main
from ledger.dashboard import APP_PATH
from ledger.record import HardwarePin, ImagePin
from ledger.store.ledger import open_ledger
from ledger.store.mlflow_sink import plan_mirror

XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def cli(capsys, *args):
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _xgboost_rows(workspace):
    rows = "\n".join(f"{i % 7},{i / 10},{(i * 3) % 5}" for i in range(60))
    (workspace / "data" / "rows.csv").write_text(rows + "\n")


def _run_xgboost_on_a_big_instance(workspace, capsys, job_name="big-local"):
    _xgboost_rows(workspace)
    code, out, err = cli(capsys, "run", "--algorithm", "xgboost", "--channel", "train=data", "--hp", "num_round=3",
                         "--instance-type", "ml.m5.4xlarge", "--backend", "local", "--job-name", job_name, "--json")
    assert code == 0, err
    return json.loads(out)


# --- the record ---------------------------------------------------------------------------------------------------


def test_a_local_run_records_the_requested_type_apart_from_this_host(workspace, db_url, capsys):
    _run_xgboost_on_a_big_instance(workspace, capsys)
    record = open_ledger().get("big-local")  # read back from SQLite and from PostgreSQL
    hardware = record.pins.hardware
    assert hardware.requested["instance_type"] == "ml.m5.4xlarge"
    assert (hardware.requested["vcpu"], hardware.requested["memory_gib"]) == (16, 64)
    assert hardware.requested["figures_from"] == "the instance catalogue"
    ran = hardware.ran
    assert ran["host"] == socket.gethostname() and ran["vcpu"] == os.cpu_count()
    assert ran["memory_gib"] == _memory_gib_from_meminfo() and ran["os"] == platform.platform()
    assert "observed on this machine" in ran["how"]
    assert hardware.describe_ran(record.backend).startswith(f"{socket.gethostname()}: {os.cpu_count()} vCPU")


def test_a_local_run_names_the_environment_that_stood_in_for_the_image(workspace, db_url, capsys):
    _run_xgboost_on_a_big_instance(workspace, capsys)
    record = open_ledger().get("big-local")
    image, environment = record.pins.image, record.pins.environment
    assert image.uri == XGBOOST_IMAGE  # what was requested, kept as requested
    assert image.ran["fingerprint"] == environment.fingerprint and image.ran["python"] == environment.python
    assert image.ran["how"].startswith("image profile xgboost:1.7-1")  # the image's profile, not the ledger's own
    assert "xgboost stand-in" in image.ran["how"]
    assert image.stood_in().endswith(f"stood in for {XGBOOST_IMAGE}")


def test_a_sagemaker_request_says_its_hardware_is_as_requested():
    pin, gaps = capture_hardware({"ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                                     "VolumeSizeInGB": 30}})
    assert not gaps and pin.ran is None
    assert pin.ran_source.startswith("as requested from SageMaker")
    assert pin.requested["vcpu"] == 4 and pin.requested["figures_from"] == "the instance catalogue"


def test_older_records_still_show_without_claiming_what_ran():
    old_catalogue = HardwarePin(instance_type="ml.m5.4xlarge", instance_count=1, volume_gb=30, vcpu=16,
                                memory_gib=64, gpu=None, gpu_count=0, catalogued=True)
    assert "16 vCPU" in old_catalogue.describe_requested()
    assert old_catalogue.describe_ran("local").startswith("not recorded")  # never the catalogue's 16 vCPU
    assert "16 vCPU" not in old_catalogue.describe_ran("local")
    old_local = HardwarePin(instance_type="local", instance_count=1, vcpu=2, memory_gib=7.5, gpu_count=0, host="box")
    assert old_local.describe_ran("local") == "box: 2 vCPU, 7.5 GiB, no GPU"
    old_image = ImagePin(uri=XGBOOST_IMAGE, digest="ab" * 32, source="environment")
    assert old_image.stood_in().startswith("Python environment abababababab… (the ledger's own Python environment)")


# --- where hardware and image are shown ---------------------------------------------------------------------------


def test_show_prints_requested_and_ran(workspace, capsys):
    _run_xgboost_on_a_big_instance(workspace, capsys)
    code, out, err = cli(capsys, "show", "big-local")
    assert code == 0, err
    squashed = "".join(out.split())  # Rich wraps long cells; their text stays in order
    assert "requested1×ml.m5.4xlarge:16vCPU,64.0GiB,noGPU(theinstancecatalogue)" in squashed
    assert f"ran{socket.gethostname()}:{os.cpu_count()}vCPU" in squashed
    assert "stoodinfor" + XGBOOST_IMAGE in squashed


def test_the_audit_report_states_both(workspace, capsys, tmp_path):
    _run_xgboost_on_a_big_instance(workspace, capsys)
    md, page = tmp_path / "audit.md", tmp_path / "audit.html"
    assert cli(capsys, "audit", "big-local", "--format", "md", "-o", str(md))[0] == 0
    assert cli(capsys, "audit", "big-local", "--format", "html", "-o", str(page))[0] == 0
    text = md.read_text()
    assert "**Hardware requested**: 1 × ml.m5.4xlarge: 16 vCPU, 64.0 GiB, no GPU (the instance catalogue)" in text
    assert f"**Hardware ran**: {socket.gethostname()}: {os.cpu_count()} vCPU" in text
    assert f"stood in for {XGBOOST_IMAGE}" in text
    shown = html.unescape(page.read_text())
    assert "Hardware ran" in shown and f"{socket.gethostname()}: {os.cpu_count()} vCPU" in shown
    assert "stood in for" in shown and "Ran instead" in shown


def test_the_dashboard_shows_both(workspace, capsys):
    record = _run_xgboost_on_a_big_instance(workspace, capsys)
    at = AppTest.from_file(str(APP_PATH), default_timeout=30)
    at.run()
    at.query_params = {"run": record["run_id"]}
    at = at.switch_page("page_run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    tables = {str(k): str(v) for t in at.table for k, v in t.value["value"].items()}
    assert tables["requested"].startswith("1 × ml.m5.4xlarge: 16 vCPU")
    assert tables["ran"].startswith(f"{socket.gethostname()}: {os.cpu_count()} vCPU")
    assert tables["image requested"] == XGBOOST_IMAGE
    assert any("stood in for" in i.value for i in at.info)


def test_the_mlflow_mirror_tags_both(workspace, capsys):
    _run_xgboost_on_a_big_instance(workspace, capsys)
    tags = plan_mirror(open_ledger().get("big-local")).tags
    assert tags["ledger.hardware.requested"].startswith("1 × ml.m5.4xlarge: 16 vCPU")
    assert tags["ledger.hardware.ran"].startswith(f"{socket.gethostname()}: {os.cpu_count()} vCPU")
    assert tags["ledger.image.stood_in"].endswith(f"stood in for {XGBOOST_IMAGE}")
