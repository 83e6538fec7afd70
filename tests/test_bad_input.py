"""Bad input (issue 13, items 7-11): empty channels, `--where` edge cases, symlinks in a file channel, a damaged
database or anchor, a full disk. Each gets a one-line error or a named gap, on SQLite and PostgreSQL where the
store is involved, and nothing is lost or planted.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ledger.capture.content_store import ContentStore, sha256_file
from ledger.cli import main
from ledger.errors import StoreError, UsageError
from ledger.record import Gap, Pins, RunRecord
from ledger.store import query
from ledger.store.ledger import open_ledger


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def make_run(i: int, **hyperparameters: str) -> RunRecord:
    return RunRecord(project="bad-input", job_name=f"job-{i}", backend="local",
                     request={"TrainingJobName": f"job-{i}", "HyperParameters": dict(hyperparameters)},
                     pins=Pins(hyperparameters=dict(hyperparameters)))


def stored_digests(home: Path) -> set[str]:
    root = home / "objects" / "sha256"
    return {p.parent.name + p.name for p in root.glob("*/*")} if root.is_dir() else set()


# --- 7. an empty or missing local channel ----------------------------------------------------------------------


@pytest.mark.parametrize("channel, message", [
    ("train=", "channel train names no path"),
    ("train=empty", "holds no files"),
    ("train=file:///no/such/channel", "does not exist"),
])
def test_an_empty_or_missing_channel_is_refused_before_anything_is_recorded(workspace, db_url, ledger_home, capsys,
                                                                            channel, message):
    (workspace / ".env").write_text("AWS_SECRET_ACCESS_KEY=do-not-store-me\n")
    (workspace / "empty" / "sub").mkdir(parents=True)  # directories, but no file: no data
    code, out, err = cli(capsys, "run", "src/train.py", "--channel", channel)
    assert code in (1, 2) and message in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert open_ledger().runs().empty  # nothing recorded
    env_digest = hashlib.sha256((workspace / ".env").read_bytes()).hexdigest()
    assert env_digest not in stored_digests(ledger_home)  # the working directory was not copied
    assert not (ledger_home / "jobs").exists() or not any((ledger_home / "jobs").iterdir())


# --- 8. --where: the same answer on both stores -----------------------------------------------------------------


def test_where_edge_cases_give_the_same_answer_on_both_stores(db_url):
    book = open_ledger()
    huge, tiny, plain, word = book.append_many([
        make_run(1, big="1e999", name="salt and pepper"),
        make_run(2, big="1e-999", name="salt"),
        make_run(3, big="5", name="pepper and salt and"),
        make_run(4, big="1-2", name="it's"),
    ])

    def jobs(where: str) -> list[str]:
        return sorted(book.runs(where=where)["job_name"])

    assert jobs("params.big > 1") == ["job-1", "job-3"]  # 1e999 is beyond a double: infinity, as SQLite reads it
    assert jobs("params.big < 1") == ["job-2"]  # 1e-999 is 0; "1-2" is no number
    assert jobs("params.big = 0") == ["job-2"]
    assert jobs("params.big >= 1e999") == ["job-1"]
    assert jobs("params.name = 'salt and pepper'") == ["job-1"]  # `and` inside quotes is part of the value
    assert jobs("params.name = 'pepper and salt and' and params.big > 1") == ["job-3"]
    assert jobs("params.name = \"it's\" AND params.big = '1-2'") == ["job-4"]
    assert jobs("gap_count = '0'") == ["job-1", "job-2", "job-3", "job-4"]
    with pytest.raises(UsageError, match="gap_count is a count"):
        book.runs(where="gap_count = 'abc'")
    with pytest.raises(UsageError, match="cannot read the condition"):
        book.runs(where="params.name = 'unterminated and params.big > 1")


def test_split_conditions_cuts_only_outside_quotes():
    assert query.split_conditions("a = 'x and y' and b = 2") == ["a = 'x and y'", "b = 2"]
    assert query.split_conditions("a = 'it''s and' AND b = \"q and r\"") == ["a = 'it''s and'", "b = \"q and r\""]
    assert query.split_conditions("brand = 'sand'") == ["brand = 'sand'"]


def _random_number_texts(count: int, seed: int = 13) -> list[str]:
    """Texts near numbers: digits, points, signs, exponents, spaces, a letter; and some out of a double's range."""
    rng = random.Random(seed)
    texts = [f"{rng.choice('-+')}{rng.randint(1, 9)}e{rng.choice('-+')}{rng.randint(300, 99999)}" for _ in range(200)]
    texts += ["1e999", "-1e999", "1e-999", "0e99999", "9" * 400, "1" * 401, "1.7976931348623159e308", "2e-324"]
    alphabet = "0123456789" * 3 + ".eE+- x"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10))) for _ in range(count)]
    return texts


