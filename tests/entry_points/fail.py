"""Fails the way a careful script does: writes output/failure, then exits non-zero."""

import os
import sys

print("loading data", flush=True)
with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as f:
    f.write("ValueError: the training data has no rows")
sys.exit(3)
