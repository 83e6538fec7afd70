"""Fails the way most scripts do: an uncaught exception and no output/failure file."""

print("starting", flush=True)
raise RuntimeError("boom: the optimizer diverged")
