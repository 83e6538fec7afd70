"""A compatible surface of the SageMaker XGBoost image's own package (aws/sagemaker-xgboost-container), which is not
on any package index: what script-mode scripts import from it. Written for the ledger's local backend."""
