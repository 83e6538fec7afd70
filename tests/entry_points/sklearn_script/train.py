"""A scikit-learn script-mode training script in the shape of the SKLearn(framework_version="1.2-1") examples
(written for these tests): hyperparameters as `--name value`, the channel from SM_CHANNEL_TRAIN, the model written
with joblib to SM_MODEL_DIR."""

import argparse
import os

import joblib
import pandas as pd
import sklearn
from sklearn.tree import DecisionTreeRegressor

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_leaf_nodes", type=int, default=-1)
    parser.add_argument("--model-dir", type=str, default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", type=str, default=os.environ.get("SM_CHANNEL_TRAIN"))
    args = parser.parse_args()
    print(f"sklearn.__version__ {sklearn.__version__}", flush=True)
    frames = [pd.read_csv(os.path.join(args.train, name), header=None) for name in sorted(os.listdir(args.train))]
    data = pd.concat(frames)
    model = DecisionTreeRegressor(max_leaf_nodes=args.max_leaf_nodes, random_state=0)
    model.fit(data.iloc[:, 1:], data.iloc[:, 0])
    print(f"train score: {model.score(data.iloc[:, 1:], data.iloc[:, 0]):.6f}", flush=True)
    joblib.dump(model, os.path.join(args.model_dir, "model.joblib"))
