"""Capture in bounded memory (issue 16): a model archive digested as it streams from S3, with no copy on disk; a
channel of many objects listed, manifested and recorded without a second copy of its listing."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import tarfile
import tempfile
import tracemalloc

import boto3
import pytest

from ledger import open_ledger
from ledger.capture.content_store import (
    build_tree_digest,
    digest_archive_stream,
    pack_tar_gz,
    sha256_file,
    tree_sha256,
)
from ledger.capture.data import build_channel_pin, list_latest_versions
from ledger.capture.outcome import capture_model_artifact
from ledger.record import (
    INLINE_OBJECTS,
    DataObject,
    Pins,
    RunRecord,
    launch_payload,
    plan_launch_entry,
    plan_small_payload,
)

MB = 1 << 20


@pytest.fixture
def model_bucket(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="models")
    s3.put_bucket_versioning(Bucket="models", VersioningConfiguration={"Status": "Enabled"})
    return s3


def refuse_temporary_files(monkeypatch) -> None:
    """Every way the standard library makes a temporary file or directory, refused from now on (after the test
    has put its objects: moto's server, in this process, spools what it is sent)."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("a temporary file was made")

    for name in ("mkstemp", "mkdtemp", "TemporaryDirectory", "NamedTemporaryFile", "TemporaryFile",
                 "SpooledTemporaryFile"):
        monkeypatch.setattr(tempfile, name, refuse)


def test_model_artifact_is_digested_as_it_streams_with_no_temporary_copy(model_bucket, tmp_path, monkeypatch):
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "xgboost-model").write_bytes(b"booster" * 10_000)
    (model / "sub" / "run.sh").write_text("#!/bin/sh\n")
    (model / "sub" / "run.sh").chmod(0o755)
    archive = tmp_path / "model.tar.gz"
    pack_tar_gz(model, archive)
    put = model_bucket.put_object(Bucket="models", Key="job/output/model.tar.gz", Body=archive.read_bytes())
    refuse_temporary_files(monkeypatch)

    artifact = capture_model_artifact("s3://models/job/output/model.tar.gz")

    assert artifact.sha256 == sha256_file(archive) == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert artifact.tree_sha256 == tree_sha256(model) == tree_sha256(archive)
    assert artifact.version_id == put["VersionId"]


def test_an_artifact_that_is_not_a_tar_keeps_its_sha256_and_no_tree(model_bucket, monkeypatch):
    body = b"\x00not a tar archive\x00" * 5_000
    model_bucket.put_object(Bucket="models", Key="job/model.bin", Body=body)
    refuse_temporary_files(monkeypatch)
    artifact = capture_model_artifact("s3://models/job/model.bin")
    assert artifact.sha256 == hashlib.sha256(body).hexdigest() and artifact.tree_sha256 is None


def test_a_missing_artifact_keeps_only_its_uri(model_bucket):
    artifact = capture_model_artifact("s3://models/never/written.tar.gz")
    assert artifact.uri == "s3://models/never/written.tar.gz" and artifact.sha256 is None


