"""The demo and the offline AWS stand-in: apart from the product, imported only by `ledger demo` and the notebooks.

    abalone.py     `ledger demo`: XGBoost on abalone three ways, recorded, one reproduced, verified, reported
    local_aws.py   moto's server as AWS for the notebooks, each training job run on the local backend
"""

from ledger.demo.abalone import DemoResult, build_csv_rows, run_demo

__all__ = ["DemoResult", "build_csv_rows", "run_demo"]
