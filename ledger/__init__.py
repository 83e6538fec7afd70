"""A reproducibility ledger for SageMaker training jobs. Public API only."""

from ledger.hooks import autolog
from ledger.record import RunRecord
from ledger.store.ledger import Ledger, open_ledger

__all__ = ["Ledger", "RunRecord", "autolog", "open_ledger"]
__version__ = "0.1.0"
