"""Hardware: what the job asked for (instance type, count, volume), with vCPU, memory and accelerators from a
catalogue of common ml.* types shipped in ledger/data/instance_types.json; and, for a local run, what it ran on.

An instance type missing from the catalogue is not a reproducibility gap (the request names it exactly): it is
recorded with `catalogued: false` and no specs. Local mode (`local`, `local_gpu`) asks for this machine, so its
figures are this machine's. What was requested and what ran are two facts: a local run of `ml.m5.4xlarge` asked
for 16 vCPU and ran on this host's CPUs, and the pin says both (`requested`, `ran`).
"""

from __future__ import annotations

import json
import os
import platform
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


def capture_ran_here() -> dict[str, Any]:
    """The machine a local run runs on, as observed now: {host, instance_count, vcpu, memory_gib, gpu, gpu_count,
    os, how}."""
    gpu, gpu_count = _local_gpus()
    seen_gpus = "nvidia-smi" if shutil.which("nvidia-smi") else "nvidia-smi (not installed: no GPU seen)"
    return {
        "host": socket.gethostname(),
        "instance_count": 1,  # the local backend runs one instance, whatever the request asks for
        "vcpu": os.cpu_count(),
        "memory_gib": _memory_gib_from_meminfo(),
        "gpu": gpu,
        "gpu_count": gpu_count,
        "os": platform.platform(),
        "how": f"observed on this machine by the local backend: os.cpu_count(), /proc/meminfo, {seen_gpus}",
    }


def build_requested(pin: HardwarePin, local_type: bool) -> dict[str, Any]:
    """Pure: the request's hardware with where its figures came from."""
    fields = ("instance_type", "instance_count", "volume_gb", "vcpu", "memory_gib", "gpu", "gpu_count")
    requested = {name: getattr(pin, name) for name in fields}
    catalogued = pin.model_extra.get("catalogued")
    requested["catalogued"] = catalogued
    if local_type:
        source = "this machine (local mode asks for it)"
    elif pin.model_extra.get("instance_groups") and not pin.instance_type:
        source = "the instance catalogue, per group (instance_groups)"
    elif catalogued:
        source = "the instance catalogue"
    else:
        source = "none: the type is not in the instance catalogue"
    requested["figures_from"] = source
    return requested


def capture_hardware(request: dict[str, Any], backend: str = "sagemaker") -> tuple[HardwarePin, list[Gap]]:
    """The hardware a request asks for, and (backend "local") the machine it runs on. Heterogeneous clusters
    (InstanceGroups) are listed in `instance_groups`; then `instance_count` is their total and `instance_type` is
    set only when every group uses the same type."""
    pin, gaps = _capture_requested(request)
    local_type = pin.instance_type in LOCAL_INSTANCE_TYPES
    pin.requested = build_requested(pin, local_type) if not gaps else None
    if backend == "local":
        pin.ran = capture_ran_here()
        pin.host = pin.ran["host"]
    else:
        pin.ran_source = "as requested from SageMaker: it runs the requested type and reports no hardware of its own"
    return pin, gaps


def _capture_requested(request: dict[str, Any]) -> tuple[HardwarePin, list[Gap]]:
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
