"""A script-mode XGBoost training script in the shape of AWS's abalone example (written for these tests): the image's
helpers (sagemaker_containers.entry_point, sagemaker_xgboost_container.distributed and .data_utils.get_dmatrix),
LibSVM channels, `--name value` hyperparameters, the model pickled to SM_MODEL_DIR/xgboost-model."""

import argparse
import json
import logging
import os
import pickle as pkl

import pandas as pd  # noqa: F401 - the image has it, and scripts of this shape import it
import xgboost as xgb
from sagemaker_containers import entry_point
from sagemaker_xgboost_container import distributed
from sagemaker_xgboost_container.data_utils import get_dmatrix


def _xgb_train(params, dtrain, evals, num_boost_round, model_dir, is_master):
    booster = xgb.train(params=params, dtrain=dtrain, evals=evals, num_boost_round=num_boost_round)
    if is_master:
        with open(os.path.join(model_dir, "xgboost-model"), "wb") as f:
            pkl.dump(booster, f)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_depth", type=int)
    parser.add_argument("--eta", type=float)
    parser.add_argument("--gamma", type=float)
    parser.add_argument("--min_child_weight", type=float)
    parser.add_argument("--subsample", type=float)
    parser.add_argument("--verbosity", type=int)
    parser.add_argument("--objective", type=str)
    parser.add_argument("--num_round", type=int)
    parser.add_argument("--tree_method", type=str, default="auto")
    parser.add_argument("--predictor", type=str, default="auto")
    parser.add_argument("--output_data_dir", type=str, default=os.environ.get("SM_OUTPUT_DATA_DIR"))
    parser.add_argument("--model_dir", type=str, default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", type=str, default=os.environ.get("SM_CHANNEL_TRAIN"))
    parser.add_argument("--validation", type=str, default=os.environ.get("SM_CHANNEL_VALIDATION"))
    parser.add_argument("--sm_hosts", type=str, default=os.environ.get("SM_HOSTS"))
    parser.add_argument("--sm_current_host", type=str, default=os.environ.get("SM_CURRENT_HOST"))
    args, _ = parser.parse_known_args()
    logging.basicConfig(level=logging.INFO)
    print(f"xgboost.__version__ {xgb.__version__}", flush=True)
    print(f"model dir {args.model_dir}", flush=True)

    sm_hosts = json.loads(args.sm_hosts)
    dtrain = get_dmatrix(args.train, "libsvm")
    dval = get_dmatrix(args.validation, "libsvm")
    watchlist = [(dtrain, "train"), (dval, "validation")] if dval is not None else [(dtrain, "train")]
    train_hp = {"max_depth": args.max_depth, "eta": args.eta, "gamma": args.gamma,
                "min_child_weight": args.min_child_weight, "subsample": args.subsample, "verbosity": args.verbosity,
                "objective": args.objective, "tree_method": args.tree_method, "predictor": args.predictor}
    xgb_train_args = dict(params=train_hp, dtrain=dtrain, evals=watchlist, num_boost_round=args.num_round,
                          model_dir=args.model_dir)
    if len(sm_hosts) > 1:
        entry_point._wait_hostname_resolution()
        distributed.rabit_run(exec_fun=_xgb_train, args=xgb_train_args, include_in_training=(dtrain is not None),
                              hosts=sm_hosts, current_host=args.sm_current_host, update_rabit_args=True)
    else:
        _xgb_train(**xgb_train_args, is_master=True)
