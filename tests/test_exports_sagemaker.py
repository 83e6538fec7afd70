"""Exports of SageMaker runs (issue 17): recorded by autolog() around the SageMaker SDK 2.x against moto's server,
their model archives in (moto's) S3, and `ledger.autolog(export=...)` writing each run's exports as it ends.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import boto3
import pytest
from packageurl import PackageURL

import ledger
from ledger.store.ledger import open_ledger
from tests.test_autolog import (
    DIGEST,
    aws_session_that_reads_aws_images,
    make_data_bucket,
    only_record,
    publish_builtin_image,
    tutorial_estimator,
    tutorial_inputs,
    versions_of,
)
from tests.test_exports import cli, parse_statement, spec_verify, validate_cyclonedx
from tests.test_relaunch_pinned import tarball

MODEL_FILES = {"xgboost-model": b"booster" * 100, "metadata/params.json": b'{"max_depth": 5}'}


def upload_model(bucket: str, job_name: str) -> str:
    """The archive a training job writes, put where SageMaker puts it: OUTPUT/<job>/output/model.tar.gz."""
    key = f"output/{job_name}/output/model.tar.gz"
    boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=tarball(MODEL_FILES))
    return f"s3://{bucket}/{key}"


def envelope_statements(path: Path, public_key_path: Path) -> list[dict]:
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_pem_public_key(Path(f"{public_key_path}.pub").read_bytes())
    return [spec_verify(json.loads(line), public) for line in path.read_text().splitlines()]


@pytest.fixture
def signing_key(tmp_path):
    from ledger.audit.signing import generate_keypair

    private, _ = generate_keypair(tmp_path / "keys" / "ed.pem")
    return private


def test_autolog_writes_each_runs_exports_as_it_finishes(sdk2, tmp_path, signing_key, capsys):
    publish_builtin_image()
    make_data_bucket()
    upload_model("abalone-data", "abalone-exported")
    folder = tmp_path / "evidence"
    ledger.autolog(project="abalone", boto_session=aws_session_that_reads_aws_images(),
                   export={"formats": ["slsa", "openlineage", "cyclonedx", "model-card"], "dir": str(folder),
                           "sign": str(signing_key)})

    tutorial_estimator(sdk2).fit(tutorial_inputs(sdk2), job_name="abalone-exported", wait=True, logs=False)

    record = only_record()
    assert record.outcome.status == "Completed" and record.pins.gaps == []
    written = sorted(p.name for p in folder.iterdir())
    assert written == ["abalone-exported.cdx.json", "abalone-exported.cdx.json.sig", "abalone-exported.intoto.jsonl",
                       "abalone-exported.model-card.json", "abalone-exported.model-card.json.sig",
                       "abalone-exported.openlineage.jsonl", "abalone-exported.openlineage.jsonl.sig"]
    assert capsys.readouterr().err.count("ledger: exported") == 4
    exports = record.model_extra["annotations"]["exports"].values()
    assert sorted(e["format"] for e in exports) == ["cyclonedx", "model-card", "openlineage", "slsa"]

    [statement] = envelope_statements(folder / "abalone-exported.intoto.jsonl", signing_key)
    parse_statement(statement)
    archive, *files = statement["subject"]
    assert archive["uri"] == record.outcome.model_artifact.uri
    assert archive["annotations"]["versionId"] == record.outcome.model_artifact.version_id
    assert {f["name"] for f in files} == set(MODEL_FILES)
    details = statement["predicate"]["runDetails"]
    assert details["metadata"]["invocationId"] == record.outcome.arn
    assert details["builder"]["id"] == "https://sagemaker-ledger.dev/builders/sagemaker/v1"
    dependencies = {d["name"]: d for d in statement["predicate"]["buildDefinition"]["resolvedDependencies"]}
    assert dependencies["image"]["digest"] == {"sha256": DIGEST.removeprefix("sha256:")}
    image = PackageURL.from_string(dependencies["image"]["uri"])  # purl-spec's OCI type: by digest, where from
    assert (image.type, image.name, image.version) == ("oci", "sagemaker-xgboost", DIGEST)
    assert image.qualifiers["repository_url"] == record.original_request["AlgorithmSpecification"][
        "TrainingImage"].rsplit(":", 1)[0]
    versions = versions_of("abalone-data")
    objects = {d["uri"] for name, d in dependencies.items() if name.startswith("channel:train/")}
    assert objects == {f"s3://abalone-data/{key}?versionId={version}" for key, version in versions.items()
                       if key.startswith("abalone/train/")}
    assert dependencies["source"]["digest"] == {"gitCommit": record.pins.code.commit}

    bom = (folder / "abalone-exported.cdx.json").read_text()
    assert validate_cyclonedx(bom) is None
    [attestation] = [r for r in json.loads(bom)["metadata"]["component"]["externalReferences"]
                     if r["type"] == "attestation"]
    assert attestation["url"] == "abalone-exported.intoto.jsonl"
    events = [json.loads(line) for line in (folder / "abalone-exported.openlineage.jsonl").read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    train = next(d for d in events[1]["inputs"] if d["name"] == "abalone/train/")
    assert train["namespace"] == "s3://abalone-data"
    card = json.loads((folder / "abalone-exported.model-card.json").read_text())
    assert card["training_details"]["training_job_details"]["training_arn"] == record.outcome.arn
    assert card["training_details"]["training_job_details"]["training_environment"]["container_image"] == [
        record.request["AlgorithmSpecification"]["TrainingImage"]]


def test_an_export_of_a_run_with_gaps_names_every_unpinned_dependency(sdk2, tmp_path, capsys, monkeypatch):
    from sagemaker.inputs import TrainingInput

    make_data_bucket(bucket="abalone-data", versioned=False)
    upload_model("abalone-data", "abalone-gaps")
    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ledger.autolog()  # no session that may read the AWS image account: the image's digest is a gap
    tutorial_estimator(sdk2).fit({"train": TrainingInput("s3://abalone-data/abalone/train/", content_type="csv")},
                                 job_name="abalone-gaps", wait=True, logs=False)
    record = only_record()
    whats = [g.what for g in record.pins.gaps]
    for what in ("image", "data channel train", "code in"):
        assert any(w.startswith(what) for w in whats), whats

    assert cli(capsys, "export", record.run_id, "--format", "slsa", "-o", "p.jsonl")[0] == 0
    statement = json.loads(base64.b64decode(json.loads(Path("p.jsonl").read_text())["payload"]))
    parse_statement(statement)
    build = statement["predicate"]["buildDefinition"]
    named = [item["what"] for item in build["internalParameters"]["unpinned"]]
    assert named == [g.what for g in record.pins.gaps]  # every gap, in the record's words, none left out
    dependencies = {d["name"]: d for d in build["resolvedDependencies"]}
    assert dependencies["image"]["annotations"]["pinned"] is False and "digest" not in dependencies["image"]
    assert "RepositoryNotFound" in dependencies["image"]["annotations"]["unpinnedWhy"]
    assert dependencies["channel:train"]["annotations"]["pinned"] is False
    unversioned = [d for name, d in dependencies.items() if name.startswith("channel:train/")]
    assert len(unversioned) == 3
    assert all("?versionId=" not in d["uri"] and d["annotations"]["pinned"] is False for d in unversioned)
    assert all("versioning" in d["annotations"]["unpinnedWhy"] for d in unversioned)

    assert cli(capsys, "export", record.run_id, "--format", "openlineage", "-o", "events.jsonl")[0] == 0
    complete = json.loads(Path("events.jsonl").read_text().splitlines()[-1])
    assert [u["what"] for u in complete["run"]["facets"]["sagemakerLedger_run"]["unpinned"]] == named
    objects = complete["inputs"][0]["facets"]["sagemakerLedger_objects"]
    assert objects["pinned"] is False and "versioning" in objects["unpinnedWhy"]

    assert cli(capsys, "export", record.run_id, "--format", "cyclonedx", "-o", "bom.json")[0] == 0
    bom = json.loads(Path("bom.json").read_text())
    assert validate_cyclonedx(json.dumps(bom)) is None
    unpinned = [p["value"] for p in bom["metadata"]["properties"] if p["name"] == "sagemaker-ledger:unpinned"]
    assert len(unpinned) == len(named) and all(any(w in u for u in unpinned) for w in named)

    code, out, _ = cli(capsys, "export", record.run_id, "--format", "model-card")
    caveats = json.loads(out)["additional_information"]["caveats_and_recommendations"]
    assert code == 0 and caveats.startswith("Not pinned:") and "data channel train" in caveats


def test_an_export_that_fails_after_a_run_only_warns(workspace, ledger_home, capsys):
    from ledger.cli import main
    from ledger.errors import UsageError
    from ledger.run.hooks import is_enabled

    with pytest.raises(UsageError, match="unknown export format 'spdx'"):
        ledger.autolog(export="spdx")  # bad options fail when autolog() is called, before anything is installed
    assert not is_enabled()
    ledger.autolog(export={"formats": ["openlineage", "model-card"], "to": "http://127.0.0.1:9"})
    try:
        assert main(["run", "src/train.py", "--channel", "train=data", "--job-name", "observed"]) == 0
    finally:
        ledger.autolog(disable=True)
    err = capsys.readouterr().err
    assert "ledger: export openlineage failed for run" in err and "could not send OpenLineage events" in err
    record = open_ledger().get("observed")
    assert record.outcome.status == "Completed"  # the run is recorded all the same
    [written] = record.model_extra["annotations"]["exports"].values()  # the other export was written
    assert written["format"] == "model-card"
    assert Path(written["destination"]) == ledger_home / "exports" / "observed.model-card.json"
    assert json.loads(Path(written["destination"]).read_text())["additional_information"]["custom_details"][
        "ledger_run_id"] == record.run_id