def _as_number_on(url: str, texts: list[str]) -> list[float | None]:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE p (i INTEGER, value TEXT)"))
        conn.execute(text("INSERT INTO p (i, value) VALUES (:i, :v)"), [{"i": i, "v": t} for i, t in enumerate(texts)])
        expression = query._param_as_number(engine.dialect.name)
        rows = conn.execute(text(f"SELECT {expression} FROM p ORDER BY i")).all()
    engine.dispose()
    return [row[0] for row in rows]


def test_a_param_is_the_same_number_on_sqlite_and_postgresql(pg_url, tmp_path):
    texts = _random_number_texts(3000)
    on_sqlite = _as_number_on(f"sqlite:///{tmp_path / 'numbers.db'}", texts)
    on_postgres = _as_number_on(pg_url, texts)
    differ = [(t, a, b) for t, a, b in zip(texts, on_sqlite, on_postgres, strict=True) if a != b]
    assert not differ, differ[:5]
    for value, number in zip(texts, on_sqlite, strict=True):  # and both read exactly the texts Python calls numbers
        is_number = len(value) <= query.NUMBER_TEXT_LIMIT and re.fullmatch(query.NUMBER_PATTERN, value)
        assert (number is not None) == bool(is_number), value
        if is_number:
            assert number == float(value), value


def test_a_1mb_hyperparameter_is_stored_and_queryable(db_url, capsys):
    value = json.dumps({"layers": ["x" * 1000] * 1000})  # about 1 MB, as a JSON config passed as one hyperparameter
    book = open_ledger()
    saved = book.append(make_run(1, config=value, depth="3"))
    assert book.get(saved.run_id).pins.hyperparameters["config"] == value
    assert book.runs(where=f"params.config = '{value}'")["job_name"].tolist() == ["job-1"]
    assert book.runs(where=f"params.config = '{value[:-1]}' and params.depth = '3'").empty  # the whole value counts
    assert book.verify().ok
    code, out, _ = cli(capsys, "runs", "--json", "--where", "params.depth = 3")
    assert code == 0 and [r["job_name"] for r in json.loads(out)] == ["job-1"]


def test_a_failed_append_says_what_failed(db_url):
    book = open_ledger()
    book.append(make_run(1, depth="3"))
    engine = create_engine(db_url)  # a database that refuses a write: a trigger, standing in for a quota or a rule
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("CREATE FUNCTION refuse_params() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'params are refused here'; END $$"))
            conn.execute(text("CREATE TRIGGER refuse_params BEFORE INSERT ON params FOR EACH ROW "
                              "EXECUTE FUNCTION refuse_params()"))
        else:
            conn.execute(text("CREATE TRIGGER refuse_params BEFORE INSERT ON params "
                              "BEGIN SELECT RAISE(ABORT, 'params are refused here'); END"))
    engine.dispose()
    with pytest.raises(StoreError) as caught:
        book.append(make_run(2, depth="4"))
    message = str(caught.value)
    assert "\n" not in message and "cannot open" not in message
    assert message.startswith("could not write to the database") and "params are refused here" in message
    assert len(book.entries()) == 1  # the refused write left nothing half-made: the entry rolled back too


# --- 9. symbolic links in a file channel ------------------------------------------------------------------------


def _channel_with_links(root: Path) -> Path:
    data = root / "data"
    (data / "sub").mkdir(parents=True, exist_ok=True)
    (data / "rows.csv").write_text("1,2\n3,4\n")
    (data / "sub" / "more.csv").write_text("5,6\n")
    (data / "passwd").symlink_to("/etc/passwd")  # out of the channel
    (data / "etc").symlink_to("/etc", target_is_directory=True)  # a directory out of the channel
    (data / "alias").symlink_to("sub", target_is_directory=True)  # a directory inside it: followed
    (data / "same.csv").symlink_to("rows.csv")  # a file inside it: followed
    (data / "loop").symlink_to(".", target_is_directory=True)  # a loop
    (data / "gone").symlink_to("nowhere")  # a link to nothing
    return data


def test_links_out_of_a_file_channel_are_refused_with_a_gap(workspace, db_url, ledger_home, capsys):
    data = _channel_with_links(workspace)
    code, out, err = cli(capsys, "run", "src/train.py", "--channel", f"train={data}", "--json")
    assert code == 0, err
    record = json.loads(out)
    keys = [o["key"] for o in record["pins"]["data"]["train"]["objects"]]
    assert keys == ["alias/more.csv", "rows.csv", "same.csv", "sub/more.csv"]
    assert sha256_file("/etc/passwd") not in stored_digests(ledger_home)
    gaps = [g for g in record["pins"]["gaps"] if "symbolic link" in g["why"]]
    assert len(gaps) == 1 and gaps[0]["what"] == "data channel train"
    assert "4 symbolic link(s) were not stored" in gaps[0]["why"] and "points outside the channel" in gaps[0]["why"]
    staged = ledger_home / "jobs" / record["job_name"] / "input" / "data" / "train"
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == keys
    assert open_ledger().get(record["run_id"]).pins.gaps == [Gap.model_validate(g) for g in record["pins"]["gaps"]]


