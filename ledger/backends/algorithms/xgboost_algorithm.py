"""The SageMaker built-in XGBoost algorithm, run locally: the local backend runs this file as the job's process.

It follows aws/sagemaker-xgboost-container's algorithm mode where a user can see it: it reads
input/config/hyperparameters.json and inputdataconfig.json under SAGEMAKER_BASE_DIR (/opt/ml), the channels `train`
and `validation` as the image reads them (CSV: label in the first column, no header, `csv_weights=1` puts instance
weights in the second; libsvm; parquet: label in the first column), with the image's own data_utils surface
(container_support/sagemaker_xgboost_container, on the job's path), validates the common hyperparameters, logs one line per round in xgboost's own form
("[0]<TAB>train-rmse:3.12345<TAB>validation-rmse:3.23456", shown by CloudWatch and the local log as #011), saves
the booster as model/xgboost-model, and on an error writes output/failure ("ClientError: …" for the user's
mistakes, "AlgorithmError: …" for the rest) and exits 1.

Training is deterministic: `nthread` defaults to 1, so the model bytes do not depend on the machine's core count,
and `seed` defaults to 0. It imports nothing from the ledger, so it runs in the image's profile (Python 3.8 and later).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

INTEGER = {
    "num_round", "csv_weights", "early_stopping_rounds", "verbosity", "nthread", "max_depth", "max_leaves",
    "max_bin", "num_class", "seed", "num_parallel_tree", "refresh_leaf", "one_drop", "_kfold", "_num_cv_round",
    "prob_buffer_row",
}
CONTINUOUS = {
    "eta", "gamma", "min_child_weight", "max_delta_step", "subsample", "colsample_bytree", "colsample_bylevel",
    "colsample_bynode", "lambda", "alpha", "sketch_eps", "scale_pos_weight", "rate_drop", "skip_drop",
    "lambda_bias", "tweedie_variance_power", "base_score", "aft_loss_distribution_scale",
}
CATEGORICAL = {
    "booster", "tree_method", "dsplit", "process_type", "grow_policy", "predictor", "sample_type", "normalize_type",
    "objective", "_tuning_objective_metric", "save_model_on_termination", "aft_loss_distribution",
    "single_precision_histogram", "deterministic_histogram", "sampling_method",
}
LISTS = {"eval_metric", "updater", "monotone_constraints", "interaction_constraints"}
ALIASES = {"learning_rate": "eta", "min_split_loss": "gamma", "reg_lambda": "lambda", "reg_alpha": "alpha"}
# Hyperparameters of the algorithm itself, not of the booster.
NOT_BOOSTER = {"num_round", "csv_weights", "early_stopping_rounds", "_tuning_objective_metric", "_kfold",
               "_num_cv_round", "save_model_on_termination"}
MODEL_NAME = "xgboost-model"


class UserError(Exception):
    """A mistake in the request or the data: reported as ClientError, as the container does."""


def parse_hyperparameters(raw: dict[str, str]) -> dict:
    """Typed hyperparameters; UserError for a missing num_round, an unknown name or a value of the wrong type."""
    parsed = {}
    for name, value in raw.items():
        name = ALIASES.get(name, name)
        text = str(value).strip()
        try:
            if name in INTEGER:
                number = float(text)
                if not number.is_integer():
                    raise ValueError
                parsed[name] = int(number)
            elif name in CONTINUOUS:
                parsed[name] = float(text)
            elif name in CATEGORICAL:
                parsed[name] = text
            elif name in LISTS:
                parsed[name] = text if name in ("monotone_constraints", "interaction_constraints") else [
                    item.strip() for item in text.split(",") if item.strip()]
            else:
                raise UserError(f"Extraneous hyperparameter found: {name}")
        except ValueError:
            raise UserError(f"Hyperparameter {name}: {value!r} is not a valid value") from None
    if "num_round" not in parsed:
        raise UserError("Missing required hyperparameter: num_round")
    if parsed["num_round"] < 1:
        raise UserError("Hyperparameter num_round: must be at least 1")
    if parsed.get("objective") == "reg:linear":
        parsed["objective"] = "reg:squarederror"  # the name xgboost gave it later; same loss
    return parsed


def build_booster_params(hps: dict) -> dict:
    params = {k: v for k, v in hps.items() if k not in NOT_BOOSTER}
    params.setdefault("objective", "reg:squarederror")
    params.setdefault("nthread", 1)  # determinism: the same model bytes on any machine
    params.setdefault("seed", 0)
    return params


def content_type_of(channel_config: dict) -> str:
    """'csv', 'libsvm' or 'parquet' from a channel's ContentType, as the image reads it; libsvm when none."""
    from sagemaker_xgboost_container.data_utils import UserError as DataError
    from sagemaker_xgboost_container.data_utils import get_content_type

    try:
        kind = get_content_type(channel_config.get("ContentType"))
    except DataError as exc:
        raise UserError(exc.message) from None
    if kind == "recordio-protobuf":
        raise UserError("Content type recordio-protobuf is read with mlio in the image, which the local XGBoost "
                        "algorithm does not have; use csv, libsvm or parquet")
    return kind


