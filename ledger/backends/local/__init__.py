"""The local backend: a CreateTrainingJob request run on this machine under the SageMaker training contract.

    contract.py      pure: the request read and checked, the SM_* environment, metrics, the outcome
    staging.py       the job root, data and code staged, config files, artifacts packed and saved
    process.py       the job's process: its own group, its time limit, dead with its launcher
    backend.py       LocalBackend.launch, which strings them together
    job_watchdog.py  a tiny process that ends a job's process group if its launcher dies
"""

from ledger.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