def test_links_in_an_uncompressed_tar_digest_as_the_file_reader_does(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = b"weights" * 1000
        info = tarfile.TarInfo("./model/weights.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("model/again.bin")
        link.type, link.linkname = tarfile.LNKTYPE, "model/weights.bin"
        tar.addfile(link)
        symlink = tarfile.TarInfo("model/latest")
        symlink.type, symlink.linkname = tarfile.SYMTYPE, "weights.bin"
        tar.addfile(symlink)
        dangling = tarfile.TarInfo("model/dangling.bin")
        dangling.type, dangling.linkname = tarfile.LNKTYPE, "model/not-here.bin"
        tar.addfile(dangling)
    archive = tmp_path / "model.tar"
    archive.write_bytes(buffer.getvalue())

    sha256, tree = digest_archive_stream(io.BytesIO(buffer.getvalue()))

    weights = hashlib.sha256(data).hexdigest()
    missing = hashlib.sha256(b"missing link target: model/not-here.bin").hexdigest()
    assert tree == tree_sha256(archive) == build_tree_digest(
        {"model/weights.bin": weights, "model/again.bin": weights, "model/dangling.bin": missing,
         "model/latest": ("120000", hashlib.sha256(b"weights.bin").hexdigest())})
    assert sha256 == hashlib.sha256(buffer.getvalue()).hexdigest()


def test_a_stream_that_breaks_is_not_taken_for_bytes_that_are_no_archive():
    """A read timeout or a reset connection is an OSError, as is a format error while reading a tar: the first
    raises (capture then records the artifact by URI only), and is never recorded as "not a tar archive"."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = os.urandom(1 << 20)  # does not compress: the archive is larger than what is read before the break
        info = tarfile.TarInfo("model/weights.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    class BreakingStream(io.BytesIO):  # one read times out; the reads after it go on, as a retried socket may
        broke = False

        def read(self, size=-1):
            if self.tell() > 256 * 1024 and not self.broke:
                self.broke = True
                raise TimeoutError("The read operation timed out")
            return super().read(size)

    with pytest.raises(TimeoutError):
        digest_archive_stream(BreakingStream(buffer.getvalue()))
    assert digest_archive_stream(io.BytesIO(b"not a tar archive" * 1000))[1] is None  # a format still gives None


class LazyTarStream(io.RawIOBase):
    """A tar archive of one file of `size` zero bytes, made as it is read: nothing is held but a block."""

    def __init__(self, size: int):
        info = tarfile.TarInfo("model/weights.bin")
        info.size = size
        self.parts = iter([info.tobuf(format=tarfile.PAX_FORMAT)]
                          + [b"\0" * MB] * (size // MB) + [b"\0" * (size % MB)]
                          + [b"\0" * (-size % 512 + 1024)])
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self.pending:
            self.pending = next(self.parts, None)
            if self.pending is None:
                self.pending = b""
                return 0
        n = min(len(buffer), len(self.pending))
        buffer[:n], self.pending = self.pending[:n], self.pending[n:]
        return n


def test_a_large_archive_is_digested_in_bounded_memory():
    size = 256 * MB
    expected = LazyTarStream(size)
    whole = hashlib.sha256()
    while chunk := expected.read(MB):
        whole.update(chunk)
    zeros = hashlib.sha256()
    for _ in range(size // MB):
        zeros.update(b"\0" * MB)

    tracemalloc.start()
    try:
        sha256, tree = digest_archive_stream(LazyTarStream(size))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sha256 == whole.hexdigest()
    assert tree == build_tree_digest({"model/weights.bin": zeros.hexdigest()})
    assert peak < 48 * MB, f"{peak / MB:.0f} MB held to digest a {size // MB} MB archive"


# --- a channel of many objects ------------------------------------------------------------------------------------


class ListingPages:
    """Pages of ListObjectVersions as S3 returns them (1,000 a page, in key order), made as they are read: the
    memory a listing of any size costs is then the ledger's alone."""

    def __init__(self, count: int):
        self.count = count

    def get_paginator(self, _operation: str):
        return self

    def paginate(self, Bucket: str, Prefix: str, PaginationConfig: dict):  # noqa: N803 - boto3's names
        size = PaginationConfig["PageSize"]
        for start in range(0, self.count, size):
            yield {"Versions": [
                {"Key": f"{Prefix}part-{i:08d}.csv", "VersionId": f"{i:032d}", "IsLatest": True,
                 "ETag": f'"{i:032x}"', "Size": 1_000 + i}
                for i in range(start, min(self.count, start + size))]}


def test_the_launch_entry_of_a_large_channel_is_what_the_payload_rule_makes():
    objects = [DataObject(key=f"p/{i:05d}", version_id=f"v{i}", etag=f"{i:032x}", size=i)
               for i in range(INLINE_OBJECTS + 1)]
    small = [DataObject(key="q/only", version_id="v", etag="e" * 32, size=1)]
    record = RunRecord(project="p", job_name="j", backend="sagemaker", pins=Pins(data={
        "train": build_channel_pin("s3://b/p/", "S3Prefix", objects),
        "test": build_channel_pin("s3://b/q/", "S3Prefix", small)}))
    payload, blobs = plan_launch_entry(record)
    assert (payload, blobs) == plan_small_payload("run.launched", launch_payload(record))
    train = payload["pins"]["data"]["train"]
    assert train["objects"] == [] and train["objects_sha256"] == record.pins.data["train"].manifest_sha256
    assert payload["pins"]["data"]["test"]["objects"] == [small[0].model_dump(mode="json")]


def test_a_channel_of_many_objects_is_recorded_without_a_second_copy_of_its_listing(ledger_home):
    count = 60_000
    book = open_ledger()
    gc.collect()
    tracemalloc.start()
    try:
        pin = build_channel_pin("s3://bucket/p/", "S3Prefix", list_latest_versions(ListingPages(count), "bucket", "p/"))
        record = RunRecord(project="p", job_name="many-objects", backend="sagemaker", pins=Pins(data={"train": pin}))
        listing, listing_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        saved = book.append(record)
        appended, append_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert pin.object_count == count and pin.pinned
    # The listing is held once while it is made and digested (pages come and go) ...
    assert listing_peak < 1.2 * listing, (listing_peak / MB, listing / MB)
    # ... and recording it adds its manifest's bytes (a fraction of the objects), not another copy of the objects.
    assert append_peak - listing < 0.45 * listing, ((append_peak - listing) / MB, listing / MB)
    assert len(book.get(saved.run_id).pins.data["train"].objects) == count
    with book.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM data_objects").scalar() == count


def test_rebuild_derives_the_rows_of_a_channel_kept_as_a_blob(db_url):
    """A channel of more than INLINE_OBJECTS objects lives in a blob: `db rebuild` (a run at a time) and verify
    both read it back."""
    book = open_ledger(db_url)
    objects = list(list_latest_versions(ListingPages(INLINE_OBJECTS + 50), "bucket", "p/"))
    record = RunRecord(project="p", job_name="blob-channel", backend="sagemaker", pins=Pins(data={
        "train": build_channel_pin("s3://bucket/p/", "S3Prefix", objects)}))
    book.append(record)
    book.append(RunRecord(project="p", job_name="small", backend="sagemaker"))
    assert book.rebuild() == 2
    with book.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM data_objects").scalar() == INLINE_OBJECTS + 50
    report = book.verify()
    assert report.ok, report.problems
