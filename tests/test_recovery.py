"""Recovery (issue 13, items 1-5): a damaged or planted spool file, a killed launcher, a failed launch, and a sync
that asks each backend where the job really is. Real SQLite and PostgreSQL (db_url), moto's server as AWS, real
processes killed with SIGKILL at the moment a file says they reached.

The machine runs as root, so "another user" is a real other uid: files are chowned to 65534 (nobody).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import boto3
import pytest

import ledger
from ledger.cli import main
from ledger.config import load_settings
from ledger.record import RunRecord, canonical_json
from ledger.run.recorder import Capture, capture_request, save_launch
from ledger.run.sync import sync_runs
from ledger.store.ledger import open_ledger

ENTRY_POINTS = Path(__file__).parent / "entry_points"
UNREACHABLE_DB = "postgresql+psycopg://postgres@127.0.0.1:1/ledger"  # nothing listens on port 1
OTHER_UID = 65534  # nobody
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
MOTO_ACCOUNT = "123456789012"


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """The fallback spool in this test's own temporary directory, never the machine's shared /tmp."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return tmp


def fallback_dir(private_tmp: Path) -> Path:
    return private_tmp / f"ledger-spool-{os.getuid()}"


def spool_record(job_name: str) -> RunRecord:
    """Save a launch while the database cannot be reached: the record goes to the spool."""
    record = RunRecord(job_name=job_name, project="recovery")
    book = open_ledger(settings=load_settings(db_url=UNREACHABLE_DB), check_schema="on use")
    return save_launch(book, Capture(record=record, request={}), announce=False)


def spool_body(job_name: str) -> str:
    """A spool file's text, as any version of the ledger writes it."""
    return canonical_json({"record": RunRecord(job_name=job_name, project="recovery").to_dict(), "blobs": {}})