def test_every_refused_link_is_named(tmp_path):
    from ledger.capture.content_store import pin_file_channel_and_refusals

    data = _channel_with_links(tmp_path)
    pin, refused = pin_file_channel_and_refusals(data.as_uri(), ContentStore(tmp_path / "home"))
    assert sorted(refused) == ["etc -> /etc: points outside the channel", "gone -> nowhere: points to nothing",
                               "loop -> .: loops back to a directory above it",
                               "passwd -> /etc/passwd: points outside the channel"]
    from ledger.capture.data import capture_file_channel

    hashed, gaps = capture_file_channel(data.as_uri(), channel_name="train")  # hashed only (not the local backend)
    assert [o.key for o in hashed.objects] == [o["key"] for o in pin["objects"]]
    assert any("4 symbolic link(s) were not stored" in g.why for g in gaps)


# --- 10. a damaged SQLite file, a damaged anchor -----------------------------------------------------------------


def _seed_and_close(count: int = 20) -> list[RunRecord]:
    book = open_ledger()
    runs = book.append_many([make_run(i, notes="n" * 3000) for i in range(count)])  # a few pages of data
    book.engine.dispose()  # the last connection checkpoints the WAL into the file
    return runs


@pytest.mark.parametrize("offset, length, sqlite_says", [
    (0, 100, "file is not a database"),  # the header
    (4096 * 2, 4096 * 60, "database disk image is malformed"),  # pages of the tables
])
def test_a_damaged_sqlite_file_is_named_in_one_line(ledger_home, monkeypatch, capsys, offset, length, sqlite_says):
    path = ledger_home / "ledger.db"
    monkeypatch.setenv("LEDGER_DB_URL", f"sqlite:///{path}")
    runs = _seed_and_close()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xde\xad\xbe\xef" * (length // 4))
    for args, exit_code in ((["runs"], 1), (["show", runs[0].run_id], 1), (["verify"], 3), (["verify", "--json"], 3)):
        code, out, err = cli(capsys, *args)
        assert code == exit_code, (args, err)
        assert err.startswith(f"error: database damaged: {path}: {sqlite_says}; restore it from a backup"), err
        assert len(err.strip().splitlines()) == 1


def test_a_damaged_sqlite_file_through_the_installed_command(ledger_home, monkeypatch):
    """The same through the `ledger` executable beside this interpreter, as a user runs it: no traceback."""
    path = ledger_home / "ledger.db"
    monkeypatch.setenv("LEDGER_DB_URL", f"sqlite:///{path}")
    _seed_and_close(3)
    path.write_bytes(b"this is no longer a database" * 100)
    executable = Path(sys.executable).with_name("ledger")
    result = subprocess.run([str(executable), "verify"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: database damaged: {path}: file is not a database")


@pytest.mark.parametrize("name, content", [
    ("anchor-000000000003-20261202T010000000000Z.json", b"\x00\x17garbage, not JSON"),
    ("anchor-000000000003-20261202T010000000000Z.json", b'{"not": "an anchor"}'),  # an anchor's name, no anchor
    ("head.json", b"{\"kind\": \"ledger.audit.anchor\", \"head\": {\"seq\": \"three\"}}"),  # says it is one, but is not
    ("notes.json", b"\xff\xfe garbage"),  # any .json there that is not JSON at all
])
def test_a_damaged_anchor_is_reported_as_damaged(db_url, tmp_path, capsys, name, content):
    book = open_ledger()
    book.append_many([make_run(i) for i in range(3)])
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / name).write_bytes(content)
    for where in (str(anchors), str(anchors / name)):
        code, out, err = cli(capsys, "verify", "--anchor", where)
        assert code == 3, err
        assert err.startswith(f"error: anchor damaged: {(anchors / name).as_uri()}: ") and "no anchor" not in err
        assert len(err.strip().splitlines()) == 1


# --- 11. a full disk while staging ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs; mounting needs root, which this machine's tests run as)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the full-disk test needs root")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_while_staging_is_one_line_with_the_path_and_the_bytes(workspace, db_url, ledger_home,
                                                                          small_disk, capsys):
    (workspace / "data" / "big.bin").write_bytes(random.Random(1).randbytes(2 << 20))
    needed = sum(p.stat().st_size for p in (workspace / "data").iterdir())
    jobs = ledger_home / "jobs"
    jobs.parent.mkdir(parents=True, exist_ok=True)
    jobs.symlink_to(small_disk, target_is_directory=True)  # job roots go to the small disk; the store stays
    code, out, err = cli(capsys, "run", "src/train.py", "--channel", "train=data", "--job-name", "too-big")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err, err  # one line, after the capture line
    match = re.search(r"error: no space left to stage the channel (\S+) at (\S+): ([0-9,]+) bytes are needed, "
                      r"([0-9,]+) bytes are free; free space", err)
    assert match, err
    assert match[2] == str(jobs / "too-big" / "input" / "data" / "train")
    assert int(match[3].replace(",", "")) == needed and int(match[4].replace(",", "")) < needed
    runs = open_ledger().runs()  # nothing lost: the run is recorded as Failed, with the reason
    assert runs["status"].tolist() == ["Failed"]
    assert "no space left to stage" in open_ledger().get("too-big").outcome.failure_reason
    assert not any(small_disk.iterdir())  # no half-staged job root left behind


