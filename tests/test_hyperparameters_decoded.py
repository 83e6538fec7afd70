"""Hyperparameters as the user wrote them (issue 12, item 6): SDK 2.x framework estimators JSON-encode every value
('"reg:squarederror"'); the params table, --where, diff, the dashboard's data and MLflow see the decoded value,
and the request keeps what was sent. Real SDK 2.x against moto's server, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import ledger
from ledger.capture import code
from ledger.diffing import diff_records
from ledger.store.ledger import open_ledger
from ledger.store.mlflow_sink import plan_mirror
from tests.conftest import git
from tests.test_autolog import ROLE, make_data_bucket, tutorial_inputs


def fit_framework_estimator(sdk2, notebook_dir, objective: str, job_name: str) -> None:
    from sagemaker.xgboost import XGBoost

    estimator = XGBoost(entry_point="train.py", source_dir=str(notebook_dir / "src"), framework_version="1.7-1",
                        role=ROLE, instance_count=1, instance_type="ml.m5.large",
                        output_path="s3://abalone-data/output",
                        sagemaker_session=sdk2.Session(default_bucket="abalone-data"),
                        hyperparameters={"num_round": 10, "objective": objective, "eta": 0.2})
    estimator.fit(tutorial_inputs(sdk2), wait=False, logs=False, job_name=job_name)


def test_a_framework_estimators_hyperparameters_are_stored_decoded(db_url, sdk2, notebook_dir):
    make_data_bucket()
    (notebook_dir / "src").mkdir()
    (notebook_dir / "src" / "train.py").write_text("print('training')\n")
    git(notebook_dir, "add", "-A")
    git(notebook_dir, "commit", "-q", "-m", "script")
    ledger.autolog()
    fit_framework_estimator(sdk2, notebook_dir, "reg:squarederror", "xgb-squared")
    fit_framework_estimator(sdk2, notebook_dir, "reg:absoluteerror", "xgb-absolute")
    ledger.autolog(disable=True)

    book = open_ledger()
    first, second = book.get("xgb-squared"), book.get("xgb-absolute")
    assert first.request["HyperParameters"]["objective"] == '"reg:squarederror"'  # as sent
    assert first.pins.hyperparameters["objective"] == "reg:squarederror"  # as written
    assert first.pins.hyperparameters["num_round"] == "10" and first.pins.hyperparameters["eta"] == "0.2"
    assert first.pins.hyperparameters["sagemaker_program"] == "train.py"

    frame = book.runs(where="params.objective = 'reg:squarederror'")
    assert list(frame["job_name"]) == ["xgb-squared"]
    assert set(book.runs()["params.objective"]) == {"reg:squarederror", "reg:absoluteerror"}

    changed = {d["path"]: (d["a"], d["b"]) for d in diff_records(first, second)}
    assert changed["pins.hyperparameters.objective"] == ("reg:squarederror", "reg:absoluteerror")

    assert plan_mirror(first).params["objective"] == "reg:squarederror"
    assert plan_mirror(first).tags["mlflow.source.name"] == "train.py"
    assert book.verify().ok


def test_one_decoder_for_the_package():
    from ledger.backends.local import contract

    assert contract.decode_hyperparameter is code.decode_hyperparameter
    assert code.build_hyperparameter_text('"reg:squarederror"') == "reg:squarederror"
    assert code.build_hyperparameter_text(json.dumps("s3://b/k")) == "s3://b/k"
    for as_sent in ("5", "0.2", "true", "[1, 2]", "reg:squarederror", "***REDACTED***"):
        assert code.build_hyperparameter_text(as_sent) == as_sent
