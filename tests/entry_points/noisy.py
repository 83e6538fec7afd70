"""A training script that is random without a seed: metrics and model differ on every run, unless NOISE=0."""

import os
import random

noise = float(os.environ.get("NOISE", "1"))
loss = 0.5 + noise * random.random()
print(f"final loss: {loss:.6f}", flush=True)
with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.bin"), "wb") as handle:
    handle.write(os.urandom(16))  # the model bytes always differ
