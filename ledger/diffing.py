"""Pure: what differs between two records, as dotted paths. `ledger diff` and the dashboard's compare use it."""

from __future__ import annotations

import json
from typing import Any

from ledger.record import RunRecord

SECTIONS = ("request", "pins", "outcome")
SKIPPED = {"outcome.metric_series"}  # long series are compared as plots, not cell by cell
LIST_KEYS = ("ChannelName", "key", "Name", "name", "what")  # lists of these are matched by that field


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and keyed lists as {dotted.path: scalar}; other lists as one JSON text."""
    if prefix in SKIPPED:
        return {}
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat or {prefix: "{}"}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        key = next((k for k in LIST_KEYS if all(k in v for v in value)), None)
        if key is not None:
            flat = {}
            for item in value:
                flat.update(flatten({k: v for k, v in item.items() if k != key}, f"{prefix}[{item[key]}]"))
            return flat
    if isinstance(value, list):
        return {prefix: json.dumps(value, sort_keys=True)}
    return {prefix: value}


def diff_records(a: RunRecord, b: RunRecord, sections: tuple[str, ...] = SECTIONS) -> list[dict[str, Any]]:
    """Every path under `sections` whose value differs, with both values (None where one side lacks it)."""
    left = flatten({s: a.to_dict().get(s) for s in sections})
    right = flatten({s: b.to_dict().get(s) for s in sections})
    return [{"path": path, "a": left.get(path), "b": right.get(path)}
            for path in sorted(set(left) | set(right)) if left.get(path) != right.get(path)]
