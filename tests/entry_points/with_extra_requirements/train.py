"""A script whose requirements.txt names a package the ledger's environment does not have."""

import os
from importlib.metadata import version

import termcolor  # noqa: F401 - importable inside the job: what the test shows

print(f"termcolor {version('termcolor')}", flush=True)
open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("ok\n")
