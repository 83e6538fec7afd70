"""The local backend: a CreateTrainingJob request run on this machine under the SageMaker training contract.

    contract.py      pure: the request read and checked, the SM_* environment, metrics, the outcome
    staging.py       the job root, data and code staged, config files, artifacts packed and saved
    process.py       the job's process: its own group, its time limit, dead with its launcher
    sandbox.py       the job's private mount namespace, where /opt/ml is its own
    environments.py  the job's Python environment: image profiles (profiles/), locks, built with uv, cached
    container_support/  what a framework image has that no index does, put on the job's path
    backend.py       LocalBackend.prepare and .launch, which string them together
    job_watchdog.py  a tiny process that ends a job's process group if its launcher dies
"""

from ledger.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
