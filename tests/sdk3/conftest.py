"""tests/sdk3 runs only where the SageMaker SDK 3.x is installed: in .venv-sdk3, which tests/test_autolog_sdk3.py
makes from requirements-sdk3.lock and runs `python -m pytest tests/sdk3` in. The two SDK majors cannot share one
environment, so the main test run (SDK 2.x) does not collect this directory at all.

Fixtures for the SDK 3.x tests live here; the shared ones (`aws`, `ledger_home`) come from tests/conftest.py.
"""

from __future__ import annotations

import subprocess
from importlib import metadata


def _sagemaker_major() -> int | None:
    try:
        return int(metadata.version("sagemaker").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return None


SDK3 = (_sagemaker_major() or 0) >= 3

if not SDK3:
    collect_ignore_glob = ["test_*.py"]
else:
    import pytest

    import ledger

    ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
    DEFAULT_BUCKET = "sagemaker-us-east-1-123456789012"  # the SDK's default bucket: versioning off, as usual

    def git(repo, *args) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout

    @pytest.fixture
    def notebook_dir(tmp_path, monkeypatch):
        """A git repository with one pushed commit and a training script in src/, as the working directory."""
        repo = tmp_path / "project"
        (repo / "src").mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        git(repo, "config", "user.email", "ds@example.com")
        git(repo, "config", "user.name", "Data Scientist")
        (repo / "src" / "train.py").write_text("import os\nprint('training on', os.environ.get('SM_CHANNELS'))\n")
        (repo / "src" / "requirements.txt").write_text("xgboost-cpu==2.1.4\n")  # pinned: a loose line is a gap
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "training script")
        bare = tmp_path / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
        git(repo, "remote", "add", "origin", str(bare))
        git(repo, "push", "-q", "origin", "main")
        monkeypatch.chdir(repo)
        return repo

    @pytest.fixture
    def sdk3(aws, ledger_home, notebook_dir, tmp_path, monkeypatch):
        """SageMaker SDK 3.x, offline: no telemetry, no IAM role check (moto does not implement it), the SDK's
        process-wide client cache emptied before and after, so each test starts like a fresh notebook."""
        import boto3
        from sagemaker.core.utils.utils import SageMakerClient

        config = tmp_path / "sagemaker-config.yaml"
        # DefaultS3Bucket: without it the SDK asks STS for the account at a hard-coded regional endpoint, which
        # ignores AWS_ENDPOINT_URL and so cannot reach moto.
        config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
                          f"      Session:\n        DefaultS3Bucket: {DEFAULT_BUCKET}\n")
        monkeypatch.setenv("SAGEMAKER_USER_CONFIG_OVERRIDE", str(config))
        monkeypatch.setenv("SAGEMAKER_VALIDATE_ROLE", "false")
        SageMakerClient.reset()
        boto3.client("s3").create_bucket(Bucket=DEFAULT_BUCKET)
        yield
        ledger.autolog(disable=True)
        SageMakerClient.reset()
