"""Runs until a file appears, so that a test acts while the job runs (kills its launcher, say) at a known moment.

    --ready PATH   written (whole, by rename) once the job runs: {"pid": this process, "child": its child}
    --go PATH      the job ends once this file exists

It starts a child in its process group first, as a DataLoader worker would, that also waits for --go.
"""

import argparse
import json
import os
import subprocess
import sys
import time

WAIT = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.05)\n"

parser = argparse.ArgumentParser()
parser.add_argument("--ready", required=True)
parser.add_argument("--go", required=True)
args = parser.parse_args()

child = subprocess.Popen([sys.executable, "-c", WAIT, args.go])
with open(args.ready + ".tmp", "w") as ready:
    json.dump({"pid": os.getpid(), "child": child.pid}, ready)
os.replace(args.ready + ".tmp", args.ready)
print("waiting for the go file", flush=True)
while not os.path.exists(args.go):
    time.sleep(0.05)
child.wait()
print("go", flush=True)
