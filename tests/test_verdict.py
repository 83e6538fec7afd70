"""Issue 12, item 2: a verdict weighs everything that was compared.

IDENTICAL needs equal model contents and equal final metrics; an original without a model artifact to compare is
UNVERIFIABLE; explained_by names only what could explain a difference (uncompensated drift and substitutions), and
compensated drift is listed apart; the contents digest counts file modes and symlink targets.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

from streamlit.testing.v1 import AppTest

from ledger.capture.content_store import pack_tar_gz, sha256_file, tree_sha256
from ledger.cli import main
from ledger.dashboard import APP_PATH
from ledger.record import (
    CodePin,
    DataChannelPin,
    HardwarePin,
    ImagePin,
    ModelArtifact,
    Outcome,
    Pins,
    RunRecord,
    SourceArchive,
)
from ledger.run import reproduce
from ledger.run import verdict as verdicts
from ledger.run.preflight import PinCheck
from ledger.run.verdict import build_verdict
from ledger.store.ledger import open_ledger


def cli(capsys, *args):
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _outcome(tree="t" * 64, status="Completed", uri="file:///model.tar.gz", **metrics):
    artifact = ModelArtifact(uri=uri, tree_sha256=tree) if uri or tree else None
    return Outcome(status=status, metrics=metrics, model_artifact=artifact)


# --- pure: the rule -------------------------------------------------------------------------------------------------


def test_equal_files_with_a_changed_metric_are_not_identical():
    changed = build_verdict(_outcome(**{"validation:rmse": 2.0}), _outcome(**{"validation:rmse": 2.5}), [])
    assert changed.result == "DIVERGED"
    assert [d["what"] for d in changed.differences] == ["metric validation:rmse"]
    close = build_verdict(_outcome(rmse=2.0), _outcome(rmse=2.0 + 1e-9), [])
    assert close.result == "EQUIVALENT" and close.differences[0]["relative_difference"] < 1e-6
    another = build_verdict(_outcome(rmse=2.0), _outcome(rmse=2.0, mae=1.0), [])  # the same names, too
    assert another.result == "DIVERGED" and another.differences == [
        {"what": "metric mae", "original": None, "reproduction": 1.0}]
    assert build_verdict(_outcome(rmse=2.0), _outcome(rmse=2.0), []).result == "IDENTICAL"


def test_an_original_without_a_model_artifact_is_unverifiable():
    never_ran = Outcome(status="Failed", failure_reason="AlgorithmError: exit code 2")
    verdict = build_verdict(never_ran, _outcome(rmse=1.0), [])
    assert verdict.result == "UNVERIFIABLE"
    assert verdict.differences[0]["what"] == "original model artifact"
    assert "ended Failed (AlgorithmError: exit code 2)" in verdict.differences[0]["reason"]

    unreadable = _outcome(tree=None, uri="s3://models/job/output/model.tar.gz", rmse=1.0)
    verdict = build_verdict(unreadable, _outcome(rmse=1.0), [])
    assert verdict.result == "UNVERIFIABLE"
    assert "s3://models/job/output/model.tar.gz could not be read" in verdict.differences[0]["reason"]

    both_failed = build_verdict(never_ran, Outcome(status="Failed"), [])
    assert both_failed.result == "UNVERIFIABLE"


def _record(**pins) -> RunRecord:
    return RunRecord(job_name="job", backend=pins.pop("backend", "local"), pins=Pins(**pins))


def test_explained_by_names_only_uncompensated_drift_and_substitutions():
    original = _record(
        backend="sagemaker",
        image=ImagePin(uri="acct.dkr.ecr.us-east-1.amazonaws.com/xgb:1", digest="sha256:" + "1" * 64, source="ecr"),
        data={"train": DataChannelPin(uri="s3://b/train/", kind="S3Prefix", pinned=True),
              "extra": DataChannelPin(uri="s3://b/extra/", kind="S3Prefix", pinned=False)},
        code=CodePin(source_archive=SourceArchive(uri="s3://b/src.tar.gz", sha256="2" * 64)),
    )
    checks = [PinCheck("image tag", "acct/xgb:1", "sha256:9…", "the tag moved", "drift"),
              PinCheck("data train", "3 object(s)", "1 changed", "read the recorded versions", "drift", channel="train"),
              PinCheck("data extra", "1 object(s)", "unchanged", "read as recorded", "drift", channel="extra"),
              PinCheck("code work tree", "abc", "def", "use the pinned source archive", "drift"),
              PinCheck("data train: k", "recorded version", "deleted", "cannot be restored", "missing",
                       channel="train", key="k"),
              PinCheck("package numpy", "2.0", "2.1", "differs", "drift")]
    left, compensated = verdicts.build_compensation(original, checks)
    assert [c.pin for c in left] == ["data extra", "data train: k", "package numpy"]
    assert [c["pin"] for c in compensated] == ["image tag", "data train", "code work tree"]
    assert all(c["by"] for c in compensated)

    reproduction = _record(image=ImagePin(uri=original.pins.image.uri, digest="f" * 64, source="environment",
                                          ran={"fingerprint": "f" * 64, "how": "the ledger's own Python environment"}))
    substitutions = verdicts.build_substitutions(original, reproduction)
    assert [s["pin"] for s in substitutions] == ["backend", "image"]
    assert substitutions[0] == {"pin": "backend", "recorded": "sagemaker", "now": "local"}
    assert "stood in for acct.dkr.ecr.us-east-1.amazonaws.com/xgb:1" in substitutions[1]["now"]

    verdict = build_verdict(_outcome("a" * 64, rmse=1.0), _outcome("b" * 64, rmse=1.5), left,
                            compensated=compensated, substitutions=substitutions)
    assert verdict.result == "DIVERGED"
    assert [(e["kind"], e["pin"]) for e in verdict.explained_by] == [
        ("drift", "data extra"), ("drift", "data train: k"), ("drift", "package numpy"),
        ("substitution", "backend"), ("substitution", "image")]
    assert [c["pin"] for c in verdict.compensated] == ["image tag", "data train", "code work tree"]
    identical = build_verdict(_outcome(rmse=1.0), _outcome(rmse=1.0), left, compensated=compensated,
                              substitutions=substitutions)
    assert identical.result == "IDENTICAL" and identical.explained_by == [] and len(identical.compensated) == 3


def test_per_object_rows_and_code_the_relaunch_restores_are_compensated():
    """The preflight's rows for one object (added, changed, deleted under a pinned prefix), a source archive whose
    key moved on and SDK 3.x code that can be restored are read as recorded: compensated, not explanations."""
    original = _record(backend="sagemaker",
                       data={"train": DataChannelPin(uri="s3://b/train/", kind="S3Prefix", pinned=True)},
                       code=CodePin(source_archive=SourceArchive(uri="s3://b/src.tar.gz", sha256="2" * 64)))
    checks = [PinCheck("data train: new.csv", "not recorded", "added", "not read", "drift", channel="train",
                       key="new.csv"),
              PinCheck("data train: a.csv", "recorded version", "changed", "the recorded version is read", "drift",
                       channel="train", key="a.csv"),
              PinCheck("source archive", "2" * 12, "the key holds a newer version", "copy the recorded version",
                       "drift"),
              PinCheck("code channel code: train.py", "recorded file", "changed", "the recorded files are read",
                       "drift", channel="code"),
              PinCheck("code channel code", "1 file(s)", "1 changed", "restore the recorded files to a snapshot",
                       "drift", channel="code"),
              PinCheck("code channel sm_drivers: sm_train.sh", "recorded file", "changed",
                       "the recorded files are read", "drift", channel="sm_drivers"),
              PinCheck("code channel sm_drivers", "1 file(s)", "1 changed", "cannot be restored", "missing",
                       channel="sm_drivers")]
    left, compensated = verdicts.build_compensation(original, checks)
    assert [c["pin"] for c in compensated] == ["data train: new.csv", "data train: a.csv", "source archive",
                                               "code channel code: train.py", "code channel code"]
    assert "not read" in compensated[0]["by"]
    assert [c.pin for c in left] == ["code channel sm_drivers: sm_train.sh", "code channel sm_drivers"]


def test_another_machine_is_a_substitution():
    here = {"host": "a", "vcpu": 2, "memory_gib": 8.0, "gpu": None, "gpu_count": 0}
    there = {**here, "host": "b", "vcpu": 16}
    found = verdicts.build_substitutions(_record(hardware=HardwarePin(ran=here)), _record(hardware=HardwarePin(ran=there)))
    assert found == [{"pin": "hardware ran", "recorded": "2 vCPU, 8.0 GiB on a", "now": "16 vCPU, 8.0 GiB on b"}]


# --- the contents digest ------------------------------------------------------------------------------------------


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data, mode, link in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_the_tree_digest_counts_modes_and_symlink_targets(tmp_path):
    plain = _tar(tmp_path / "plain.tar.gz", [("run.sh", b"echo hi\n", 0o644, None)])
    executable = _tar(tmp_path / "exec.tar.gz", [("run.sh", b"echo hi\n", 0o755, None)])
    assert tree_sha256(plain) != tree_sha256(executable)
    to_a = _tar(tmp_path / "a.tar.gz", [("a", b"1", 0o644, None), ("b", b"1", 0o644, None), ("model", b"", 0o777, "a")])
    to_b = _tar(tmp_path / "b.tar.gz", [("a", b"1", 0o644, None), ("b", b"1", 0o644, None), ("model", b"", 0o777, "b")])
    assert tree_sha256(to_a) != tree_sha256(to_b)  # the same bytes behind both links; the targets differ

    src = tmp_path / "model"
    src.mkdir()
    (src / "a").write_bytes(b"1")
    (src / "b").write_bytes(b"1")
    os.symlink("a", src / "model")
    assert tree_sha256(src) == tree_sha256(to_a)  # a directory and an archive of it agree
    os.remove(src / "model")
    os.symlink("nowhere", src / "model")  # a dangling link is still part of the tree
    assert tree_sha256(src) not in (tree_sha256(to_a), tree_sha256(to_b))
    os.remove(src / "model")
    (src / "model").write_bytes(b"1")  # a copy of the target's bytes is not the link
    assert tree_sha256(src) != tree_sha256(to_a)
    os.chmod(src / "a", 0o640)  # group and other bits are not kept by archives, so do not count
    before = tree_sha256(src)
    os.chmod(src / "a", 0o600)
    assert tree_sha256(src) == before
    os.chmod(src / "a", 0o700)
    assert tree_sha256(src) != before


def test_an_original_digested_by_an_older_rule_is_recomputed_from_its_archive(tmp_path):
    src = tmp_path / "model"
    src.mkdir()
    (src / "xgboost-model").write_bytes(b"weights")
    archive = tmp_path / "model.tar.gz"
    pack_tar_gz(src, archive)
    older = ModelArtifact(uri=archive.as_uri(), sha256=sha256_file(archive), tree_sha256="0" * 64)
    now = ModelArtifact(uri=archive.as_uri(), sha256=sha256_file(archive), tree_sha256=tree_sha256(archive))
    original, changed = reproduce._compared_original(Outcome(status="Completed", model_artifact=older),
                                           Outcome(status="Completed", model_artifact=now), None)
    assert original.model_artifact.tree_sha256 == tree_sha256(archive) and changed == []
    moved = older.model_copy(update={"sha256": "9" * 64})  # the archive there is no longer the recorded one
    original, _ = reproduce._compared_original(Outcome(status="Completed", model_artifact=moved),
                                     Outcome(status="Completed", model_artifact=now), None)
    assert original.model_artifact.tree_sha256 == "0" * 64


# --- end to end: ledger run, then ledger reproduce ------------------------------------------------------------------

FIXED_MODEL_RANDOM_METRIC = (
    "import os, random\n"
    "print(f'final loss: {random.random():.6f}', flush=True)\n"
    "path = os.path.join(os.environ['SM_MODEL_DIR'], 'model.bin')\n"
    "open(path, 'wb').write(b'the same weights')\n"
    "if os.environ.get('MODEL_EXECUTABLE'):\n"
    "    os.chmod(path, 0o755)\n"
    "if os.environ.get('FAIL_ONCE'):\n"
    "    raise SystemExit(2)\n"
)


def _script(workspace, name="fixed.py"):
    (workspace / "src" / name).write_text(FIXED_MODEL_RANDOM_METRIC)
    return f"src/{name}"


def test_equal_model_files_with_a_changed_metric_diverge(workspace, db_url, capsys):
    script = _script(workspace)
    assert cli(capsys, "run", script, "--channel", "train=data", "--metric", "loss=final loss: ([0-9.]+)",
               "--job-name", "fixed")[0] == 0
    (workspace / "data" / "rows.csv").write_text("5,6\n")  # drift the relaunch makes up for
    code, out, err = cli(capsys, "reproduce", "fixed", "--json")
    verdict = json.loads(out)["verdict"]
    assert code == 4 and verdict["result"] == "DIVERGED", err
    assert [d["what"] for d in verdict["differences"]] == ["metric loss"]  # the model files are equal
    assert "data train" not in [e["pin"] for e in verdict["explained_by"]]
    assert "data train" in [c["pin"] for c in verdict["compensated"]]
    stored = open_ledger().get("fixed-r1").verdict
    assert stored.result == "DIVERGED" and [c["pin"] for c in stored.compensated] == \
        [c["pin"] for c in verdict["compensated"]]

    at = AppTest.from_file(str(APP_PATH), default_timeout=30)  # the dashboard's Run page lists it apart
    at.run()
    at.query_params = {"run": "fixed-r1"}
    at = at.switch_page("page_run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    compensated = [df.value for df in at.dataframe if "by" in df.value.columns]
    assert compensated and "data train" in compensated[0]["pin"].tolist()


def test_a_file_made_executable_is_a_different_model(workspace, db_url, capsys, monkeypatch):
    script = _script(workspace)
    monkeypatch.setenv("MODEL_EXECUTABLE", "1")
    assert cli(capsys, "run", script, "--job-name", "modes")[0] == 0
    monkeypatch.delenv("MODEL_EXECUTABLE")
    code, out, err = cli(capsys, "reproduce", "modes", "--json")
    verdict = json.loads(out)["verdict"]
    assert verdict["result"] != "IDENTICAL", verdict
    assert verdict["differences"][0]["what"] == "model artifact"
    assert verdict["differences"][0]["files"] == ["model.bin"]


def test_reproducing_a_run_that_never_finished_is_unverifiable(workspace, db_url, capsys, monkeypatch):
    script = _script(workspace)
    monkeypatch.setenv("FAIL_ONCE", "1")
    assert cli(capsys, "run", script, "--metric", "loss=final loss: ([0-9.]+)", "--job-name", "broken")[0] == 1
    monkeypatch.delenv("FAIL_ONCE")
    code, out, err = cli(capsys, "reproduce", "broken", "--json")
    verdict = json.loads(out)["verdict"]
    assert verdict["result"] == "UNVERIFIABLE"
    assert code == 1 and "UNVERIFIABLE" in err and "it ended Failed" in err
    assert verdict["differences"][0]["what"] == "original model artifact"
    book = open_ledger()
    assert book.get("broken-r1").verdict.result == "UNVERIFIABLE"
    assert book.runs(where="verdict = 'UNVERIFIABLE'")["job_name"].tolist() == ["broken-r1"]
    assert book.verify().ok
    code, out, _ = cli(capsys, "show", "broken-r1")
    squashed = "".join(out.split())
    assert code == 0 and "Verdict:UNVERIFIABLE" in squashed and "differsoriginalmodelartifact:" in squashed


# --- where verdicts are shown -------------------------------------------------------------------------------------


def test_the_report_and_the_dashboard_show_unverifiable_and_compensated_drift():
    from ledger import audit
    from ledger.dashboard import views
    from ledger.record import Verdict

    original = RunRecord(job_name="orig", backend="local", outcome=Outcome(status="Failed", failure_reason="boom"))
    verdict = build_verdict(original.outcome, _outcome(rmse=1.0), [], compensated=[
        {"pin": "data train", "recorded": "1 object(s)", "now": "1 changed", "by": "the relaunch restores the files"}])
    repro = RunRecord(job_name="orig-r1", backend="local", reproduction_of=original.run_id, outcome=_outcome(rmse=1.0),
                      verdict=Verdict.model_validate(verdict.model_dump()))
    report = audit.build_report([original, repro], generated_at="2026-12-02T00:00:00Z")
    assert report["summary"]["originals_by_verdict"]["UNVERIFIABLE"] == 1
    page = audit.render_html(report)
    assert '<span class="badge b-warn">UNVERIFIABLE</span>' in page
    assert "the relaunch restores the files" in page and "made up for" in page
    text = audit.render_markdown(report)
    assert "**Verdict**: UNVERIFIABLE against orig: original model artifact" in text
    assert "Compensated drift: data train: 1 object(s) → 1 changed (the relaunch restores the files)" in text
    assert views.verdict_badge("UNVERIFIABLE") == "? UNVERIFIABLE"
    assert views.badge_color(views.verdict_badge("UNVERIFIABLE")) == "orange"
