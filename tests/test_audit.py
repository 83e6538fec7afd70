"""Audit reports: the pure report model, its four renderings, the PDF on paper, and checking a report later.

The ledgers here are seeded like real ones: CreateTrainingJob requests rewritten by pinning, S3 channels with
versioned objects and their manifest digests, a dirty git tree, a package list, outcomes recorded by
`record_outcome` and reproductions judged by `record_verdict`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ledger import audit
from ledger.capture.data import build_channel_pin
from ledger.cli import main
from ledger.record import (
    CodePin,
    DataObject,
    EnvironmentPin,
    Gap,
    HardwarePin,
    ImagePin,
    ModelArtifact,
    Outcome,
    Pins,
    RunRecord,
    SourceArchive,
    Verdict,
    digest,
    sha256_hex,
)
from ledger.store.ledger import open_ledger
from tests.test_store import tamper

IMAGE_TAG = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
PACKAGES = {
    "boto3": "1.44.8", "botocore": "1.44.8", "cloudpickle": "3.1.1", "cryptography": "50.0.2", "fsspec": "2026.9.0",
    "joblib": "1.6.0", "numpy": "2.4.6", "pandas": "3.1.1", "pyarrow": "25.0.1", "python-dateutil": "2.9.0",
    "pytz": "2026.1", "pyyaml": "6.0.3", "requests": "2.33.1", "s3fs": "2026.9.0", "sagemaker": "2.257.7",
    "scikit-learn": "1.7.2", "scipy": "1.16.3", "six": "1.17.0", "threadpoolctl": "3.6.0", "urllib3": "2.6.2",
    "xgboost-cpu": "3.1.2", "tqdm": "4.67.1", "protobuf": "6.33.6", "psutil": "7.2.2",
}


def s3_objects(bucket_prefix: str, version: str, parts: int = 3, size: int = 1_250_000) -> list[DataObject]:
    return [DataObject(key=f"{bucket_prefix}part-{p:04d}.csv", version_id=f"{version}.{p}",
                       etag=sha256_hex(f"{bucket_prefix}{version}{p}")[:32], size=size + p) for p in range(parts)]


def make_run(i: int, *, project: str = "churn", train_version: str = "3Lg7wqs", gaps: bool = False,
             reproduction_of: str | None = None, created_at: str | None = None, job_name: str | None = None,
             bucket: str = "ml-data") -> RunRecord:
    """A run as capture records it: the request after pinning (image by digest), the one before, every pin."""
    job = job_name or f"churn-xgb-{i:03d}"
    image_digest = None if gaps else "sha256:" + sha256_hex(f"image-{project}")
    sent_image = IMAGE_TAG if gaps else f"{IMAGE_TAG.rsplit(':', 1)[0]}@{image_digest}"
    hyperparameters = {"max_depth": str(4 + i % 3), "eta": "0.2", "num_round": "100",
                       "objective": "binary:logistic", "eval_metric": "auc", "subsample": "0.8"}
    channels = {
        "train": build_channel_pin(f"s3://{bucket}/churn/train/", "S3Prefix",
                                   s3_objects("churn/train/", train_version)),
        "validation": build_channel_pin(f"s3://{bucket}/churn/validation/", "S3Prefix",
                                        s3_objects("churn/validation/", "9pQz2Lx", parts=1, size=310_000)),
    }
    request = {
        "TrainingJobName": job,
        "AlgorithmSpecification": {"TrainingImage": sent_image, "TrainingInputMode": "File",
                                   "MetricDefinitions": [{"Name": "validation:auc", "Regex": "validation-auc:([0-9.]+)"},
                                                         {"Name": "train:auc", "Regex": "train-auc:([0-9.]+)"}]},
        "RoleArn": "arn:aws:iam::111122223333:role/SageMakerTraining",
        "InputDataConfig": [{"ChannelName": name, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": pin.uri, "S3DataDistributionType": "FullyReplicated"}}}
            for name, pin in channels.items()],
        "OutputDataConfig": {"S3OutputPath": "s3://ml-artifacts/churn/"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "HyperParameters": hyperparameters,
        "Tags": [{"Key": "team", "Value": "credit-risk"}],
    }
    original = json.loads(json.dumps(request))
    original["AlgorithmSpecification"]["TrainingImage"] = IMAGE_TAG
    run_gaps = [
        Gap(what="image", why="ECR refused describe_images in account 683313688378 (AccessDenied)",
            fix="push the image to your own ECR repository, or grant ecr:DescribeImages on it"),
        Gap(what="code", why="uncommitted changes in train.py were not pushed anywhere",
            fix="commit and push, or keep LEDGER_HOME's diff blobs with the ledger"),
    ] if gaps else []
    return RunRecord(
        project=project, job_name=job, backend="sagemaker", created_by="arn:aws:sts::111122223333:assumed-role/ds/maria",
        created_at=created_at or f"2026-11-{10 + i % 15:02d}T09:{i % 60:02d}:00.000000Z",
        request=request, original_request=None if gaps else original, reproduction_of=reproduction_of,
        pins=Pins(
            image=ImagePin(uri=IMAGE_TAG, digest=image_digest, pinned_uri=None if gaps else sent_image,
                           source=None if gaps else "ecr"),
            code=CodePin(repo_url="git@github.com:acme/churn-model.git", commit=sha256_hex(f"c{i}")[:40],
                         branch="main", dirty=gaps, diff_sha256=sha256_hex("diff") if gaps else None,
                         untracked=["notes.md"] if gaps else [],
                         source_archive=SourceArchive(uri=f"s3://ml-artifacts/code/{job}/sourcedir.tar.gz",
                                                      version_id="Xy7LqK2.a", sha256=sha256_hex(f"src{i}"))),
            data=channels, hyperparameters=hyperparameters,
            environment=EnvironmentPin(python="3.11.7", platform="Linux-6.1.0-x86_64-with-glibc2.36",
                                       packages=PACKAGES, fingerprint=digest(PACKAGES)),
            hardware=HardwarePin(instance_type="ml.m5.xlarge", instance_count=1, volume_gb=30, vcpu=4,
                                 memory_gib=16.0, gpu=None, gpu_count=0),
            gaps=run_gaps,
        ),
    )


def make_outcome(job: str, auc: float = 0.912, tree: str | None = None, bucket: str = "ml-artifacts",
                 launched: str = "2026-11-10T09:00:00Z") -> Outcome:
    from datetime import datetime, timedelta

    start = datetime.fromisoformat(launched.replace("Z", "+00:00")) + timedelta(seconds=64)
    return Outcome(
        status="Completed", arn=f"arn:aws:sagemaker:us-east-1:111122223333:training-job/{job}",
        started_at=start.isoformat().replace("+00:00", "Z"),
        ended_at=(start + timedelta(seconds=811)).isoformat().replace("+00:00", "Z"), billable_seconds=811,
        metrics={"validation:auc": auc, "train:auc": 0.951},
        model_artifact=ModelArtifact(uri=f"s3://{bucket}/churn/{job}/output/model.tar.gz", version_id="m1.Qw",
                                     sha256=sha256_hex(f"tar-{job}"), tree_sha256=tree or sha256_hex(f"tree-{job}")),
    )


def seed(book) -> dict[str, RunRecord]:
    """gappy (2 gaps, reproduced EQUIVALENT), its reproduction, clean (never reproduced), flaky (reproduced DIVERGED)."""
    book.put_blob(b"diff")  # the uncommitted diff gappy's record names (verify hashes it)
    gappy, clean, flaky = book.append_many([make_run(1, gaps=True), make_run(2), make_run(3)])
    tree = sha256_hex("tree-shared")
    book.record_outcome(gappy.run_id, make_outcome(gappy.job_name, tree=tree, launched=gappy.created_at))
    book.record_outcome(clean.run_id, make_outcome(clean.job_name, launched=clean.created_at))
    book.record_outcome(flaky.run_id, make_outcome(flaky.job_name, launched=flaky.created_at))
    repro, flaky_repro = book.append_many([
        make_run(1, gaps=True, reproduction_of=gappy.run_id, job_name=f"{gappy.job_name}-r1",
                 created_at="2026-11-20T10:00:00.000000Z"),
        make_run(3, reproduction_of=flaky.run_id, job_name=f"{flaky.job_name}-r1", created_at="2026-11-21T10:00:00.000000Z"),
    ])
    book.record_outcome(repro.run_id, make_outcome(repro.job_name, auc=0.9120000001, launched=repro.created_at))
    book.record_verdict(repro.run_id, Verdict(result="EQUIVALENT", differences=[
        {"what": "model artifact", "original": tree, "reproduction": sha256_hex(f"tree-{repro.job_name}")}]))
    book.record_outcome(flaky_repro.run_id, make_outcome(flaky_repro.job_name, auc=0.871, launched=flaky_repro.created_at))
    book.record_verdict(flaky_repro.run_id, Verdict(
        result="DIVERGED",
        differences=[{"what": "metric validation:auc", "original": 0.912, "reproduction": 0.871,
                      "relative_difference": 0.045, "tolerance": 1e-6}],
        explained_by=[{"pin": "data train", "recorded": "3Lg7wqs", "now": "8Hh1pQe"}]))
    return {name: book.get(run.run_id) for name, run in
            (("gappy", gappy), ("repro", repro), ("clean", clean), ("flaky", flaky), ("flaky_repro", flaky_repro))}


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- pure: the model --------------------------------------------------------------------------------------------


def _pure_records() -> dict[str, RunRecord]:
    gappy = make_run(1, gaps=True).model_copy(update={"outcome": make_outcome("churn-xgb-001")})
    clean = make_run(2).model_copy(update={"outcome": make_outcome("churn-xgb-002")})
    repro = make_run(1, gaps=True, reproduction_of=gappy.run_id, job_name="churn-xgb-001-r1",
                     created_at="2026-11-20T10:00:00.000000Z").model_copy(
        update={"verdict": Verdict(result="IDENTICAL"), "outcome": make_outcome("churn-xgb-001-r1")})
    return {"gappy": gappy, "clean": clean, "repro": repro}


def test_build_report_summarizes_pins_and_reproductions():
    records = _pure_records()
    report = audit.build_report(list(records.values()), generated_at="2026-11-27T00:00:00Z")
    summary = report["summary"]
    assert (summary["runs"], summary["originals"], summary["reproductions"]) == (3, 2, 1)
    assert (summary["fully_pinned"], summary["with_gaps"]) == (1, 2)
    assert summary["gap_kinds"] == {"code": 2, "image": 2}
    assert summary["originals_by_verdict"] == {"IDENTICAL": 1, "EQUIVALENT": 0, "DIVERGED": 0, "UNVERIFIABLE": 0}
    assert summary["never_reproduced"] == 1
    # originals in time order, each followed by its reproductions; numbered as the reader sees them
    assert [r["job_name"] for r in report["runs"]] == ["churn-xgb-001", "churn-xgb-001-r1", "churn-xgb-002"]
    first, reproduction = report["runs"][0], report["runs"][1]
    assert first["reproductions"][0]["verdict"] == "IDENTICAL" and first["reproductions"][0]["number"] == 2
    assert reproduction["role"] == "reproduction" and reproduction["reproduction_of_number"] == 1
    assert first["fully_pinned"] is False and [g["what"] for g in first["gaps"]] == ["image", "code"]
    assert first["code"]["diff_sha256"] == sha256_hex("diff") and "repo_root" not in first["code"]
    assert report["integrity"]["verified"] is False and report["integrity"]["ok"] is None


def test_channels_show_counts_and_digests_and_manifests_are_listed_once_in_full():
    records = _pure_records()
    report = audit.build_report(list(records.values()))
    train = next(c for c in report["runs"][0]["data"] if c["channel"] == "train")
    assert train["object_count"] == 3 and train["versioned_objects"] == 3 and train["pinned"] is True
    assert train["manifest_sha256"] == records["gappy"].pins.data["train"].manifest_sha256
    manifests = {m["manifest_sha256"]: m for m in report["appendix"]["manifests"]}
    shared = manifests[train["manifest_sha256"]]  # all three runs read the same train versions
    assert len(shared["used_by"]) == 3 and len(shared["objects"]) == 3
    assert shared["objects"][0] == {"key": "churn/train/part-0000.csv", "version_id": "3Lg7wqs.0",
                                    "etag": shared["objects"][0]["etag"], "size": 1_250_000}
    assert shared["digest_matches_objects"] is True
    assert len(report["appendix"]["environments"]) == 1
    assert report["appendix"]["environments"][0]["packages"] == dict(sorted(PACKAGES.items()))


def test_request_summary_and_what_pinning_rewrote():
    record = make_run(4)
    rows = {row["name"]: row["value"] for row in audit.build_request_summary(record.request)}
    assert rows["Training image (as sent)"].endswith("@sha256:" + sha256_hex("image-churn"))
    assert rows["Instances"] == "1 × ml.m5.xlarge, 30 GB volume"
    assert rows["Input channels"] == "train, validation" and rows["Tags"] == "team=credit-risk"
    assert rows["Max runtime"] == "3600 s" and rows["Metric definitions"] == "validation:auc, train:auc"
    assert rows["Request digest"] == f"sha256:{digest(record.request)}"
    assert audit.build_pinning_changes(record.original_request, record.request) == [
        "AlgorithmSpecification.TrainingImage"]
    assert audit.build_pinning_changes(None, record.request) == []


def test_digest_covers_the_report_and_changes_with_it():
    records = list(_pure_records().values())
    one = audit.build_report(records, generated_at="2026-11-27T00:00:00Z")
    two = audit.build_report(records, generated_at="2026-11-27T00:00:00Z")
    assert one["digest"] == two["digest"] == audit.report_digest(one)
    changed = json.loads(json.dumps(one))
    changed["runs"][0]["outcome"]["metrics"]["validation:auc"] = 0.99
    assert audit.report_digest(changed) != one["digest"]


def test_reviewer_map_names_annex_iv_and_sr_11_7_and_points_at_sections():
    report = audit.build_report(list(_pure_records().values()))
    rows = report["reviewer_map"]["rows"]
    text = " ".join(" ".join(row.values()) for row in rows)
    for needle in ("Annex IV 2(d)", "2(c) computational resources", "2(g)", "(VI)",
                   "Appendix A", "Integrity"):
        assert needle in text, needle
    assert all(row["question"].endswith("?") for row in rows)
    assert "not legal advice" in report["reviewer_map"]["note"]


def test_parse_date_bound():
    assert audit.parse_date_bound("2026-11-10") == "2026-11-10T00:00:00.000000Z"
    assert audit.parse_date_bound("2026-11-10", end=True) == "2026-11-11T00:00:00.000000Z"
    assert audit.parse_date_bound("2026-11-10T12:00:00+02:00") == "2026-11-10T10:00:00.000000Z"
    assert audit.parse_date_bound(None) is None
    with pytest.raises(Exception, match="cannot read the date"):
        audit.parse_date_bound("last tuesday")


def test_plan_report_check_names_changed_missing_and_truncated_entries():
    from ledger.record import chain_hash

    bodies = {1: "a", 2: "b", 3: "c"}
    hashes, prev = {}, "0" * 64
    for seq in (1, 2, 3):
        hashes[seq] = chain_hash(prev, bodies[seq])
        prev = hashes[seq]
    current = {seq: {"run_id": "R", "kind": "run.launched", "body": bodies[seq],
                     "prev_hash": "0" * 64 if seq == 1 else hashes[seq - 1], "entry_hash": hashes[seq]} for seq in bodies}
    block = {"head": {"seq": 3, "entry_hash": hashes[3]},
             "included_entries": [{"seq": s, "run_id": "R", "kind": "run.launched", "entry_hash": hashes[s]}
                                  for s in (1, 2, 3)]}
    assert audit.plan_report_check(block, current, (3, hashes[3]), [])["ok"]
    edited = {**current, 2: {**current[2], "body": "B"}}  # body changed, hash left alone
    result = audit.plan_report_check(block, edited, (3, hashes[3]), [])
    assert result["first_bad"]["seq"] == 2 and "no longer hashes" in result["first_bad"]["problem"]
    rehashed = {**current, 2: {**current[2], "entry_hash": "f" * 64}}  # chain rewritten from entry 2 on
    assert "changed since the report" in audit.plan_report_check(block, rehashed, (3, "e" * 64), [])["first_bad"]["problem"]
    truncated = {1: current[1]}
    result = audit.plan_report_check(block, truncated, (1, hashes[1]), [])
    assert result["first_bad"]["seq"] == 2 and "deleted" in result["first_bad"]["problem"]
    grown = audit.plan_report_check(block, current, (5, "d" * 64), [], [{"seq": 5, "run_id": "R"}])
    assert grown["ok"] and grown["appended_since"] == 2 and grown["newer_facts"] == [{"seq": 5, "run_id": "R"}]


# --- from a real ledger -----------------------------------------------------------------------------------------


def test_collect_report_covers_the_runs_asked_for_their_reproductions_and_every_entry(db_url):
    book = open_ledger()
    runs = seed(book)
    report = audit.collect_report(book, [runs["gappy"].job_name])
    assert [r["run_id"] for r in report["runs"]] == [runs["gappy"].run_id, runs["repro"].run_id]
    entries = [e for e in book.entries() if e.run_id in (runs["gappy"].run_id, runs["repro"].run_id)]
    assert [(e["seq"], e["entry_hash"]) for e in report["integrity"]["included_entries"]] == \
        [(e.seq, e.entry_hash) for e in entries]
    head = book.head()
    assert report["integrity"]["ok"] is True and report["integrity"]["head"] == {"seq": head[0], "entry_hash": head[1]}
    assert report["runs"][1]["verdict"]["result"] == "EQUIVALENT"
    assert report["runs"][0]["outcome"]["model_artifact"]["tree_sha256"] == sha256_hex("tree-shared")
    # naming a reproduction brings its original; filters select by project and launch time
    assert len(audit.collect_report(book, [runs["flaky_repro"].run_id])["runs"]) == 2
    assert audit.collect_report(book, project="churn")["summary"]["runs"] == 5
    window = audit.collect_report(book, since="2026-11-12", until="2026-11-13")
    assert [r["job_name"] for r in window["runs"]] == ["churn-xgb-002", "churn-xgb-003", "churn-xgb-003-r1"]
    with pytest.raises(Exception, match="no runs"):
        audit.collect_report(book, project="nothing-here")


def _self_contained(html: str) -> None:
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html
    assert re.findall(r'\b(?:src|href)\s*=\s*["\'](?!#)', html) == []
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts == ['<script type="application/json" id="ledger-audit-integrity">']


class _Checker(HTMLParser):
    VOID = {"meta", "br", "col", "wbr", "img", "hr", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.ids: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.append(attrs["id"])
        if attrs.get("href"):
            self.links.append(attrs["href"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_html_markdown_and_json_hold_what_a_reviewer_needs(db_url, tmp_path):
    book = open_ledger()
    runs = seed(book)
    report = audit.collect_report(book, [runs["gappy"].run_id])
    html = audit.render_html(report)
    _self_contained(html)
    checker = _Checker()
    checker.feed(html)
    assert checker.stack == [] and len(checker.ids) == len(set(checker.ids))
    assert {link[1:] for link in checker.links} <= set(checker.ids)  # every internal link lands somewhere
    markdown = audit.render_markdown(report)
    data = json.loads(audit.render_json(report))
    assert data == report and audit.report_digest(data) == report["digest"]
    gappy, repro = runs["gappy"], runs["repro"]
    for text in (html, markdown):
        for needle in (gappy.run_id, gappy.created_by, gappy.pins.code.commit, gappy.pins.code.diff_sha256,
                       gappy.pins.data["train"].manifest_sha256, "ECR refused describe_images",
                       "grant ecr:DescribeImages", "EQUIVALENT", repro.run_id, report["integrity"]["head"]["entry_hash"],
                       report["digest"], "ml.m5.xlarge", "binary:logistic", "churn/train/part-0002.csv", "3Lg7wqs.2",
                       gappy.outcome.model_artifact.sha256, "Annex IV", "SR 11-7", "xgboost-cpu"):
            assert needle in text.replace("<wbr>", ""), needle
        for entry in report["integrity"]["included_entries"]:
            assert entry["entry_hash"] in text.replace("<wbr>", "")
    assert "Ledger verified intact" in html and "fully pinned" not in html.split('id="run-')[1][:400]


def test_manifest_listings_are_cut_in_html_but_whole_in_json(db_url):
    book = open_ledger()
    big = make_run(9).model_copy(deep=True)
    big.pins.data["train"] = build_channel_pin("s3://ml-data/churn/train/", "S3Prefix",
                                               s3_objects("churn/train/", "v", parts=40))
    book.append(big)
    report = audit.collect_report(book, [big.run_id])
    html = audit.render_html(report, manifest_rows=10).replace("<wbr>", "")
    assert "and 30 more objects" in html and "part-0009.csv" in html and "part-0010.csv" not in html
    assert len(next(m for m in report["appendix"]["manifests"] if m["object_count"] == 40)["objects"]) == 40


# --- the PDF, on paper ----------------------------------------------------------------------------------------

needs_poppler = pytest.mark.skipif(not shutil.which("pdftoppm") or not shutil.which("pdftotext"),
                                   reason="poppler-utils (pdftoppm, pdftotext) is not installed: apt-get install poppler-utils")


def _pdf_pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))


def _page_text(pdf: Path, page: int) -> str:
    """The text of one page in reading order (pdftotext's default mode: one column after another)."""
    return subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), str(pdf), "-"],
                          capture_output=True, text=True, check=True).stdout


