"""The verdict of a reproduction: the original's outcome against the reproduction's, and why they differ.

    build_verdict         pure: IDENTICAL | EQUIVALENT | DIVERGED | UNVERIFIABLE, the differences, what explains them
    build_compensation    pure: drift the pinned relaunch made up for, apart from drift it did not
    build_substitutions   pure: what the reproduction ran on in place of what the original ran on
    compare_artifacts     side effects: both model archives read, the paths that differ listed
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger.capture.content_store import build_tree_digest, sha256_file, tree_entries
from ledger.capture.outcome import fetch_model_archive
from ledger.record import Outcome, RunRecord, Verdict
from ledger.run.preflight import PinCheck, short

DEFAULT_TOLERANCE = 1e-6


def build_verdict(original: Outcome, reproduction: Outcome, drifted: list[PinCheck],
                  tolerances: dict[str, float] | None = None, changed_files: list[str] | None = None, *,
                  compensated: list[dict] | None = None, substitutions: list[dict] | None = None) -> Verdict:
    """Pure. Weighs both things compared, the model artifacts' contents and the final metrics:

        IDENTICAL     equal model contents and equal final metrics (the same names, equal values)
        EQUIVALENT    not identical, but both have the same metrics and each is within its relative tolerance
        DIVERGED      anything else: what differs, and what could explain it
        UNVERIFIABLE  a model artifact to compare is missing (a run that never finished, an unreadable archive)

    `drifted` are the pins the relaunch did not compensate for; with `substitutions` (another backend, a stand-in
    environment) they are what `explained_by` names. `compensated` ({pin, recorded, now, by}) is listed apart.
    """
    tolerances = tolerances or {}
    explained_by = [{"pin": c.pin, "recorded": c.recorded, "now": c.now, "kind": "drift"} for c in drifted]
    explained_by += [{**s, "kind": "substitution"} for s in substitutions or []]
    compensated = list(compensated or [])

    def verdict(result: str, differences: list[dict]) -> Verdict:
        return Verdict(result=result, differences=differences,
                       explained_by=[] if result == "IDENTICAL" else explained_by, compensated=compensated)

    missing = _missing_artifacts(original, reproduction)
    if missing:
        return verdict("UNVERIFIABLE", missing + _metric_differences(original, reproduction, tolerances)[0])
    if reproduction.status != "Completed":
        return verdict("DIVERGED", [{"what": "status", "original": original.status,
                                     "reproduction": reproduction.status, "reason": reproduction.failure_reason}])
    a = original.model_artifact.tree_sha256 if original.model_artifact else None
    b = reproduction.model_artifact.tree_sha256 if reproduction.model_artifact else None
    differences: list[dict] = []
    if a != b:
        differences.append({"what": "model artifact", "original": a, "reproduction": b,
                            **({"files": changed_files} if changed_files else {})})
    metric_differences, beyond_tolerance = _metric_differences(original, reproduction, tolerances)
    if not differences and not metric_differences:
        return verdict("IDENTICAL", [])
    if not (original.metrics or reproduction.metrics):
        differences.append({"what": "metrics", "original": None, "reproduction": None,
                            "reason": "no final metric to compare"})
        return verdict("DIVERGED", differences)
    return verdict("DIVERGED" if beyond_tolerance else "EQUIVALENT", differences + metric_differences)


def _missing_artifacts(original: Outcome, reproduction: Outcome) -> list[dict]:
    """What makes a comparison of model contents impossible: an original with no readable model artifact, or a
    reproduction whose artifact was written but could not be read."""
    found = []
    artifact = original.model_artifact
    if not (artifact and artifact.tree_sha256):
        if artifact and artifact.uri:
            reason = f"the original's model artifact {artifact.uri} could not be read when it was recorded"
        elif original.status != "Completed":
            reason = (f"the original run has no model artifact: it ended {original.status or 'without an outcome'}"
                      + (f" ({original.failure_reason})" if original.failure_reason else ""))
        else:
            reason = "the original run recorded no model artifact"
        found.append({"what": "original model artifact", "original": artifact.uri if artifact else None,
                      "reproduction": reproduction.model_artifact.tree_sha256 if reproduction.model_artifact
                      else None, "reason": reason})
    theirs = reproduction.model_artifact
    if reproduction.status == "Completed" and theirs and theirs.uri and not theirs.tree_sha256:
        found.append({"what": "reproduction model artifact", "original": None, "reproduction": theirs.uri,
                      "reason": "the reproduction's model artifact could not be read"})
    return found


def _metric_differences(original: Outcome, reproduction: Outcome,
                        tolerances: dict[str, float]) -> tuple[list[dict], bool]:
    """Every final metric not exactly equal, with its relative difference; and whether any is beyond its
    tolerance (a metric only one run has always is)."""
    found, beyond = [], False
    for name in sorted(set(original.metrics) | set(reproduction.metrics)):
        x, y = original.metrics.get(name), reproduction.metrics.get(name)
        if x == y:
            continue
        tolerance = tolerances.get(name, tolerances.get("*", DEFAULT_TOLERANCE))
        if x is None or y is None:
            found.append({"what": f"metric {name}", "original": x, "reproduction": y})
            beyond = True
            continue
        relative = abs(x - y) / max(abs(x), abs(y), 1e-300)
        found.append({"what": f"metric {name}", "original": x, "reproduction": y,
                      "relative_difference": relative, "tolerance": tolerance})
        beyond = beyond or relative > tolerance
    return found, beyond


def build_compensation(record: RunRecord, checks: list[PinCheck]) -> tuple[list[PinCheck], list[dict]]:
    """Pure: split the drifted and missing pins into those the pinned relaunch did not make up for, and those it
    did ({pin, recorded, now, by}). A missing pin never is; drift is when the relaunch used the recorded pin."""
    pins = record.pins
    restorable_code = {c.channel for c in checks if c.pin == f"code channel {c.channel}" and c.status == "drift"}
    left, compensated = [], []
    for check in checks:
        by = None
        if check.status == "drift":
            channel = pins.data.get(check.channel) if check.channel else None
            if check.pin == "image tag" and pins.image.digest:
                by = "the relaunch names the recorded digest, not the tag"
            elif channel is not None and channel.pinned:
                by = ("the relaunch restores the recorded files from the content store" if channel.kind == "file"
                      else "the relaunch reads the recorded object versions")
                by += "; the added object is not read" if check.now == "added" else ""
            elif check.pin.startswith("code channel") and check.channel in restorable_code:
                by = "the relaunch restores the recorded code files"
            elif check.pin == "source archive":
                by = "the relaunch reads the recorded version of the archive"
            elif check.pin == "code work tree" and pins.code.source_archive and pins.code.source_archive.uri:
                by = "the relaunch stages the pinned source archive"
        if by:
            compensated.append({"pin": check.pin, "recorded": check.recorded, "now": check.now, "by": by})
        else:
            left.append(check)
    return left, compensated


def build_substitutions(original: RunRecord, reproduction: RunRecord) -> list[dict]:
    """Pure: what the reproduction ran on in place of what the original ran on ({pin, recorded, now}): another
    backend, an environment standing in for an image (or the image where one stood in), another machine."""
    found = []
    if original.backend != reproduction.backend:
        found.append({"pin": "backend", "recorded": original.backend, "now": reproduction.backend})
    was, now = original.pins.image, reproduction.pins.image
    if (was.source == "environment") != (now.source == "environment"):
        found.append({"pin": "image", "recorded": describe_image_ran(was), "now": describe_image_ran(now)})
    ran_was, ran_now = original.pins.hardware.ran, reproduction.pins.hardware.ran
    if ran_was and ran_now and _machine(ran_was) != _machine(ran_now):
        found.append({"pin": "hardware ran", "recorded": _machine(ran_was), "now": _machine(ran_now)})
    return found


def describe_image_ran(image) -> str:
    """Pure: one line for what ran as a run's image."""
    if image.stood_in():
        return image.stood_in()
    return f"{image.uri or 'no image'}" + (f" by digest {short(image.digest, 19)}" if image.digest else "")


