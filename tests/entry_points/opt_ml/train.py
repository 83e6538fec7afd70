"""A bring-your-own-container script that hard-codes the SageMaker paths instead of reading SM_* variables."""

import json
import os

with open("/opt/ml/input/config/hyperparameters.json") as f:
    hyperparameters = json.load(f)
rows = sorted(os.listdir("/opt/ml/input/data/train"))
print(f"SM_MODEL_DIR={os.environ.get('SM_MODEL_DIR')}", flush=True)
print(f"cwd={os.getcwd()}", flush=True)
with open("/opt/ml/model/model.json", "w") as f:
    # a model that stores the path it was given: the same on SageMaker, in a run and in its reproduction
    json.dump({"hyperparameters": hyperparameters, "files": rows, "saved_at": "/opt/ml/model/model.json"}, f)
print("loss: 0.25", flush=True)
