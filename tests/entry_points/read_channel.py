"""Copies every file of the train channel into the model directory, so the test can see what the job read."""

import os
import shutil

train, model = os.environ["SM_CHANNEL_TRAIN"], os.environ["SM_MODEL_DIR"]
for name in sorted(os.listdir(train)):
    print(f"read {name}: {open(os.path.join(train, name)).read().strip()}", flush=True)
    shutil.copyfile(os.path.join(train, name), os.path.join(model, name))
