"""The Backend protocol: one `launch` that takes a CreateTrainingJob request and returns what happened.

A backend runs the request exactly as recorded; it does not capture or pin (capture does that before launch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ledger.record import Outcome

LogFn = Callable[[str], None]
"""Receives each log line, without its newline."""


@dataclass
class LaunchResult:
    outcome: Outcome
    series: list[dict[str, Any]] = field(default_factory=list)
    """Metric points in log order: {name, step, value, timestamp}; step counts that metric's matches from 0."""
    job_dir: Path | None = None
    log_path: Path | None = None
    data_pins: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per channel, what was actually staged, DataChannelPin-shaped (file channels pinned into the content store,
    S3 channels with the version ids that were read)."""
    source_archive: dict[str, Any] | None = None
    """The code that was staged: {uri, version_id, sha256, tree_sha256}; None when the job had no source code."""
    output_artifact: dict[str, Any] | None = None
    """output.tar.gz (the job's output/data/): {uri, version_id, sha256, tree_sha256}."""


class Backend(Protocol):
    name: str

    def launch(
        self,
        request: dict[str, Any],
        *,
        job_dir: Path | None = None,
        log: LogFn | None = None,
        pins: dict[str, dict[str, Any]] | None = None,
        source_archive: dict[str, Any] | None = None,
    ) -> LaunchResult:
        """Run the request and wait for it to end.

        `pins` maps a channel name to its DataChannelPin-shaped dict: the backend stages exactly those objects
        (versions, or content-store digests). `source_archive` ({uri, version_id, sha256}) pins the
        sagemaker_submit_directory archive. Raises a LedgerError for a request it cannot run, before it runs.
        """
        ...
