"""`ledger run` and `ledger demo`: jobs launched through the capture path, on the local backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.cli import main
from ledger.store.ledger import open_ledger

ENTRY_POINTS = Path(__file__).parent / "entry_points"


def cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_records_a_local_job_with_metrics_and_pins(workspace, capsys):
    code, out, err = cli(capsys, "run", "src/train.py", "--hp", "lr=0.1", "--channel", "train=data",
                         "--metric", "loss=loss: ([0-9.]+)", "--job-name", "first-run", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["outcome"]["status"] == "Completed"
    assert record["outcome"]["metrics"] == {"loss": pytest.approx(1 / 3 / 2, abs=1e-5)}
    assert [p["step"] for p in record["outcome"]["metric_series"]] == [0, 1, 2]
    pins = record["pins"]
    assert pins["data"]["train"]["pinned"] and pins["data"]["train"]["object_count"] == 1
    assert pins["image"]["source"] == "environment" and pins["image"]["digest"] == pins["environment"]["fingerprint"]
    assert pins["code"]["commit"] and pins["code"]["source_archive"]["uri"].startswith("ledger-cas://sha256/")
    assert pins["hyperparameters"]["lr"] == "0.1"
    assert pins["hyperparameters"]["sagemaker_program"] == "train.py"  # as written; the request keeps "\"train.py\""
    code, out, _ = cli(capsys, "runs", "--json")
    assert [r["job_name"] for r in json.loads(out)] == ["first-run"]


def test_run_the_builtin_algorithm(workspace, capsys):
    rows = "\n".join(f"{i % 7},{i / 10},{(i * 3) % 5}" for i in range(60))
    (workspace / "data" / "rows.csv").write_text(rows + "\n")
    code, out, err = cli(capsys, "run", "--algorithm", "xgboost", "--channel", "train=data", "--channel",
                         "validation=data", "--hp", "num_round=5", "--hp", "objective=reg:squarederror",
                         "--metric", r"validation:rmse=.*\[[0-9]+\].*#011validation-rmse:([0-9.]+)", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["outcome"]["status"] == "Completed" and "validation:rmse" in record["outcome"]["metrics"]
    assert record["outcome"]["model_artifact"]["tree_sha256"]


@pytest.mark.parametrize("args, text", [
    (["run", "src/missing.py"], "entry point missing.py is not in"),
    (["run", "src/train.py", "--channel", "train=no/such/dir"], "channel path no/such/dir does not exist"),
    (["run", "src/train.py", "--hp", "max_depth"], "--hp 'max_depth' is not NAME=VALUE"),
    (["run", "--algorithm", "catboost"], "unknown algorithm 'catboost'"),
    (["run"], "no entry point"),
])
def test_bad_input_is_one_line_and_records_no_success(workspace, capsys, args, text):
    code, out, err = cli(capsys, *args)
    assert code in (1, 2) and text in err and err.count("\n") == 1, err
    assert open_ledger().runs(status="Completed").empty


def test_a_failing_script_is_recorded_failed_and_exits_1(workspace, capsys):
    (workspace / "src" / "train.py").write_text(
        "import os\nopen(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w').write('bad data')\n"
        "raise SystemExit(2)\n")
    code, out, _ = cli(capsys, "run", "src/train.py", "--job-name", "will-fail")
    assert code == 1 and "Failed: bad data" in out
    record = open_ledger().get("will-fail")
    assert record.outcome.status == "Failed" and record.outcome.failure_reason == "bad data"


def test_the_demo_records_reproduces_and_verifies(ledger_home, capsys):
    code, out, err = cli(capsys, "demo")
    assert code == 0, err
    book = open_ledger()
    frame = book.runs()
    assert len(frame) == 4 and set(frame["status"]) == {"Completed"}
    assert set(frame["project"]) == {"abalone-demo"}
    reproduction = frame[frame["reproduction_of"].notna()]
    assert list(reproduction["verdict"]) == ["IDENTICAL"]
    assert (frame["gap_count"] == 0).all()
    assert frame["metrics.validation:rmse"].between(1.5, 3.0).all()
    assert "IDENTICAL" in out and "chain intact" in out and "ledger diff" in out
    assert book.verify().ok
    report = (ledger_home / "demo" / "audit.html").read_text()
    assert f"Audit report: {ledger_home / 'demo' / 'audit.html'}" in out
    assert all(run_id in report for run_id in frame["run_id"]) and book.head()[1] in report


def test_the_builtin_algorithm_reports_its_own_metrics(workspace, capsys):
    """SageMaker defines train:rmse and validation:rmse for the built-in XGBoost itself; so does the local backend."""
    rows = "\n".join(f"{i % 7},{i / 10},{(i * 3) % 5}" for i in range(60))
    (workspace / "data" / "rows.csv").write_text(rows + "\n")
    code, out, err = cli(capsys, "run", "--algorithm", "xgboost", "--channel", "train=data", "--channel",
                         "validation=data", "--hp", "num_round=3", "--json")
    assert code == 0, err
    assert set(json.loads(out)["outcome"]["metrics"]) == {"train:rmse", "validation:rmse"}