def sync_json(capsys) -> tuple[int, dict, str]:
    code = main(["sync", "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else {}), captured.err


def job_names(book) -> set[str]:
    frame = book.runs()
    return set(frame["job_name"]) if not frame.empty else set()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped is dead: this container's init may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- 1. a damaged spool file blocks nothing ---------------------------------------------------------------------


def test_a_damaged_spool_file_is_set_aside_and_sync_goes_on(db_url, ledger_home, capsys):
    good = [spool_record(f"spooled-{i}").run_id for i in range(2)]
    spool = ledger_home / "spool"
    empty = spool / "01EMPTY0000000000000000000.json"  # what a full disk or a killed writer left before
    empty.write_bytes(b"")
    truncated = spool / "01TRUNCATED000000000000000.json"
    truncated.write_text(spool_body("truncated")[:200])
    stranger = spool / "01NOTARECORD00000000000000.json"
    stranger.write_text('{"hello": "world"}')
    capsys.readouterr()

    code, report, err = sync_json(capsys)
    assert code == 0, err
    assert sorted(report["imported"]) == sorted(good)
    assert sorted(report["damaged"]) == sorted(str(p) for p in (empty, truncated, stranger))
    for path in (empty, truncated, stranger):
        assert not path.exists() and path.with_name(path.name + ".damaged").is_file()
        line = next(line for line in err.splitlines() if str(path) in line)
        assert "damaged" in line and "set aside" in line
    assert job_names(open_ledger()) == {"spooled-0", "spooled-1"}
    code, report, _ = sync_json(capsys)
    assert code == 0 and report["imported"] == [] and report["damaged"] == []


SPOOL_WRITER = textwrap.dedent('''
    """Spool one record, and stop dead (waiting for a file that never comes) right after the spool file is created,
    before a byte of it is written: where a process killed while spooling stops."""
    import os, sys, time
    ready, go, watched, db_url = sys.argv[1:5]
    state = {}

    def audit(event, args):
        if event != "open" or "hit" in state or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
        if writing and path.startswith(watched) and "spool" in path:
            state["hit"] = path

    def profile(frame, event, arg):
        if event == "c_return" and "hit" in state and "stopped" not in state:  # the open() has returned
            state["stopped"] = True
            with open(ready + ".tmp", "w") as file:
                file.write(state["hit"])
            os.replace(ready + ".tmp", ready)
            while not os.path.exists(go):
                time.sleep(0.05)

    sys.addaudithook(audit)
    from ledger.config import load_settings
    from ledger.record import RunRecord
    from ledger.run.recorder import Capture, save_launch
    from ledger.store.ledger import open_ledger

    capture = Capture(record=RunRecord(job_name="killed-while-spooling"), request={}, blobs={"0" * 64: b"a diff"})
    book = open_ledger(settings=load_settings(db_url=db_url), check_schema="on use")
    sys.setprofile(profile)
    save_launch(book, capture)
''')


def test_a_process_killed_while_spooling_leaves_no_damaged_record(db_url, ledger_home, tmp_path, private_tmp):
    script = tmp_path / "spool_writer.py"
    script.write_text(SPOOL_WRITER)
    ready, go = tmp_path / "ready", tmp_path / "go"
    writer = subprocess.Popen([sys.executable, str(script), str(ready), str(go), str(tmp_path), UNREACHABLE_DB],
                              env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ready.exists() or writer.poll() is not None, 120, "the writer to open its spool file")
        assert ready.exists(), writer.stdout.read().decode()
        writer.kill()  # SIGKILL, with the spool file just created and nothing written
        writer.wait()
    finally:
        go.touch()
    opened = Path(ready.read_text())
    assert opened.parent in (ledger_home / "spool", fallback_dir(private_tmp))
    report = sync_runs(open_ledger())
    assert report.imported == [] and report.damaged == []
    assert list((ledger_home / "spool").glob("*.json")) == []  # only a hidden temporary file was left
    assert spool_record("after-the-kill").run_id in sync_runs(open_ledger()).imported


FULL_DISK = textwrap.dedent('''
    """On a tmpfs that is full: spool one record (it cannot be written), free the space, then sync."""
    import errno, json, os, sys
    full, db_url, unreachable = sys.argv[1:4]
    import tempfile
    os.environ.update(LEDGER_HOME=os.path.join(full, "home"), TMPDIR=os.path.join(full, "tmp"))
    tempfile.tempdir = os.path.join(full, "tmp")  # else gettempdir() skips a full folder for the shared /tmp
    for folder in ("home/spool", f"tmp/ledger-spool-{os.getuid()}"):
        os.makedirs(os.path.join(full, folder), mode=0o700)
    filler = os.open(os.path.join(full, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(filler, b"0" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    os.close(filler)
    from ledger.config import load_settings
    from ledger.record import RunRecord
    from ledger.run.recorder import Capture, save_launch
    from ledger.run.sync import sync_runs
    from ledger.store.ledger import open_ledger
    try:
        save_launch(open_ledger(settings=load_settings(db_url=unreachable), check_schema="on use"),
                    Capture(record=RunRecord(job_name="on-a-full-disk"), request={}))
        spooled = "spooled"
    except OSError as error:
        spooled = f"not spooled: {error}"
    left = sorted(str(p) for p in __import__("pathlib").Path(full).rglob("*.json"))
    os.unlink(os.path.join(full, "filler"))
    try:
        report = sync_runs(open_ledger(db_url))
        synced = {"imported": report.imported, "damaged": report.damaged}
    except Exception as error:
        synced = f"sync failed: {type(error).__name__}: {error}"
    print("RESULT " + json.dumps({"spooled": spooled, "left": left, "synced": synced}))
''')


def test_a_record_spooled_on_a_full_disk_leaves_no_damaged_file(db_url, tmp_path):
    if not shutil.which("unshare"):
        pytest.skip("needs unshare(1) to mount a small tmpfs in a private mount namespace")
    full = tmp_path / "full"
    full.mkdir()
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs -o size=512k tmpfs "$1" || { echo MOUNT-FAILED; exit 0; }; exec "$2" "$3" "$1" "$4" "$5"',
         "sh", str(full), sys.executable, str(script), db_url, UNREACHABLE_DB],
        capture_output=True, text=True, timeout=300)
    if "MOUNT-FAILED" in done.stdout:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert "No space left on device" in result["spooled"], result  # a full disk: no spool folder took it
    assert result["left"] == [], result  # ... and it left no half-written record behind
    assert result["synced"] == {"imported": [], "damaged": []}, result


# --- 2. the fallback spool is private; a planted record is refused ----------------------------------------------


