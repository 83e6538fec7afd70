"""Nothing secret is stored (issue 12, item 5) and capture is linear in its input (issue 13, item 6).

A job launched with secrets in its hyperparameters, environment, tags and arguments, from a repository whose
uncommitted diff and untracked file names hold credentials, printing its secrets to its log: afterwards no
secret is in the ledger's database (SQLite or PostgreSQL, every table), in LEDGER_HOME's files (the job's
directory, its log, its hyperparameters.json), in a real `mlflow server`'s store and artifacts, or in an audit
report. Each redacted request value keeps a salted digest, and a relaunch refuses a secret that does not match.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

import tests.test_mlflow_mirror as mirror_tests
from ledger.capture import secrets
from ledger.cli import main
from ledger.record import REDACTED, Outcome, RunRecord
from ledger.run.launch import build_request, launch_job
from ledger.store.ledger import open_ledger


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` for this module: the mlflow beside this interpreter."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mirror_tests, "MLFLOW", Path(sys.executable).with_name("mlflow"))
        server = mirror_tests.MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
        server.start()
    yield server
    server.stop()


GITHUB_TOKEN = "ghp_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
SLACK_TOKEN = "xoxb-123456789012-abcdefghijkl"
AWS_KEY_ID = "AKIAIOSFODNN7QWERTYU"
AWS_SECRET = "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"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
PRIVATE_KEY_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"
SECRETS = {
    "hp_by_name": "hp-s3cr3t-4471",
    "hp_url_password": "url-pw,4472",  # a comma: detect-secrets' BasicAuthDetector refuses it, a URL may hold it
    "env_by_name": "env-s3cr3t-4473",
    "tag_by_name": "tag-s3cr3t-4474",
    "argument_by_name": "arg-s3cr3t-4475",
    "diff_password": "diff-s3cr3t-4476",
    "github": GITHUB_TOKEN,
    "slack": SLACK_TOKEN,
    "aws_key_id": AWS_KEY_ID,
    "aws_secret": AWS_SECRET,
    "jwt_payload": JWT.split(".")[1],
    "private_key": PRIVATE_KEY_BODY,
}
TRAIN = """\
import json, os, stat, sys
config = os.path.join(os.environ['SAGEMAKER_BASE_DIR'], 'input', 'config', 'hyperparameters.json')
print('hyperparameters.json mode', oct(stat.S_IMODE(os.stat(config).st_mode)))
print('argv', sys.argv)
print('connecting with DATABASE_URL=' + os.environ['DATABASE_URL'])
print('the hub token is', json.loads(os.environ['SM_HPS'])['hub_config'])
print('epoch 0 loss: 0.5')
open(os.path.join(os.environ['SM_MODEL_DIR'], 'model.txt'), 'w').write('model')
"""


def dirty_workspace(workspace: Path) -> None:
    """A committed settings file changed to hold credentials, and an untracked file named by a token."""
    (workspace / "src" / "train.py").write_text(TRAIN)
    (workspace / "settings.py").write_text("region = 'us-east-1'\n")
    for args in (["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "settings"]):
        subprocess.run(["git", *args], cwd=workspace, check=True, capture_output=True)
    (workspace / "settings.py").write_text(
        "region = 'us-east-1'\n"
        f"password = \"{SECRETS['diff_password']}\"\n"
        f"aws_access_key_id = \"{AWS_KEY_ID}\"\n"
        f"aws_secret_access_key = \"{AWS_SECRET}\"\n"
        f"DEPLOY_KEY = '''-----BEGIN RSA PRIVATE KEY-----\n{PRIVATE_KEY_BODY}\n-----END RSA PRIVATE KEY-----'''\n")
    (workspace / f"notes-{AWS_KEY_ID}.txt").write_text("untracked\n")


def secret_request(workspace: Path, job_name: str) -> dict:
    request = build_request(
        job_name=job_name, entry_point="train.py", source_uri=(workspace / "src").as_uri(),
        hyperparameters={"api_token": json.dumps(SECRETS["hp_by_name"]), "lr": "0.1",
                         "init_from": json.dumps(f"postgres://ml:{SECRETS['hp_url_password']}@db/ckpt"),
                         "hub_config": json.dumps(f"token {GITHUB_TOKEN} jwt {JWT}")},
        channels={"train": (workspace / "data").as_uri()}, metrics={"loss": "loss: ([0-9.]+)"},
        instance_type="ml.m5.large", image="local", role="arn:aws:iam::123456789012:role/R",
        output_path=(workspace / "output").as_uri(),
        environment={"DB_PASSWORD": SECRETS["env_by_name"], "NOTIFY": SLACK_TOKEN,
                     "DATABASE_URL": f"postgres://app:{SECRETS['hp_url_password']}@db:5432/app"})
    request["Tags"] = [{"Key": "owner", "Value": "ds"}, {"Key": "registry_token", "Value": SECRETS["tag_by_name"]}]
    request["AlgorithmSpecification"]["ContainerArguments"] = ["--db-password", SECRETS["argument_by_name"]]
    return request


def database_text(url: str) -> str:
    """Every row of every table of the ledger's database, as text (blobs decoded)."""
    def as_text(value) -> str:
        if isinstance(value, (bytes, memoryview)):
            return bytes(value).decode("utf-8", "replace")
        return str(value)

    rows = []
    with open_ledger(url).engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            rows += [as_text(value) for row in conn.execute(text(f"SELECT * FROM {table}")) for value in row]
    return "\n".join(rows)