def _assert_pages_are_not_blank(pdf: Path, tmp_path: Path) -> int:
    from PIL import Image, ImageStat

    pages = _pdf_pages(pdf)
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True)
    images = sorted(tmp_path.glob("page-*.png"))
    assert len(images) == pages
    for image_path in images:
        gray = Image.open(image_path).convert("L")
        inked = sum(gray.histogram()[:200]) / (gray.width * gray.height)  # pixels darker than near-white
        assert ImageStat.Stat(gray).stddev[0] > 8 and inked > 0.01, f"{image_path.name} looks blank ({inked:.4f})"
    return pages


@needs_poppler
def test_pdf_of_a_run_with_gaps_and_a_reproduction_renders_every_page(db_url, tmp_path):
    pytest.importorskip("weasyprint")
    book = open_ledger()
    runs = seed(book)
    report = audit.collect_report(book, [runs["gappy"].run_id])
    pdf = audit.save_report(report, tmp_path / "audit.pdf", "pdf", pdf_engine="weasyprint")
    assert pdf.read_bytes().startswith(b"%PDF")
    pages = _assert_pages_are_not_blank(pdf, tmp_path)
    # The page count is right: every page's footer says "Page k of N" with N the PDF's own page count, the
    # contents' page numbers land on the pages where those sections start, and the document ends on the page
    # where its last section (the appendix of environments, one page here) begins: no lost or blank pages.
    texts = {k: _page_text(pdf, k) for k in range(1, pages + 1)}
    for k, text in texts.items():
        assert f"Page {k} of {pages}" in text
    toc = dict((title.strip(), int(page)) for title, page in
               re.findall(r"^\s*(\S.*?)\s*\.{3,}\s*(\d+)\s*$", texts[1] + texts.get(2, ""), re.M))
    sections = {
        "What reviewers ask, and where this report answers": "What reviewers ask, and where this report answers",
        f"1. {runs['gappy'].job_name}": runs["gappy"].job_name,
        f"2. {runs['repro'].job_name}": runs["repro"].job_name,
        "Integrity": "Integrity",
        "Appendix A: data manifests": "Appendix A: data manifests",
        "Appendix B: environments": "Appendix B: environments",
    }
    assert set(sections) <= set(toc), toc
    starts = [toc[title] for title in sections]
    assert starts == sorted(starts) and len(set(starts)) == len(starts) and starts[0] == 2
    for title, heading in sections.items():
        top = [line.strip() for line in texts[toc[title]].splitlines() if line.strip()][:3]
        assert any(line.startswith(heading) for line in top), (title, top)
    assert "2 gaps" in texts[toc[f"1. {runs['gappy'].job_name}"]]
    assert pages == toc["Appendix B: environments"] and pages > 1
    # the report's pages follow from its content: 2 (cover, reviewers) + each run's pages + 3 (integrity, appendices)
    run_pages = (toc[f"2. {runs['repro'].job_name}"] - toc[f"1. {runs['gappy'].job_name}"],
                 toc["Integrity"] - toc[f"2. {runs['repro'].job_name}"])
    assert pages == 2 + sum(run_pages) + 3 and all(1 <= n <= 3 for n in run_pages)


