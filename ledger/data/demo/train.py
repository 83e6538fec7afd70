"""The demo's script-mode entry point: XGBoost regression on abalone, as in the SageMaker examples.

Reads CSV (label first, no header) from the train and validation channels, logs `[i]#011train-rmse:…` lines
like the built-in algorithm, and saves the model to SM_MODEL_DIR. nthread=1 and a fixed seed make it
deterministic, so a reproduction gives the same model bytes.
"""

import argparse
import glob
import os

import numpy as np
import xgboost as xgb


def load(channel: str) -> xgb.DMatrix:
    directory = os.environ[f"SM_CHANNEL_{channel.upper()}"]
    rows = np.vstack([np.loadtxt(f, delimiter=",", ndmin=2) for f in sorted(glob.glob(f"{directory}/*.csv"))])
    return xgb.DMatrix(rows[:, 1:], label=rows[:, 0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num_round", type=int, default=50)
    parser.add_argument("--max_depth", type=int, default=5)
    parser.add_argument("--eta", type=float, default=0.2)
    parser.add_argument("--subsample", type=float, default=1.0)
    parser.add_argument("--min_child_weight", type=float, default=1.0)
    parser.add_argument("--objective", default="reg:squarederror")
    parser.add_argument("--seed", type=int, default=0)
    args, _ = parser.parse_known_args()

    train, validation = load("train"), load("validation")
    params = {"max_depth": args.max_depth, "eta": args.eta, "subsample": args.subsample,
              "min_child_weight": args.min_child_weight, "objective": args.objective, "seed": args.seed,
              "nthread": 1, "eval_metric": "rmse"}
    booster = xgb.train(params, train, args.num_round, evals=[(train, "train"), (validation, "validation")],
                        verbose_eval=True)
    booster.save_model(os.path.join(os.environ["SM_MODEL_DIR"], "xgboost-model.ubj"))


if __name__ == "__main__":
    main()
