"""Code pinning on real git repositories in tmp_path, and the uploaded source against the moto server."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import boto3
import pytest

from ledger.capture.code import (
    build_public_remote_url,
    capture_code,
    capture_code_channels,
    capture_source_archive,
    plan_code_channel_names,
    plan_code_path,
)


def git(cwd, *args, **kwargs) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, **kwargs).stdout


@pytest.fixture(autouse=True)
def git_identity(monkeypatch, tmp_path):
    """A git that ignores the user's configuration and has a committer."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var, value in {"NAME": "Test", "EMAIL": "test@example.com"}.items():
        monkeypatch.setenv(f"GIT_AUTHOR_{var}", value)
        monkeypatch.setenv(f"GIT_COMMITTER_{var}", value)


@pytest.fixture
def repo(tmp_path):
    """A repository with one pushed commit on main, its remote a bare repository."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--bare", "-b", "main", str(origin))
    work = tmp_path / "work"
    git(tmp_path, "init", "-b", "main", str(work))
    (work / "train.py").write_text("print('train')\n")
    (work / ".gitignore").write_text("*.log\n")
    (work / "src").mkdir()
    (work / "src" / "model.py").write_text("LAYERS = 2\n")
    git(work, "add", "-A")
    git(work, "commit", "-m", "first")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-u", "origin", "main")
    return work


def test_clean_repository(repo):
    pin, gaps, diff = capture_code(repo)
    assert not gaps
    assert pin.commit == git(repo, "rev-parse", "HEAD").strip()
    assert pin.branch == "main" and pin.detached is False
    assert pin.repo_url == str(repo.parent / "origin.git")
    assert pin.dirty is False and pin.diff_sha256 is None and diff == b""
    assert pin.untracked == []


def test_subdirectory_finds_the_repository_root(repo):
    pin, gaps, _ = capture_code(repo / "src")
    assert not gaps and pin.repo_root == str(repo)


def test_dirty_tree_keeps_the_diff_and_lists_untracked(repo):
    (repo / "train.py").write_text("print('train harder')\n")  # unstaged
    (repo / "src" / "model.py").write_text("LAYERS = 3\n")
    git(repo, "add", "src/model.py")  # staged
    (repo / "notes.txt").write_text("new, untracked\n")
    (repo / "run.log").write_text("ignored\n")

    pin, gaps, diff = capture_code(repo)

    assert not gaps and pin.dirty is True
    plain = subprocess.run(["git", "diff", "HEAD"], cwd=repo, check=True, capture_output=True).stdout
    assert diff == plain  # a text-only change: exactly what `git diff HEAD` prints
    assert pin.diff_sha256 == hashlib.sha256(plain).hexdigest()
    assert b"train harder" in diff and b"LAYERS = 3" in diff  # unstaged and staged
    assert pin.untracked == ["notes.txt"]  # run.log is ignored


def test_binary_and_non_utf8_changes_survive_and_apply(repo, tmp_path):
    (repo / "weights.bin").write_bytes(bytes(range(256)))
    (repo / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    git(repo, "add", "-A")
    git(repo, "commit", "-m", "binary")
    git(repo, "push")
    (repo / "weights.bin").write_bytes(bytes(reversed(range(256))))
    (repo / "latin1.txt").write_bytes("na\xefve\n".encode("latin-1"))

    pin, _, diff = capture_code(repo)

    binary = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=repo, check=True, capture_output=True).stdout
    assert diff == binary and pin.diff_sha256 == hashlib.sha256(binary).hexdigest()
    assert b"GIT binary patch" in diff
    # the kept diff restores the tree on a fresh clone of the recorded commit
    clone = tmp_path / "clone"
    git(tmp_path, "clone", str(repo.parent / "origin.git"), str(clone))
    git(clone, "checkout", pin.commit)
    subprocess.run(["git", "apply", "--binary", "-"], cwd=clone, input=diff, check=True)
    assert (clone / "weights.bin").read_bytes() == (repo / "weights.bin").read_bytes()
    assert (clone / "latin1.txt").read_bytes() == (repo / "latin1.txt").read_bytes()


def test_detached_head_is_a_fact_not_a_gap(repo):
    first = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "--detach", first)
    pin, gaps, _ = capture_code(repo)
    assert not gaps
    assert pin.detached is True and pin.branch is None and pin.commit == first


def test_not_a_repository_is_a_gap(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    pin, gaps, diff = capture_code(plain)
    assert pin.commit is None and diff == b""
    assert len(gaps) == 1 and "not inside a git repository" in gaps[0].why and "git init" in gaps[0].fix


def test_no_remote_is_a_gap(tmp_path):
    git(tmp_path, "init", "-b", "main", "solo")
    (tmp_path / "solo" / "a.py").write_text("x = 1\n")
    git(tmp_path / "solo", "add", "-A")
    git(tmp_path / "solo", "commit", "-m", "one")
    pin, gaps, _ = capture_code(tmp_path / "solo")
    assert pin.commit and pin.repo_url is None
    assert len(gaps) == 1 and gaps[0].why == "no remote: the commit exists only on this machine"


def test_unpushed_commit_is_a_gap(repo):
    (repo / "train.py").write_text("print('v2')\n")
    git(repo, "commit", "-am", "local only")
    pin, gaps, _ = capture_code(repo)
    assert len(gaps) == 1 and "not pushed" in gaps[0].why and gaps[0].fix == "git push origin HEAD:main"


def test_repository_without_commits_is_a_gap(tmp_path):
    git(tmp_path, "init", "-b", "main", "empty")
    (tmp_path / "empty" / "a.py").write_text("x = 1\n")
    pin, gaps, _ = capture_code(tmp_path / "empty")
    assert pin.commit is None and pin.untracked == ["a.py"]
    assert any("no commit" in g.why for g in gaps)


def test_remote_credentials_are_not_recorded(repo):
    git(repo, "remote", "set-url", "origin", "https://user:ghp_secret@github.com/org/repo.git")
    pin, _, _ = capture_code(repo)
    assert pin.repo_url == "https://github.com/org/repo.git"
    assert build_public_remote_url("git@github.com:org/repo.git") == "git@github.com:org/repo.git"


def test_working_directory_and_local_submit_directory(repo, monkeypatch, tmp_path):
    monkeypatch.chdir(repo / "src")
    pin, _, _ = capture_code()  # defaults to the working directory
    assert pin.repo_root == str(repo)
    request = {"HyperParameters": {"sagemaker_submit_directory": json.dumps(f"file://{repo}/src")}}
    assert plan_code_path(request) == f"{repo}/src"
    monkeypatch.chdir(tmp_path)  # a notebook elsewhere: the request's local source wins
    pin, gaps, _ = capture_code(request=request)
    assert not gaps and pin.repo_root == str(repo)


# --- uploaded source, against moto ------------------------------------------------------------------------------


def _tarball(files: dict[str, bytes], mtime: int = 0) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), mtime
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tree_sha256_of(files: dict[str, bytes]) -> str:
    """The product's tree digest rule, written out: sha256 of the JSON of sorted [path, mode, sha256] (plain files,
    as these are, have git's mode 100644)."""
    listing = [[name, "100644", hashlib.sha256(files[name]).hexdigest()] for name in sorted(files)]
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()


