"""Runs far past any short MaxRuntimeInSeconds."""

import time

print("sleeping for a minute", flush=True)
time.sleep(60)
print("woke up", flush=True)
