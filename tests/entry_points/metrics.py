"""Prints metric lines in a few shapes: tab-separated (as xgboost does), 'name=value', and scientific notation."""

import os

epochs = int(os.environ.get("SM_HP_EPOCHS", "5"))
for epoch in range(epochs):
    loss = 1.0 / (epoch + 1)
    print(f"[{epoch}]\ttrain-loss:{loss:.5f}\tvalidation-loss:{loss * 1.1:.5f}", flush=True)
    print(f"epoch={epoch} accuracy={0.5 + epoch / 20:.4f} lr={1e-3 / (epoch + 1):.3e}", flush=True)
    print("a line no metric matches", flush=True)
print("accuracy=not-a-number", flush=True)