def data_files(channel_dir: Path) -> list[Path]:
    files = [p for p in sorted(channel_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return [p for p in files if p.stat().st_size > 0]


def load_dmatrix(channel_dir: Path, content_type: str, csv_weights: int = 0):
    """The channel read as the image's algorithm mode reads it (sagemaker_xgboost_container.data_utils)."""
    from sagemaker_xgboost_container.data_utils import UserError as DataError
    from sagemaker_xgboost_container.data_utils import get_dmatrix

    if not data_files(channel_dir):
        return None
    try:
        return get_dmatrix(str(channel_dir), content_type, csv_weights=csv_weights)
    except DataError as exc:
        raise UserError(exc.message.replace("\n", " ")) from None


def train(base: Path) -> None:
    import xgboost as xgb

    config = base / "input" / "config"
    hps = parse_hyperparameters(json.loads((config / "hyperparameters.json").read_text()))
    channels = json.loads((config / "inputdataconfig.json").read_text())
    if "train" not in channels:
        raise UserError("Channel train is required")
    data_dir = base / "input" / "data"
    dtrain = load_dmatrix(data_dir / "train", content_type_of(channels["train"]), hps.get("csv_weights", 0))
    if dtrain is None:
        raise UserError(f"No data in training channel path {data_dir / 'train'}")
    evals = [(dtrain, "train")]
    if "validation" in channels:
        dval = load_dmatrix(data_dir / "validation", content_type_of(channels["validation"]))
        if dval is None:
            raise UserError(f"No data in validation channel path {data_dir / 'validation'}")
        evals.append((dval, "validation"))
    print(f"INFO: Train matrix has {dtrain.num_row()} rows and {dtrain.num_col()} columns", flush=True)
    if len(evals) > 1:
        print(f"INFO: Validation matrix has {evals[1][0].num_row()} rows", flush=True)
    if hps.get("early_stopping_rounds") and len(evals) < 2:
        raise UserError("early_stopping_rounds needs a validation channel")

    try:  # xgboost 2 and later take a logger; 1.x prints each round itself
        monitor = xgb.callback.EvaluationMonitor(logger=lambda msg: print(msg, end="", flush=True))
    except TypeError:
        monitor = xgb.callback.EvaluationMonitor()
    try:
        booster = xgb.train(build_booster_params(hps), dtrain, num_boost_round=hps["num_round"], evals=evals,
                            early_stopping_rounds=hps.get("early_stopping_rounds"), callbacks=[monitor],
                            verbose_eval=False)
    except xgb.core.XGBoostError as exc:
        raise UserError(str(exc).strip().splitlines()[0]) from None
    model_dir = base / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    # UBJSON, the format xgboost chooses for a name without extension, written without its warning about that;
    # xgboost before 1.6 has one binary format only.
    try:
        raw = booster.save_raw(raw_format="ubj")
    except TypeError:
        raw = booster.save_raw()
    (model_dir / MODEL_NAME).write_bytes(bytes(raw))


def write_failure(base: Path, text: str) -> None:
    failure = base / "output" / "failure"
    failure.parent.mkdir(parents=True, exist_ok=True)
    failure.write_text(text)


def main() -> int:
    base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    try:
        train(base)
    except UserError as exc:
        print(f"ERROR: ClientError: {exc}", flush=True)
        write_failure(base, f"ClientError: {exc}")
        return 1
    except Exception as exc:  # anything else is the algorithm's fault, as the container reports it
        traceback.print_exc()
        write_failure(base, f"AlgorithmError: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
