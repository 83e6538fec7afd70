"""Hardware: what the job asked for (instance type, count, volume), with vCPU, memory and accelerators from a
catalogue of common ml.* types shipped in ledger/data/instance_types.json.

An instance type missing from the catalogue is not a reproducibility gap (the request names it exactly): it is
recorded with `catalogued: false` and no specs. Local mode (`local`, `local_gpu`) records this machine's facts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from ledger.record import Gap, HardwarePin

LOCAL_INSTANCE_TYPES = ("local", "local_gpu")
CATALOGUE_PATH = Path(__file__).resolve().parent.parent / "data" / "instance_types.json"


@cache
def load_instance_catalogue() -> dict[str, dict[str, Any]]:
    return json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))["instance_types"]


def build_instance_specs(instance_type: str | None, catalogue: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{vcpu, memory_gib, gpu, gpu_count, catalogued} for one type. Pure."""
    spec = catalogue.get(instance_type or "")
    if spec is None:
        return {"vcpu": None, "memory_gib": None, "gpu": None, "gpu_count": None, "catalogued": False}
    return {
        "vcpu": spec["vcpu"],
        "memory_gib": spec["memory_gib"],
        "gpu": spec.get("gpu"),
        "gpu_count": spec.get("gpu_count", 0),
        "catalogued": True,
    }


def _memory_gib_from_meminfo() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 2)  # the file counts kiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _local_gpus() -> tuple[str | None, int]:
    """(model, count) from nvidia-smi, or (None, 0) without one."""
    if not shutil.which("nvidia-smi"):
        return None, 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, 0
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return (names[0] if names else None), len(names)


def capture_local_host(instance_type: str) -> dict[str, Any]:
    """This machine's facts, for local mode: CPUs, memory, GPUs (asked only for local_gpu), host name."""
    gpu, gpu_count = _local_gpus() if instance_type == "local_gpu" else (None, 0)
    return {
        "vcpu": os.cpu_count(),
        "memory_gib": _memory_gib_from_meminfo(),
        "gpu": gpu,
        "gpu_count": gpu_count,
        "host": socket.gethostname(),
        "catalogued": False,
    }


def capture_hardware(request: dict[str, Any]) -> tuple[HardwarePin, list[Gap]]:
    """The hardware a request asks for. Heterogeneous clusters (InstanceGroups) are listed in `instance_groups`;
    then `instance_count` is their total and `instance_type` is set only when every group uses the same type."""
    config = request.get("ResourceConfig") or {}
    if not config:
        return HardwarePin(), [
            Gap(what="hardware", why="the request has no ResourceConfig", fix="set instance_type and instance_count")
        ]
    catalogue = load_instance_catalogue()
    groups = config.get("InstanceGroups") or []
    if groups:
        described = [
            {
                "name": group.get("InstanceGroupName"),
                "instance_type": group.get("InstanceType"),
                "instance_count": group.get("InstanceCount"),
                **build_instance_specs(group.get("InstanceType"), catalogue),
            }
            for group in groups
        ]
        types = {g["instance_type"] for g in described}
        same = types.pop() if len(types) == 1 else None
        pin = HardwarePin(
            instance_type=same,
            instance_count=sum(g["instance_count"] or 0 for g in described),
            volume_gb=config.get("VolumeSizeInGB"),
            instance_groups=described,
            **({k: described[0][k] for k in ("vcpu", "memory_gib", "gpu", "gpu_count", "catalogued")} if same else {}),
        )
        return pin, []
    instance_type = config.get("InstanceType")
    specs = (
        capture_local_host(instance_type)
        if instance_type in LOCAL_INSTANCE_TYPES
        else build_instance_specs(instance_type, catalogue)
    )
    pin = HardwarePin(
        instance_type=instance_type,
        instance_count=config.get("InstanceCount"),
        volume_gb=config.get("VolumeSizeInGB"),
        **specs,
    )
    return pin, []
