"""An SDK 3.x ModelTrainer job captured on moto reproduces on the local backend: its ContainerEntrypoint (the SDK's
own sm_train.sh, from the sm_drivers channel) runs in the image's profile, with /opt/ml its own.

Runs in .venv-sdk3 only (see conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import ledger
from ledger.cli import main
from ledger.store.ledger import open_ledger
from tests.sdk3.conftest import git
from tests.sdk3.test_model_trainer import (
    AWS_ACCOUNT,
    builtin_xgboost_image,
    input_data,
    make_data_bucket,
    model_trainer,
    only_record,
    publish_image,
    users_session,
)

SCRIPT = '''import argparse, os, sys
import termcolor
import xgboost
parser = argparse.ArgumentParser()
parser.add_argument("--num_round", type=int)
parser.add_argument("--max_depth", type=int)
parser.add_argument("--objective")
args = parser.parse_args()
rows = sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))
print(f"xgboost {xgboost.__version__} python {sys.version_info[0]}.{sys.version_info[1]} rounds {args.num_round}")
print(f"model dir {os.environ['SM_MODEL_DIR']} cwd {os.getcwd()}")
with open("/opt/ml/model/model.txt", "w") as f:
    f.write(f"{args.num_round} {args.max_depth} {rows}\\n")
print("loss: 0.5")
'''


def test_a_model_trainer_job_captured_on_moto_reproduces_on_the_local_backend(sdk3, notebook_dir, capsys):
    (notebook_dir / "src" / "train.py").write_text(SCRIPT)
    (notebook_dir / "src" / "requirements.txt").write_text("termcolor==2.4.0\n")
    git(notebook_dir, "commit", "-qam", "a script that trains")
    session = users_session()
    image = builtin_xgboost_image()
    publish_image("sagemaker-xgboost", "1.7-1", account=AWS_ACCOUNT)
    make_data_bucket()
    ledger.autolog(boto_session=session)
    model_trainer(image, session=session).train(input_data_config=input_data(), wait=True, logs=False)
    ledger.autolog(disable=True)
    original = only_record()
    assert original.backend == "sagemaker"

    capsys.readouterr()
    code = main(["reproduce", original.run_id, "--backend", "local", "--json"])
    out, err = capsys.readouterr()
    result = json.loads(out)
    reproduction = open_ledger().get(result["run_id"])
    assert reproduction.outcome.status == "Completed", (reproduction.outcome.failure_reason, err)
    log = Path(reproduction.outcome.log_path).read_text()
    assert "xgboost 1.7.4 python 3." in log and "rounds 50" in log
    assert "model dir /opt/ml/model cwd /opt/ml/input/data/code" in log
    ran = reproduction.pins.image.ran
    assert ran["profile"] == "xgboost:1.7-1" and ran["requirements"]["installed_on_top"]
    assert reproduction.pins.environment.packages["termcolor"] == "2.4.0"
    substitutions = {e["pin"] for e in result["verdict"]["explained_by"] if e.get("kind") == "substitution"}
    assert {"backend", "image"} <= substitutions
    assert code in (0, 1)  # moto ran nothing: the original has no model to compare (UNVERIFIABLE), or IDENTICAL
    assert not Path("/opt/ml").exists()