def _machine(ran: dict) -> str:
    gpu = f", {ran.get('gpu_count')} x {ran.get('gpu')}" if ran.get("gpu") else ""
    return f"{ran.get('vcpu')} vCPU, {ran.get('memory_gib')} GiB{gpu} on {ran.get('host')}"


@dataclass
class ArtifactComparison:
    """Two model archives read and compared under the current tree digest rule."""

    original_tree: str | None  # None when the original's archive is gone or no longer the recorded bytes
    reproduction_tree: str | None
    changed: list[str] = field(default_factory=list)  # paths whose mode, bytes or link target differ


def compare_artifacts(original, reproduction, session: Any = None) -> ArtifactComparison:
    """Read both archives (the recorded S3 version where there is one) and list the paths that differ. An
    archive whose sha256 is not the recorded one is not the recorded artifact: its tree is left out."""
    trees: list[dict | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, artifact in enumerate((original, reproduction)):
            archive = Path(tmp) / f"{i}.tar.gz"
            try:
                fetch_model_archive(artifact, archive, session)
                same = artifact.sha256 is None or sha256_file(archive) == artifact.sha256
                trees.append(tree_entries(archive) if same else None)
            except Exception:  # noqa: BLE001 - an archive that cannot be read is not compared
                trees.append(None)
    a, b = trees
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) if a is not None and b is not None else []
    return ArtifactComparison(build_tree_digest(a) if a is not None else None,
                              build_tree_digest(b) if b is not None else None, changed)