def test_sdk2_source_archive_is_pinned(aws):
    session = boto3.Session()
    s3 = session.client("s3")
    s3.create_bucket(Bucket="sagemaker-us-east-1-123456789012")
    s3.put_bucket_versioning(Bucket="sagemaker-us-east-1-123456789012", VersioningConfiguration={"Status": "Enabled"})
    archive = _tarball({"train.py": b"print(1)\n", "requirements.txt": b"numpy\n"})
    key = "xgb-2026-11-27/source/sourcedir.tar.gz"
    version = s3.put_object(Bucket="sagemaker-us-east-1-123456789012", Key=key, Body=archive)["VersionId"]
    uri = f"s3://sagemaker-us-east-1-123456789012/{key}"
    request = {"HyperParameters": {"sagemaker_submit_directory": json.dumps(uri), "sagemaker_program": '"train.py"'}}

    pinned, gaps = capture_source_archive(request, session)

    assert not gaps
    assert (pinned.uri, pinned.version_id, pinned.sha256) == (uri, version, hashlib.sha256(archive).hexdigest())
    # the same files packed again (new timestamps, other order) have another sha256 but the same tree digest
    repacked = _tarball({"requirements.txt": b"numpy\n", "./train.py": b"print(1)\n"}, mtime=12345)
    assert hashlib.sha256(repacked).digest() != hashlib.sha256(archive).digest()
    s3.put_object(Bucket="sagemaker-us-east-1-123456789012", Key="again/sourcedir.tar.gz", Body=repacked)
    request["HyperParameters"]["sagemaker_submit_directory"] = '"s3://sagemaker-us-east-1-123456789012/again/sourcedir.tar.gz"'
    again, _ = capture_source_archive(request, session)
    assert again.tree_sha256 == pinned.tree_sha256 == tree_sha256_of({"train.py": b"print(1)\n", "requirements.txt": b"numpy\n"})
    assert capture_source_archive({"HyperParameters": {"max_depth": "5"}}, session) == (None, [])