def block_home_spool(ledger_home: Path) -> None:
    """LEDGER_HOME/spool cannot be made (a file is in its place): the record goes to the fallback folder."""
    ledger_home.mkdir(parents=True, exist_ok=True)
    (ledger_home / "spool").write_text("not a folder")


def test_the_fallback_spool_folder_and_its_files_are_private(db_url, ledger_home, private_tmp, capsys):
    block_home_spool(ledger_home)
    record = spool_record("to-the-fallback")
    folder = fallback_dir(private_tmp)
    assert str(folder) in capsys.readouterr().err
    info = folder.lstat()
    assert (info.st_mode & 0o777, info.st_uid) == (0o700, os.getuid())
    spooled = folder / f"{record.run_id}.json"
    assert spooled.stat().st_mode & 0o777 == 0o600
    code, report, err = sync_json(capsys)
    assert code == 0 and report["imported"] == [record.run_id], err


def test_a_fallback_folder_another_user_made_is_neither_written_nor_read(db_url, ledger_home, private_tmp, capsys):
    folder = fallback_dir(private_tmp)  # another local user made it first, open to all, and planted a record
    folder.mkdir()
    os.chown(folder, OTHER_UID, OTHER_UID)
    folder.chmod(0o777)
    planted = folder / "01PLANTED00000000000000000.json"
    planted.write_text(spool_body("planted"))
    os.chown(planted, OTHER_UID, OTHER_UID)
    block_home_spool(ledger_home)

    with pytest.raises(OSError, match="not a private folder: it is owned by uid 65534"):
        spool_record("mine")
    assert sorted(p.name for p in folder.iterdir()) == [planted.name]  # nothing of ours went into it

    (ledger_home / "spool").unlink()
    code, report, err = sync_json(capsys)
    assert code == 0, err
    assert report["imported"] == [] and report["refused"] == [str(folder)]
    assert "planted" not in job_names(open_ledger())
    line = next(line for line in err.splitlines() if str(folder) in line)
    assert "refused" in line and "65534" in line


def test_a_spool_file_that_is_not_this_users_is_refused(db_url, ledger_home, tmp_path, capsys):
    mine = spool_record("mine").run_id
    spool = ledger_home / "spool"
    planted = spool / "01PLANTED00000000000000000.json"  # another user's file (root could put it there)
    planted.write_text(spool_body("planted"))
    os.chown(planted, OTHER_UID, OTHER_UID)
    outside = tmp_path / "elsewhere.json"
    outside.write_text(spool_body("linked"))
    linked = spool / "01LINKED000000000000000000.json"
    linked.symlink_to(outside)
    writable = spool / "01WRITABLE0000000000000000.json"  # ours, but anyone could have rewritten it
    writable.write_text(spool_body("writable"))
    writable.chmod(0o666)
    capsys.readouterr()

    code, report, err = sync_json(capsys)
    assert code == 0, err
    assert report["imported"] == [mine]
    assert sorted(report["refused"]) == sorted(str(p) for p in (planted, linked, writable))
    assert job_names(open_ledger()) == {"mine"}
    for path, why in ((planted, "uid 65534"), (linked, "symbolic link"), (writable, "other users may write")):
        assert not os.path.lexists(path) and os.path.lexists(path.with_name(path.name + ".refused"))
        assert why in next(line for line in err.splitlines() if str(path) in line)


# --- 3. a killed `ledger run` takes its job with it, and sync settles the run ---------------------------------------