def test_a_disk_that_fills_during_the_copy_is_named_too(tmp_path, small_disk):
    from ledger.errors import NoSpace

    store = ContentStore(tmp_path / "home")
    big = tmp_path / "big.bin"
    big.write_bytes(random.Random(2).randbytes(3 << 19))  # 1.5 MiB: more than the disk holds
    digest = store.put_file(big).digest
    with pytest.raises(NoSpace) as caught:
        store.stage(digest, small_disk / "input" / "big.bin")  # no check first: the copy itself meets ENOSPC
    message = str(caught.value)
    assert f"at {small_disk / 'input' / 'big.bin'}: {3 << 19:,} bytes are needed" in message and "\n" not in message


def _s3_request(name: str, channel_uri: str, source_uri: str) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "python:3.11", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "HyperParameters": {"sagemaker_program": json.dumps("train.py"),
                            "sagemaker_submit_directory": json.dumps(source_uri)},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3Uri": channel_uri, "S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": "s3://data/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    }


def test_a_full_disk_while_staging_from_s3_names_the_path_and_the_bytes(aws, ledger_home, tmp_path, small_disk):
    import boto3

    from ledger.backends.local import LocalBackend
    from ledger.capture.content_store import pack_tar_gz
    from ledger.errors import NoSpace

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="train/big.bin", Body=random.Random(3).randbytes(2 << 20))
    s3.put_object(Bucket="data", Key="small/a.csv", Body=b"1,2\n")
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('never runs')\n")
    (code / "weights.bin").write_bytes(random.Random(4).randbytes(3 << 19))  # 1.5 MiB that does not compress
    pack_tar_gz(code, tmp_path / "sourcedir.tar.gz")
    s3.put_object(Bucket="data", Key="code/sourcedir.tar.gz", Body=(tmp_path / "sourcedir.tar.gz").read_bytes())
    archive_size = (tmp_path / "sourcedir.tar.gz").stat().st_size
    backend = LocalBackend(home=ledger_home)

    # The channel: its listing gives the bytes, so the check refuses before downloading any.
    with pytest.raises(NoSpace) as caught:
        backend.launch(_s3_request("s3-too-big", "s3://data/train/", "s3://data/code/sourcedir.tar.gz"),
                       job_dir=small_disk / "s3-too-big", log=lambda line: None)
    dest = small_disk / "s3-too-big" / "input" / "data" / "train"
    assert str(caught.value).startswith(f"no space left to stage channel train at {dest}: {2 << 20:,} bytes are "
                                        "needed")
    # The code: its size is known only once S3 answers; the download meets ENOSPC and says so.
    with pytest.raises(NoSpace) as caught:
        backend.launch(_s3_request("s3-code-too-big", "s3://data/small/", "s3://data/code/sourcedir.tar.gz"),
                       job_dir=small_disk / "s3-code-too-big", log=lambda line: None)
    archive = small_disk / "s3-code-too-big" / "sourcedir.tar.gz"
    assert str(caught.value).startswith(f"no space left to stage s3://data/code/sourcedir.tar.gz at {archive}: "
                                        f"{archive_size:,} bytes are needed")
    assert not any(small_disk.iterdir())  # nothing half-staged left behind


def test_a_database_on_a_full_disk_says_the_write_failed_not_that_it_cannot_open(ledger_home, monkeypatch,
                                                                                  small_disk):
    path = small_disk / "ledger.db"
    monkeypatch.setenv("LEDGER_DB_URL", f"sqlite:///{path}")
    book = open_ledger()
    book.append(make_run(1, depth="3"))
    with pytest.raises(StoreError) as caught:
        book.append(make_run(2, config="x" * (2 << 20)))  # 2 MiB on a 1 MiB disk
    message = str(caught.value)
    assert message.startswith(f"could not write to the database sqlite:///{path}: database or disk is full"), message
    assert [e.run_id for e in book.entries()] == [book.runs()["run_id"].iloc[0]]  # the first run is intact
    book.engine.dispose()