def files_text(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{path: text} of every file under root (SQLite's WAL too), but those under `skip`."""
    found = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.startswith(skip):
            found[relative] = path.read_bytes().decode("utf-8", "replace")
    return found


def leaks(texts: dict[str, str]) -> list[tuple[str, str]]:
    return [(where, name) for where, body in texts.items() for name, secret in SECRETS.items() if secret in body]


def test_no_secret_reaches_the_database_files_mlflow_or_an_audit(db_url, workspace, mlflow_server, monkeypatch,
                                                                 ledger_home, capsys, tmp_path):
    monkeypatch.setenv("LEDGER_MLFLOW_URI", mlflow_server.url)
    dirty_workspace(workspace)
    record = launch_job(open_ledger(), secret_request(workspace, "secretive-job"), backend="local", workdir=workspace,
                        log=lambda line: None)
    assert record.outcome.status == "Completed", record.outcome.failure_reason
    assert main(["sync"]) == 0
    report = tmp_path / "audit.md"
    assert main(["audit", record.run_id, "--format", "md", "-o", str(report)]) == 0
    assert main(["audit", record.run_id, "--format", "json", "-o", str(tmp_path / "audit.json")]) == 0
    capsys.readouterr()

    texts = {"database": database_text(db_url), "audit.md": report.read_text(),
             "audit.json": (tmp_path / "audit.json").read_text(), "record": open_ledger().get(record.run_id).to_json()}
    # The content store keeps the job's inputs byte for byte (its code and data, as S3 would): not the ledger's text.
    texts.update(files_text(ledger_home, skip=("objects/",)))
    texts.update({f"mlflow:{k}": v for k, v in files_text(Path(mlflow_server.root)).items()})
    assert leaks(texts) == []

    saved = open_ledger().get(record.run_id)
    job_log = (ledger_home / "jobs" / "secretive-job" / "job.log").read_text()
    assert "hyperparameters.json mode 0o600" in job_log and job_log.count(REDACTED) >= 4
    assert f"DATABASE_URL=postgres://app:{REDACTED}@db:5432/app" in job_log
    assert saved.request["HyperParameters"]["api_token"] == REDACTED
    assert saved.request["Environment"]["DB_PASSWORD"] == REDACTED
    assert saved.request["Environment"]["NOTIFY"] == REDACTED  # by value: a Slack token
    assert saved.request["Tags"] == [{"Key": "owner", "Value": "ds"}, {"Key": "registry_token", "Value": REDACTED}]
    assert saved.request["AlgorithmSpecification"]["ContainerArguments"] == ["--db-password", REDACTED]
    assert saved.pins.hyperparameters["init_from"] == f"postgres://ml:{REDACTED}@db/ckpt"
    assert saved.pins.code.untracked == [f"notes-{REDACTED}.txt"]
    assert saved.pins.code.diff_redactions == 4  # the password, the key id, the secret key, the private key
    stored_diff = open_ledger().get_blob(saved.pins.code.diff_sha256).decode()
    assert f'password = "{REDACTED}"' in stored_diff and "region = 'us-east-1'" in stored_diff
    paths = {v["path"] for v in saved.redactions["values"]}
    assert {"HyperParameters.api_token", "HyperParameters.init_from", "HyperParameters.hub_config",
            "Environment.DB_PASSWORD", "Environment.NOTIFY", "Environment.DATABASE_URL", "Tags[registry_token]",
            "AlgorithmSpecification.ContainerArguments[1]"} <= paths
    assert all(len(v["digest"]) == 64 for v in saved.redactions["values"])


def test_a_relaunch_checks_the_secret_against_its_salted_digest(workspace, capsys):
    assert main(["run", "src/train.py", "--channel", "train=data", "--hp", "api_token=s3cr3t-7781",
                 "--job-name", "guarded"]) == 0
    assert main(["run", "src/train.py", "--channel", "train=data", "--hp", "api_token=s3cr3t-7781",
                 "--job-name", "guarded-twin"]) == 0
    capsys.readouterr()
    first, twin = open_ledger().get("guarded"), open_ledger().get("guarded-twin")
    assert first.redactions["salt"] != twin.redactions["salt"]  # the same secret digests differently in two runs
    assert first.redactions["values"][0]["digest"] != twin.redactions["values"][0]["digest"]

    assert main(["reproduce", "guarded", "--secret", "api_token=not-the-one"]) == 2
    err = capsys.readouterr().err
    assert "api_token is not the one run" in err and "not-the-one" not in open_ledger().get("guarded").to_json()
    assert main(["reproduce", "guarded", "--secret", "api_token=s3cr3t-7781", "--json"]) == 0


def test_a_failing_job_that_writes_its_own_secret_does_not_store_it(workspace, ledger_home, capsys):
    (workspace / "src" / "fail.py").write_text(
        "import os, sys\n"
        "print('argv', sys.argv)\n"
        "open(os.path.join(os.environ['SM_OUTPUT_DIR'], 'failure'), 'w').write('refused token ' + sys.argv[2])\n"
        "sys.exit(3)\n")
    assert main(["run", "src/fail.py", "--channel", "train=data", "--hp", "api_token=s3cr3t-9931",
                 "--job-name", "leaky"]) == 1
    capsys.readouterr()
    saved = open_ledger().get("leaky")
    assert saved.outcome.status == "Failed" and saved.outcome.failure_reason == f"refused token {REDACTED}"
    assert "s3cr3t-9931" not in saved.to_json()
    assert "s3cr3t-9931" not in (ledger_home / "jobs" / "leaky" / "job.log").read_text()


def test_a_failure_reason_is_redacted_before_it_is_stored(db_url):
    book = open_ledger()
    run = book.append(RunRecord(job_name="failing"))
    book.record_outcome(run.run_id, Outcome(status="Failed", failure_reason=f"AlgorithmError: push {GITHUB_TOKEN}"))
    assert GITHUB_TOKEN not in book.get(run.run_id).to_json()
    assert book.get(run.run_id).outcome.failure_reason == f"AlgorithmError: push {REDACTED}"


# --- pure: the rules ------------------------------------------------------------------------------------------


def test_secret_values_are_found_by_detect_secrets_patterns():
    text = (f"k={AWS_KEY_ID} t={GITHUB_TOKEN} s={SLACK_TOKEN} j={JWT} "
            "u=https://bob:pa55@example.com/x -----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----")
    cleaned, found = secrets.redact_text(text)
    assert {name for name, _ in found} >= {"AWSKeyDetector", "GitHubTokenDetector", "SlackDetector",
                                           "JwtTokenDetector", "BasicAuthDetector", "PrivateKeyDetector"}
    for secret in (AWS_KEY_ID, GITHUB_TOKEN, SLACK_TOKEN, JWT.split(".")[2], "pa55", "\nabc\n"):
        assert secret not in cleaned
    assert "https://bob:" in cleaned and "-----END RSA PRIVATE KEY-----" in cleaned
    ordinary = "sha256:" + "ab" * 32 + " s3://bucket/key?versionId=3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY 0.1 arn:aws:iam"
    assert secrets.redact_text(ordinary) == (ordinary, [])


def test_a_salted_digest_checks_the_supplied_secret():
    salt = secrets.new_salt()
    result = secrets.build_request_redaction({"HyperParameters": {"api_key": '"sk-1"'},
                                      "Environment": {"URL": "postgres://u:pw-1@h/db"}}, salt)
    kept = result.record_field(salt)
    assert kept["salt"] == salt and "scrypt" in kept["kdf"] and "sk-1" not in json.dumps(kept)
    assert secrets.check_secret(kept, "HyperParameters.api_key", REDACTED, "sk-1") is True  # as the user knows it
    assert secrets.check_secret(kept, "HyperParameters.api_key", REDACTED, '"sk-1"') is True  # as SDK 2.x sent it
    assert secrets.check_secret(kept, "HyperParameters.api_key", REDACTED, "sk-2") is False
    recorded = result.request["Environment"]["URL"]
    assert secrets.check_secret(kept, "Environment.URL", recorded, "postgres://u:pw-1@h/db") is True
    assert secrets.check_secret(kept, "Environment.URL", recorded, "postgres://u:pw-2@h/db") is False
    assert secrets.check_secret(None, "Environment.URL", recorded, "anything") is None  # a record from before: unchecked


# --- linear time: a size bound here, the time against size in bench/bench_capture_secrets.py ------------------


def test_no_detector_sees_more_than_a_window_and_the_text_is_read_about_once(monkeypatch):
    seen: list[int] = []
    real = secrets._detector_spans
    monkeypatch.setattr(secrets, "_detector_spans", lambda chunk: seen.append(len(chunk)) or real(chunk))
    size = 1 << 20
    for value in ("a" * size, ("word " * (size // 5)).replace("word word", "word\nword"), "a://b:" + "c" * size):
        seen.clear()
        secrets.redact_text(value)
        assert max(seen) <= secrets.SCAN_WINDOW
        assert sum(seen) <= len(value) * secrets.SCAN_WINDOW / (secrets.SCAN_WINDOW - secrets.SCAN_OVERLAP) + secrets.SCAN_WINDOW


def test_capturing_a_long_hyperparameter_is_not_quadratic(ledger_home, tmp_path):
    """The old URL-password regex took 6 s to capture a 40 KB hyperparameter, growing with the square of its size
    (bench/bench_capture_secrets.py has the figures from 1 KB to 1 MB)."""
    from ledger.config import load_settings
    from ledger.run.recorder import capture_request

    value = "a" * 20_000 + "://" + "b" * 20_000
    request = {"TrainingJobName": "long", "AlgorithmSpecification": {"TrainingImage": "local"},
               "HyperParameters": {"blob": value}}
    started = time.perf_counter()
    capture = capture_request(request, settings=load_settings(data_pin="off"), workdir=tmp_path, backend="local")
    assert time.perf_counter() - started < 5
    assert capture.record.request["HyperParameters"]["blob"] == value


def test_a_dirty_tree_with_a_secret_in_its_diff_is_unchanged_to_the_preflight(tmp_path):
    """The record digests the redacted diff; the preflight compares the tree now by the same rule, so an untouched
    work tree whose diff holds a secret is not reported as changed."""
    import subprocess

    from ledger.capture.code import capture_code
    from ledger.run.preflight import _observe_code

    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"],):
        subprocess.run(["git", *args], cwd=repo, check=True)
    (repo / "train.py").write_text("print('train')\n")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first"], cwd=repo,
                   check=True)
    (repo / "train.py").write_text("print('train')\ndb_password = 'correct-horse-battery-staple'\n")
    pin, _, stored = capture_code(repo)
    assert pin.dirty and b"correct-horse-battery-staple" not in stored
    seen = _observe_code(pin)
    assert seen["commit_reachable"] and seen["tree_changed"] is False, seen
    (repo / "train.py").write_text("print('train')\ndb_password = 'another-secret-value-here'\nx = 1\n")
    assert _observe_code(pin)["tree_changed"] is True


def test_a_secret_the_relaunch_cannot_put_back_stops_the_plan_and_one_inside_a_value_is_put_back():
    """A secret redacted in a tag or a container argument has nowhere to come back from: the preflight says so
    (missing: the plan stops unless --allow-drift) instead of relaunching with the placeholder unseen. A secret
    inside a hyperparameter's value (a URL's password) is put back whole from --secret."""
    from ledger.record import REDACTED, RunRecord
    from ledger.run.preflight import plan_reproduction
    from ledger.run.reproduce import build_relaunch

    url = f"postgresql://ana:{REDACTED}@db/features"
    record = RunRecord(job_name="job", backend="local",
                       request={"TrainingJobName": "job", "HyperParameters": {"db_url": url},
                                "Tags": [{"Key": "deploy", "Value": REDACTED}]},
                       redacted_keys=["HyperParameters.db_url"],
                       redactions={"salt": None, "kdf": None, "values": [
                           {"path": "HyperParameters.db_url", "found_by": "url", "digest": None},
                           {"path": "Tags[deploy]", "found_by": "GitHubTokenDetector", "digest": None}]})
    secret_url = "postgresql://ana:s3cr3t-pw@db/features"
    plan = plan_reproduction(record, {}, "local", {"db_url": secret_url})
    rows = {check.pin: check for check in plan.checks if check.pin.startswith("secret ")}
    assert rows["secret HyperParameters.db_url"].status == "ok"
    assert rows["secret Tags[deploy]"].status == "missing" and not plan.ok
    assert "placeholder" in rows["secret Tags[deploy]"].action
    relaunch = build_relaunch(record, "job-r1", {"db_url": secret_url})
    assert relaunch["HyperParameters"]["db_url"] == secret_url