@needs_poppler
@pytest.mark.skipif(not audit.find_chromium(), reason="no Chromium to print with")
def test_pdf_printed_by_chromium_from_the_same_html(ledger_home, tmp_path):
    book = open_ledger()
    runs = seed(book)
    report = audit.collect_report(book, [runs["gappy"].run_id])
    pdf = audit.save_report(report, tmp_path / "audit.pdf", "pdf", pdf_engine="chromium")
    pages = _assert_pages_are_not_blank(pdf, tmp_path)
    assert pages > 1 and f"Page {pages} of {pages}" in _page_text(pdf, pages)
    assert runs["gappy"].job_name in _page_text(pdf, 3)


# --- the command line, and checking a report later ------------------------------------------------------------


def test_audit_command_writes_each_format_and_infers_it_from_the_name(db_url, tmp_path, capsys):
    book = open_ledger()
    runs = seed(book)
    for name in ("r.html", "r.md", "r.json"):
        code, out, err = run_cli(capsys, "audit", runs["clean"].job_name, "-o", str(tmp_path / name))
        assert code == 0, err
        assert "Wrote" in out and "ledger intact" in out
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["never_reproduced"] == 1
    code, out, _ = run_cli(capsys, "audit", "report", "--project", "churn", "--format", "html", "-o",
                           str(tmp_path / "all.report"), "--json")
    assert code == 0 and json.loads(out)["runs"] == 5
    code, _, err = run_cli(capsys, "audit", "-o", str(tmp_path / "r.txt"))
    assert code == 2 and "no report format" in err
    code, _, err = run_cli(capsys, "audit", "NOPE", "-o", str(tmp_path / "x.html"))
    assert code == 1 and "no run NOPE" in err