def start_ledger_run(workspace: Path, tmp_path: Path, job_name: str, *extra: str):
    """`ledger run` of wait_for_file.py as a real process; returns it once the job runs, with the job's pids."""
    shutil.copy(ENTRY_POINTS / "wait_for_file.py", workspace / "src" / "wait_for_file.py")
    ready, go = tmp_path / f"{job_name}.ready", tmp_path / f"{job_name}.go"
    launcher = subprocess.Popen(
        [str(Path(sys.executable).with_name("ledger")), "run", "src/wait_for_file.py", "--hp", f"ready={ready}",
         "--hp", f"go={go}", "--job-name", job_name, *extra],
        cwd=workspace, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_for(lambda: ready.exists() or launcher.poll() is not None, 180, f"{job_name} to start its job")
    assert ready.exists(), launcher.stdout.read().decode()
    return launcher, json.loads(ready.read_text()), go


def test_a_killed_launcher_takes_its_job_with_it_and_sync_settles_the_run(db_url, workspace, tmp_path, capsys):
    launcher, job, go = start_ledger_run(workspace, tmp_path, "killed-launcher")
    try:
        launcher.kill()  # kill -9 `ledger run` while its job runs
        launcher.wait()
        wait_for(lambda: not alive(job["pid"]) and not alive(job["child"]), 30,
                 "the job and its child to die with their launcher")
    finally:
        go.touch()  # whatever outlived the launcher ends now
    run_id = open_ledger().get("killed-launcher").run_id
    code, report, err = sync_json(capsys)
    assert code == 0, err
    assert report["settled"] == [run_id] and report["reasons"][run_id].startswith("LauncherGone")
    outcome = open_ledger().get(run_id).outcome
    assert outcome.status == "Failed" and f"pid {launcher.pid}" in outcome.failure_reason
    assert "job.log" in outcome.failure_reason
    code, report, _ = sync_json(capsys)
    assert report["settled"] == []  # settled once


def test_sync_leaves_a_running_local_job_in_flight(db_url, workspace, tmp_path, capsys):
    launcher, job, go = start_ledger_run(workspace, tmp_path, "still-running")
    try:
        run_id = open_ledger().get("still-running").run_id
        code, report, err = sync_json(capsys)
        assert code == 0, err
        assert report["in_flight"] == [run_id] and report["settled"] == []
        assert open_ledger().get(run_id).outcome.status is None
    finally:
        go.touch()
    assert launcher.wait(timeout=120) == 0, launcher.stdout.read().decode()
    assert open_ledger().get(run_id).outcome.status == "Completed"  # the watchdog let a finished job be
    assert not (workspace.parent / "ledger-home" / "launchers" / f"{run_id}.lock").exists()


def test_max_runtime_still_stops_a_job_and_its_children(db_url, workspace, tmp_path, capsys):
    """A guard, not a new behaviour: it passes on the code before this change too."""
    launcher, job, go = start_ledger_run(workspace, tmp_path, "too-long", "--max-runtime", "3")
    try:
        assert launcher.wait(timeout=120) == 1
        assert not alive(job["pid"]) and not alive(job["child"])
    finally:
        go.touch()
    outcome = open_ledger().get("too-long").outcome
    assert outcome.status == "Stopped" and outcome.failure_reason.startswith("MaxRuntimeExceeded")


def test_a_local_run_without_a_launcher_lock_is_not_invented_failed(db_url, ledger_home, capsys):
    """Launched elsewhere, or by an older ledger: sync cannot tell, and says so."""
    record = save_launch(open_ledger(), Capture(record=RunRecord(job_name="from-elsewhere", backend="local"),
                                                request={}), announce=False)
    code, report, err = sync_json(capsys)
    assert code == 0, err
    assert report["unreachable"] == [record.run_id] and "no launcher lock" in report["reasons"][record.run_id]
    assert open_ledger().get(record.run_id).outcome.status is None


# --- 4. any failure of a launch gives the run a final status ------------------------------------------------------


def test_a_launch_that_fails_with_an_os_error_is_recorded_failed(db_url, workspace, capsys):
    # Over Linux's 128 KiB for one argument: exec fails with E2BIG. (Slashes: a 200 KB run of letters alone takes
    # minutes in secrets.redact_url_password's pattern, another issue.)
    huge = "x/" * 100_000
    code = main(["run", "src/train.py", "--channel", "train=data", "--hp", f"notes={huge}", "--job-name", "too-big"])
    err = capsys.readouterr().err
    assert code == 1 and "Argument list too long" in err.splitlines()[-1]
    outcome = open_ledger().get("too-big").outcome
    assert outcome.status == "Failed" and outcome.failure_reason.startswith("OSError: [Errno 7] Argument list too long")


def test_the_outcome_of_a_spooled_launch_is_kept_and_synced(db_url, workspace, monkeypatch, capsys):
    monkeypatch.setenv("LEDGER_DB_URL", UNREACHABLE_DB)
    code = main(["run", "src/train.py", "--channel", "train=data", "--metric", "loss=loss: ([0-9.]+)",
                 "--job-name", "spooled-run"])
    assert code == 0 and "spooled" in capsys.readouterr().err
    monkeypatch.setenv("LEDGER_DB_URL", db_url)
    code, report, err = sync_json(capsys)
    assert code == 0 and len(report["imported"]) == 1, err
    record = open_ledger().get("spooled-run")
    assert record.outcome.status == "Completed" and record.outcome.metrics


def take_the_database_away(db_url: str, ledger_home: Path):
    """Make the database unreachable for new connections; returns how to bring it back."""
    if db_url.startswith("sqlite"):
        files = sorted(ledger_home.glob("ledger.db*"))
        for path in files:
            path.rename(path.with_name(path.name + ".away"))
        (ledger_home / "ledger.db").mkdir()  # SQLite cannot open a folder

        def bring_back():
            (ledger_home / "ledger.db").rmdir()
            for path in files:
                path.with_name(path.name + ".away").rename(path)
        return bring_back
    import psycopg

    from tests.conftest import PG_ADMIN_URL

    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    def bring_back():
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    return bring_back


def test_an_outcome_the_database_cannot_take_waits_in_the_spool(db_url, workspace, tmp_path, capsys):
    launcher, job, go = start_ledger_run(workspace, tmp_path, "db-goes-away")
    run_id = open_ledger().get("db-goes-away").run_id
    bring_back = take_the_database_away(db_url, workspace.parent / "ledger-home")
    try:
        go.touch()  # the job ends while the database is away
        output = launcher.communicate(timeout=120)[0].decode()
    finally:
        bring_back()
    assert launcher.returncode == 0 and "could not record the outcome" in output, output
    code, report, err = sync_json(capsys)
    assert code == 0 and report["imported"] == [], err
    assert open_ledger().get(run_id).outcome.status == "Completed"


# --- 5. sync asks where the job is, and never invents an outcome ---------------------------------------------------


def training_request(name: str) -> dict:
    return {"TrainingJobName": name, "RoleArn": ROLE,
            "AlgorithmSpecification": {"TrainingImage": "123456789012.dkr.ecr.us-west-2.amazonaws.com/xgb:1",
                                       "TrainingInputMode": "File"},
            "OutputDataConfig": {"S3OutputPath": "s3://out/models"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60}}


@pytest.fixture
def autologged(aws, db_url, notebook_dir, monkeypatch):
    # A fresh default session: one made while an earlier test's autolog() was on holds its handlers already, and
    # autolog() registers them once more on it (each job recorded twice; a hooks bug outside these items).
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    ledger.autolog()
    yield
    ledger.autolog(disable=True)


def as_account(account: str):
    def add_header(request, **_):
        request.headers["x-moto-account-id"] = account
    return add_header


def test_sync_asks_the_region_of_the_recorded_arn(autologged):
    boto3.client("sagemaker", region_name="us-west-2").create_training_job(**training_request("in-oregon"))
    record = open_ledger().get("in-oregon")
    assert record.outcome.status == "InProgress" and ":us-west-2:" in record.outcome.arn
    report = sync_runs(open_ledger())
    assert report.settled == [record.run_id]
    assert open_ledger().get(record.run_id).outcome.status == "Completed"  # moto: Completed at once, in us-west-2


def test_sync_asks_the_region_recorded_at_capture_when_no_arn_was(aws, db_url, notebook_dir):
    sent = save_launch(open_ledger(), capture_request(training_request("sent-no-arn"), region="us-west-2"))
    # ... the request reached SageMaker, and the process died before it heard the ARN
    boto3.client("sagemaker", region_name="us-west-2").create_training_job(**training_request("sent-no-arn"))
    never = save_launch(open_ledger(), capture_request(training_request("never-sent"), region="us-west-2"))
    assert sent.model_extra["region"] == "us-west-2"
    report = sync_runs(open_ledger())
    assert sorted(report.settled) == sorted([sent.run_id, never.run_id])
    assert open_ledger().get(sent.run_id).outcome.status == "Completed"
    outcome = open_ledger().get(never.run_id).outcome
    assert outcome.status == "Failed"
    assert f"exists in us-west-2 (account {MOTO_ACCOUNT}), where it was sent" in outcome.failure_reason


def test_sync_does_not_fail_a_job_it_cannot_see_from_this_account(autologged):
    client = boto3.client("sagemaker")
    client.meta.events.register("before-send.sagemaker.*", as_account("111111111111"))
    client.create_training_job(**training_request("other-account"))
    record = open_ledger().get("other-account")
    assert ":111111111111:" in record.outcome.arn
    report = sync_runs(open_ledger())
    assert report.unreachable == [record.run_id] and report.settled == []
    assert "account 111111111111" in report.reasons[record.run_id]
    assert f"account {MOTO_ACCOUNT}" in report.reasons[record.run_id]
    assert open_ledger().get(record.run_id).outcome.status == "InProgress"


def test_sync_does_not_fail_a_job_when_the_record_does_not_say_where_it_went(aws, db_url):
    """A record of a ledger that did not note the region, and no ARN: "not found" in the default region proves
    nothing."""
    record = save_launch(open_ledger(), Capture(record=RunRecord(
        job_name="nowhere-known", created_by=f"arn:aws:sts::{MOTO_ACCOUNT}:assumed-role/r/s"), request={}), announce=False)
    report = sync_runs(open_ledger())
    assert report.unreachable == [record.run_id] and report.settled == []
    assert "does not say which region" in report.reasons[record.run_id]
    assert open_ledger().get(record.run_id).outcome.status is None


def test_each_run_is_settled_on_its_own(autologged):
    from moto.sagemaker.models import sagemaker_backends

    client = boto3.client("sagemaker")
    client.create_training_job(**training_request("settles-fine"))
    client.create_training_job(**training_request("reports-nan"))  # newer: sync reaches it first
    job = sagemaker_backends[MOTO_ACCOUNT]["us-east-1"].training_jobs["reports-nan"]
    job.final_metric_data_list = [{"MetricName": "loss", "Value": float("nan"), "Timestamp": job.creation_time}]
    fine, nan = open_ledger().get("settles-fine"), open_ledger().get("reports-nan")
    report = sync_runs(open_ledger())
    assert report.settled == [fine.run_id]
    assert report.unreachable == [nan.run_id] and "could not be settled: ValueError" in report.reasons[nan.run_id]
    assert open_ledger().get(fine.run_id).outcome.status == "Completed"


# --- pure decisions ------------------------------------------------------------------------------------------------


def test_the_location_of_a_job_comes_from_its_arn_else_from_its_capture():
    from ledger.record import Outcome
    from ledger.run.sync import plan_job_location

    arn = "arn:aws:sagemaker:eu-west-1:222222222222:training-job/x"
    with_arn = RunRecord(job_name="x", outcome=Outcome(arn=arn), region="us-east-1")
    assert plan_job_location(with_arn) == ("eu-west-1", "222222222222")
    captured = RunRecord(job_name="x", region="ap-south-1", created_by="arn:aws:sts::333333333333:assumed-role/r/s")
    assert plan_job_location(captured) == ("ap-south-1", "333333333333")
    assert plan_job_location(RunRecord(job_name="x", created_by="me@host")) == (None, None)


def test_a_spool_file_is_parsed_whole_or_called_damaged():
    from ledger.run.spool import SpoolDamaged, build_spool_body, parse_spool_file

    record = RunRecord(job_name="x")
    parsed, blobs, outcome = parse_spool_file(json.loads(build_spool_body(record, {"d": b"diff"})))
    assert parsed.run_id == record.run_id and blobs == [b"diff"] and outcome is None
    for bad in ([], {"record": "x"}, {"record": {"run_id": "x"}}, {"record": record.to_dict(), "blobs": {"d": "!"}}):
        with pytest.raises(SpoolDamaged):
            parse_spool_file(bad)


def test_autolog_releases_its_connections_even_when_the_outcome_cannot_be_written(db_url, monkeypatch, capsys):
    """While the user's job runs, no connection is held: also after a write of its progress failed."""
    from ledger.run import hooks

    book = open_ledger(db_url)
    released = []
    monkeypatch.setattr(book, "release_connections", lambda: released.append(True))
    monkeypatch.setattr(hooks, "_book", lambda: book)

    def fails(_book):
        raise RuntimeError("the database refused the write")

    hooks._after_launch(fails)
    assert released == [True]
    assert "could not record the job's progress (the database refused the write)" in capsys.readouterr().err
