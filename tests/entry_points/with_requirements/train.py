"""A script whose requirements.txt is already satisfied, so the job must not run pip."""

import numpy

print(f"numpy {numpy.__version__}", flush=True)