def _rewrite_chain_from(url: str, book, seq: int, new_body: str) -> None:
    """A careful forger: change entry `seq`, recompute every hash after it and the whole Merkle tree, so that the
    log verifies again."""
    from ledger import merkle
    from ledger.record import chain_hash

    entries = book.entries()
    statements, prev = [], entries[seq - 2].entry_hash if seq > 1 else "0" * 64
    for entry in entries[seq - 1:]:
        body = new_body if entry.seq == seq else entry.body
        new_hash = chain_hash(prev, body)
        statements.append(("UPDATE entries SET body = :b, prev_hash = :p, entry_hash = :h WHERE seq = :s",
                           {"b": body, "p": prev, "h": new_hash, "s": entry.seq}))
        prev = new_hash
    tree = merkle.CompactRange()
    nodes = [row for entry in entries for row in tree.append(merkle.entry_leaf_hash(
        new_body if entry.seq == seq else entry.body))]
    statements.append("DELETE FROM tree_nodes")
    statements += [("INSERT INTO tree_nodes (level, idx, hash) VALUES (:l, :i, :h)", {"l": level, "i": idx, "h": h})
                   for level, idx, h in nodes]
    tamper(url, *statements)


def test_records_changed_after_a_report_are_caught_naming_the_entry(db_url, tmp_path, capsys):
    book = open_ledger()
    runs = seed(book)
    gappy = runs["gappy"]
    for name in ("report.json", "report.html", "report.md"):
        assert run_cli(capsys, "audit", gappy.run_id, "-o", str(tmp_path / name))[0] == 0
    assert run_cli(capsys, "audit", "check", str(tmp_path / "report.json"))[0] == 0
    # a later fact about a run in the report is not a change: it is listed
    book.annotate(gappy.run_id, {"tags": {"reviewed": "yes"}})
    code, out, _ = run_cli(capsys, "audit", "check", str(tmp_path / "report.html"))
    assert code == 0 and "1 entries recorded since" in out and "run.annotated" in out
    # the metrics of the gappy run's outcome are raised, and every later hash recomputed: `ledger verify` passes
    finished = next(e for e in book.entries(gappy.run_id) if e.kind == "run.finished")
    _rewrite_chain_from(db_url, book, finished.seq, finished.body.replace('"validation:auc":0.912', '"validation:auc":0.962'))
    book.rebuild()
    assert run_cli(capsys, "verify")[0] == 0
    for name in ("report.json", "report.html", "report.md"):
        code, out, err = run_cli(capsys, "audit", "check", str(tmp_path / name))
        assert code == 3, name
        assert f"entry {finished.seq} (run {gappy.run_id})" in err and "changed since the report" in err
    code, out, _ = run_cli(capsys, "audit", "check", str(tmp_path / "report.json"), "--json")
    result = json.loads(out)
    assert code == 3 and result["first_bad"]["seq"] == finished.seq and result["ok"] is False


