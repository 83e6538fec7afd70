"""SageMaker's built-in algorithms, as the local backend runs them: the image names that mean one, the metric
definitions SageMaker gives it, and the script of this project's own that stands in for it on this machine.

    xgboost_algorithm.py   the built-in XGBoost algorithm: reads the training contract's config and channels,
                           trains, writes xgboost-model to the model directory. Run as a script (named so, not
                           xgboost.py, which would import itself as `xgboost`).
"""

from __future__ import annotations

from pathlib import Path

from ledger.capture.image import parse_image_uri

ALGORITHM_SCRIPTS = {"xgboost": Path(__file__).with_name("xgboost_algorithm.py")}
# Repository names of the images whose built-in algorithm runs here (any registry, region, tag or digest).
BUILTIN_IMAGE_REPOSITORIES = {"sagemaker-xgboost": "xgboost", "xgboost": "xgboost"}
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
# SageMaker defines these for the built-in XGBoost algorithm itself: a request need not name them.
BUILTIN_METRIC_DEFINITIONS = [
    {"Name": f"{channel}:{metric}", "Regex": rf".*\[[0-9]+\].*#011{channel}-{metric}:{_NUMBER}.*"}
    for channel in ("train", "validation") for metric in ("rmse", "mae", "logloss", "error", "auc", "merror")
]


def builtin_algorithm(image: str | None) -> str | None:
    """'xgboost' for any registry/region/tag/digest of the SageMaker XGBoost image; None for anything else."""
    if not image:
        return None
    return BUILTIN_IMAGE_REPOSITORIES.get(parse_image_uri(image).repository.rsplit("/", 1)[-1])
