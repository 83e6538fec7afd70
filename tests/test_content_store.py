"""The content store and local file pins: dedup, restore after the original changed, deterministic archives."""

import os
import tarfile

import pytest

from ledger.capture.content_store import (
    ContentStore,
    cas_uri,
    manifest_digest,
    pack_tar_gz,
    parse_cas_uri,
    pin_file_channel,
    pin_source_dir,
    sha256_file,
    stage_cas_uri,
    stage_file_pin,
    tree_sha256,
)
from ledger.errors import NotFound, UsageError
from ledger.record import DataChannelPin


def stored_objects(store: ContentStore) -> list:
    return [p for p in store.root.rglob("*") if p.is_file()]


@pytest.fixture
def store(tmp_path):
    return ContentStore(tmp_path / "home")


def test_same_bytes_are_stored_once(tmp_path, store):
    (tmp_path / "a.csv").write_text("1,2,3\n")
    (tmp_path / "b.csv").write_text("1,2,3\n")
    first, second = store.put_file(tmp_path / "a.csv"), store.put_file(tmp_path / "b.csv")
    assert first == second
    assert first.digest == sha256_file(tmp_path / "a.csv") and first.size == 6
    assert stored_objects(store) == [store.path_of(first.digest)]
    assert store.path_of(first.digest).relative_to(store.root).parts == (first.digest[:2], first.digest[2:])
    assert store.put_bytes(b"1,2,3\n") == first.digest
    assert len(stored_objects(store)) == 1


def test_a_pinned_directory_is_restored_after_its_files_changed(tmp_path, store):
    data = tmp_path / "data"
    (data / "part").mkdir(parents=True)
    (data / "train.csv").write_text("1,2\n3,4\n")
    (data / "part" / "more.csv").write_text("5,6\n")
    (data / "copy.csv").write_text("1,2\n3,4\n")
    pin = pin_file_channel(data.as_uri(), store)

    DataChannelPin.model_validate(pin)  # the record's shape
    assert pin["kind"] == "file" and pin["pinned"] is True
    assert [o["key"] for o in pin["objects"]] == ["copy.csv", "part/more.csv", "train.csv"]
    assert pin["object_count"] == 3 and pin["total_bytes"] == 8 + 4 + 8
    assert all(o["version_id"] is None and len(o["etag"]) == 64 for o in pin["objects"])
    assert pin["manifest_sha256"] == manifest_digest(pin["objects"])
    assert pin["snapshot_uri"] == cas_uri(pin["manifest_sha256"])
    assert len(stored_objects(store)) == 3  # two distinct files and the manifest

    (data / "train.csv").write_text("changed\n")
    (data / "part" / "more.csv").unlink()
    restored = tmp_path / "restored"
    stage_file_pin(pin, restored, store)
    assert (restored / "train.csv").read_text() == "1,2\n3,4\n"
    assert (restored / "part" / "more.csv").read_text() == "5,6\n"

    by_uri = tmp_path / "by-uri"
    same_pin, _ = stage_cas_uri(pin["snapshot_uri"], by_uri, store)
    assert same_pin["objects"] == pin["objects"]
    assert (by_uri / "train.csv").read_text() == "1,2\n3,4\n"


def test_a_single_file_channel_is_keyed_by_its_name(tmp_path, store):
    (tmp_path / "abalone.csv").write_text("9,1,0.4\n")
    pin = pin_file_channel(str(tmp_path / "abalone.csv"), store)
    assert [o["key"] for o in pin["objects"]] == ["abalone.csv"]


def test_missing_paths_and_objects_are_named(tmp_path, store):
    with pytest.raises(NotFound, match="does not exist"):
        pin_file_channel((tmp_path / "nope").as_uri(), store)
    (tmp_path / "x.csv").write_text("1\n")
    pin = pin_file_channel((tmp_path / "x.csv").as_uri(), store)
    os.chmod(store.path_of(pin["objects"][0]["etag"]), 0o644)
    os.unlink(store.path_of(pin["objects"][0]["etag"]))
    with pytest.raises(NotFound, match="not in the content store") as info:
        stage_file_pin(pin, tmp_path / "out", store)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError):
        parse_cas_uri("ledger-cas://sha256/xyz")


def test_an_object_written_after_it_was_stored_is_no_longer_trusted(tmp_path, store):
    (tmp_path / "x.csv").write_text("1\n")
    digest = store.put_file(tmp_path / "x.csv").digest
    staged = store.stage(digest, tmp_path / "job" / "x.csv")
    assert staged.stat().st_ino == store.path_of(digest).stat().st_ino  # a hard link: no copy
    os.chmod(staged, 0o644)
    staged.write_text("a job wrote into its input\n")
    assert not store.has(digest)
    assert store.put_file(tmp_path / "x.csv").digest == digest  # storing it again repairs the object
    assert store.has(digest) and store.read_bytes(digest) == b"1\n"


def test_archives_are_deterministic_and_tree_digests_ignore_timestamps(tmp_path):
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "xgboost-model").write_bytes(b"\x00\x01weights")
    (src / "sub" / "notes.txt").write_text("hello\n")
    first = pack_tar_gz(src, tmp_path / "one.tar.gz")
    os.utime(src / "xgboost-model", (1_000_000, 1_000_000))
    second = pack_tar_gz(src, tmp_path / "two.tar.gz")
    assert first == second
    with tarfile.open(tmp_path / "one.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["sub/notes.txt", "xgboost-model"]
        assert {m.mtime for m in tar.getmembers()} == {0}

    # an archive of the same files made another way (other times, a ./ prefix) has the same tree digest
    with tarfile.open(tmp_path / "other.tar.gz", "w:gz") as tar:
        tar.add(src / "sub" / "notes.txt", arcname="./sub/notes.txt")
        tar.add(src / "xgboost-model", arcname="./xgboost-model")
    assert tree_sha256(src) == tree_sha256(tmp_path / "one.tar.gz") == tree_sha256(tmp_path / "other.tar.gz")
    (src / "sub" / "notes.txt").write_text("changed\n")
    assert tree_sha256(src) != tree_sha256(tmp_path / "one.tar.gz")


def test_a_source_directory_is_pinned_as_an_archive(tmp_path, store):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('hi')\n")
    pinned = pin_source_dir(tmp_path / "src", store)
    assert pinned["uri"] == cas_uri(pinned["sha256"]) and pinned["version_id"] is None
    assert parse_cas_uri(pinned["uri"]) == pinned["sha256"]
    assert pin_source_dir(tmp_path / "src", store) == pinned  # same files, same archive