def test_a_body_edited_in_place_and_a_report_edited_are_both_caught(db_url, tmp_path, capsys):
    book = open_ledger()
    runs = seed(book)
    assert run_cli(capsys, "audit", runs["clean"].run_id, "-o", str(tmp_path / "report.json"))[0] == 0
    launched = book.entries(runs["clean"].run_id)[0]
    tamper(db_url, ("UPDATE entries SET body = :b WHERE seq = :s",
                    {"b": launched.body.replace("credit-risk", "marketing"), "s": launched.seq}))
    code, _, err = run_cli(capsys, "audit", "check", str(tmp_path / "report.json"))
    assert code == 3 and f"entry {launched.seq} (run {runs['clean'].run_id})" in err and "no longer hashes" in err
    edited = tmp_path / "edited.json"
    edited.write_text((tmp_path / "report.json").read_text().replace("credit-risk", "marketing"))
    code, _, err = run_cli(capsys, "audit", "check", str(edited))
    assert code == 3 and "changed after it was made" in err


def test_a_report_of_a_log_that_does_not_verify_says_so_and_exits_3(db_url, tmp_path, capsys):
    book = open_ledger()
    runs = seed(book)
    entry = book.entries()[1]
    tamper(db_url, ("UPDATE entries SET body = :b WHERE seq = 2", {"b": entry.body.replace("churn", "chirp")}))
    code, out, err = run_cli(capsys, "audit", runs["gappy"].run_id, "-o", str(tmp_path / "r.html"))
    assert code == 3 and "did not verify" in err
    assert "Ledger verification FAILED" in (tmp_path / "r.html").read_text()


def test_the_dashboard_can_build_and_render_a_report_without_the_cli(db_url):
    book = open_ledger()
    runs = seed(book)
    html = audit.render_html(audit.build_report([book.get(runs["clean"].run_id)]))
    assert runs["clean"].job_name in html and "Not verified" in html