def test_missing_source_archive_is_a_gap(aws):
    request = {"HyperParameters": {"sagemaker_submit_directory": '"s3://no-such-bucket/src/sourcedir.tar.gz"'}}
    pinned, gaps = capture_source_archive(request, boto3.Session())
    assert pinned.sha256 is None and len(gaps) == 1 and "NoSuchBucket" in gaps[0].why


def test_local_submit_directory_is_pinned_by_tree_digest(tmp_path):
    (tmp_path / "train.py").write_text("print(1)\n")
    request = {"HyperParameters": {"sagemaker_submit_directory": json.dumps(f"file://{tmp_path}")}}
    pinned, gaps = capture_source_archive(request)
    assert not gaps and pinned.sha256 is None and pinned.tree_sha256 == tree_sha256_of({"train.py": b"print(1)\n"})


def test_sdk3_code_channels_are_pinned_by_content(aws):
    session = boto3.Session()
    s3 = session.client("s3")
    s3.create_bucket(Bucket="sagemaker-us-east-1-123456789012")  # the default bucket: no versioning
    files = {"train.py": b"print(1)\n", "lib/util.py": b"X = 1\n"}
    drivers = {"sm_train.sh": b"#!/bin/sh\n", "distributed.json": b"{}"}

    def upload(job):
        for prefix, content in ((f"{job}/input/code/", files), (f"{job}/input/sm_drivers/", drivers)):
            for name, data in content.items():
                s3.put_object(Bucket="sagemaker-us-east-1-123456789012", Key=prefix + name, Body=data)
        channel = lambda name: {  # noqa: E731
            "ChannelName": name,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://sagemaker-us-east-1-123456789012/{job}/input/{name}"}},
        }
        return {"InputDataConfig": [channel("train"), channel("code"), channel("sm_drivers")]}

    first, second = upload("job-a"), upload("job-b")
    assert plan_code_channel_names(first) == ["code", "sm_drivers"]
    pinned_a, gaps = capture_code_channels(first, session, keep={})  # the bucket keeps no versions: keep the bytes
    pinned_b, _ = capture_code_channels(second, session, keep={})
    assert not gaps and set(pinned_a) == {"code", "sm_drivers"} and pinned_a["code"]["kept"] is True
    assert pinned_a["code"]["object_count"] == 2 and pinned_a["code"]["total_bytes"] == 15
    assert pinned_a["code"]["uri"].endswith("job-a/input/code")
    # the same code under another job's prefix has the same digest; different code does not
    assert pinned_a["code"]["tree_sha256"] == pinned_b["code"]["tree_sha256"] == tree_sha256_of(files)
    assert pinned_a["code"]["tree_sha256"] != pinned_a["sm_drivers"]["tree_sha256"]


def test_a_channel_named_code_alone_is_data():
    request = {"InputDataConfig": [{"ChannelName": "code"}, {"ChannelName": "train"}]}
    assert plan_code_channel_names(request) == []
