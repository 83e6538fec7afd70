"""Audit reports (by hand, not in CI). Issue 8, "Speed": an HTML report of 1,000 runs in under 10 s.

Everything happens in a fresh temporary LEDGER_HOME (SQLite), removed at the end (--keep keeps it and the files).

1. Seed: --runs runs shaped like real ones (bench_store.RunFactory: a CreateTrainingJob request and the one before
   pinning, 20 hyperparameters, image/code/environment/hardware pins, this interpreter's real package list), with
   data channels of versioned objects whose manifest digests are computed by capture's own rule; every 7th run has
   an image gap. Each run's outcome is in its launched record (one entry a run); 10% of the runs are reproduced:
   a reproduction run each, and its verdict recorded with `record_verdict` (a later entry, as in real use).
2. Timed, median of --reps: `ledger audit --project P --format html -o FILE` as the library does it
   (`audit.collect_report` then `audit.save_report`), end to end; and its phases: selecting and folding the runs
   from the log, `Ledger.verify()` (chain and projections), building the report model, rendering the HTML.
   Aim: end to end < 10 s for 1,000 runs (plus their reproductions).
3. Side by side, the two ways of printing the same HTML to PDF: WeasyPrint and headless Chromium, on a report of
   --pdf-runs runs (--skip-pdf to leave out). There is no peer for the report itself: MLflow and SageMaker have
   no audit report; the nearest reading peer (mlflow.search_runs) is measured in bench_store.py.

    .venv/bin/python bench/bench_audit.py                  # 1,000 runs
    .venv/bin/python bench/bench_audit.py --runs 200 --reps 1 --skip-pdf
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def seed(book, runs: int) -> tuple[str, int]:
    from bench_store import RunFactory

    from ledger.capture.data import build_channel_pin
    from ledger.record import DataObject, Gap, Verdict

    factory = RunFactory()
    channels = {}
    for name, parts in (("train", 3), ("validation", 1)):
        prefix = f"datasets/housing/v3/{name}/"
        objects = [DataObject(key=f"{prefix}part-{n:05d}.csv", version_id=f"3HL4kqtJlcpXroDTDmJ{n}rmSpXd3dIbrHY",
                              etag=f"{n:02d}" + "9a" * 15, size=48_000_000 + n) for n in range(parts)]
        channels[name] = build_channel_pin(f"s3://ml-data-123456789012/{prefix}", "S3Prefix", objects)
    factory.pins = factory.pins.model_copy(update={"data": channels})
    records = []
    for i in range(runs):
        record = factory.record(i)
        if i % 7 == 0:
            record.pins.gaps = [Gap(what="image", why="ECR refused describe_images (AccessDenied)",
                                    fix="push the image to your own ECR repository")]
        records.append(record)
    saved = book.append_many(records)
    reproductions = []
    for i, original in enumerate(saved[:: 10]):
        again = factory.record(runs + i).model_copy(update={
            "reproduction_of": original.run_id, "job_name": f"{original.job_name}-r1"})
        reproductions.append(again)
    for reproduction in book.append_many(reproductions):
        result = ("IDENTICAL", "EQUIVALENT", "DIVERGED")[hash(reproduction.run_id) % 3]
        book.record_verdict(reproduction.run_id, Verdict(result=result, differences=[] if result == "IDENTICAL" else [
            {"what": "metric validation:rmse", "original": 3.1, "reproduction": 3.4}]))
    return saved[0].project, len(saved) + len(reproductions)


def timed(function, reps: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pdf-runs", type=int, default=20)
    parser.add_argument("--skip-pdf", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-audit-"))
    os.environ["LEDGER_HOME"] = str(home)
    for name in ("LEDGER_DB_URL", "LEDGER_MLFLOW_URI", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    try:
        from ledger import audit
        from ledger.store.ledger import open_ledger

        book = open_ledger()
        start = time.perf_counter()
        project, total = seed(book, args.runs)
        print(f"seeded {total} runs ({args.runs} + reproductions) in {time.perf_counter() - start:.1f} s; "
              f"{book.head()[0]} entries", flush=True)
        out = home / "audit.html"

        def end_to_end():
            report = audit.collect_report(book, project=project)
            audit.save_report(report, out, "html")
            return report

        rows = []
        wall, report = timed(end_to_end, args.reps)
        rows.append((f"HTML report of {report['summary']['runs']} runs, end to end", wall, "< 10 s",
                     "PASS" if wall < 10 else "FAIL"))
        run_ids = audit.select_run_ids(book, project=project)
        from ledger.store.entries import records_with_entries
        from ledger.store.query import related_run_ids

        included = related_run_ids(book, run_ids)
        rows.append(("  select runs and their reproductions",
                     timed(lambda: audit.select_run_ids(book, project=project), args.reps)[0], "", ""))
        fold_time, (records, entries) = timed(lambda: records_with_entries(book, included), args.reps)
        rows.append((f"  read {len(entries)} entries and fold them into records", fold_time, "", ""))
        verify_time, verified = timed(book.verify, args.reps)
        rows.append(("  Ledger.verify() (chain and projections)", verify_time, "", ""))
        build_time, model = timed(lambda: audit.build_report(records, verify=verified, entries=entries), args.reps)
        rows.append(("  build the report model (pure)", build_time, "", ""))
        render_time, html = timed(lambda: audit.render_html(model), args.reps)
        rows.append((f"  render the HTML ({len(html) / 1e6:.1f} MB)", render_time, "", ""))
        json_time, text = timed(lambda: audit.render_json(model), args.reps)
        rows.append((f"  (for reference) render the JSON ({len(text) / 1e6:.1f} MB)", json_time, "", ""))

        if not args.skip_pdf:
            few = audit.build_report(records[: args.pdf_runs], verify=verified,
                                     entries=[e for e in entries if e["run_id"] in {r.run_id for r in
                                                                                   records[: args.pdf_runs]}])
            small_html = audit.render_html(few)
            for engine in ("weasyprint", "chromium"):
                try:
                    seconds, pdf = timed(lambda engine=engine: audit.render_pdf(small_html, engine), 1)
                except Exception as error:  # noqa: BLE001 - a missing engine is a row, not a crash
                    rows.append((f"PDF of {len(few['runs'])} runs with {engine}", float("nan"), "", str(error)[:60]))
                    continue
                rows.append((f"PDF of {len(few['runs'])} runs with {engine} ({len(pdf) / 1e6:.1f} MB)", seconds,
                             "printed", ""))

        width = max(len(r[0]) for r in rows)
        print(f"\n{'figure'.ljust(width)}  {'seconds':>8}  aim")
        for name, seconds, aim, verdict in rows:
            print(f"{name.ljust(width)}  {seconds:8.3f}  {aim} {verdict}".rstrip())
        if args.keep:
            print(f"\nkept {home} (report: {out})")
        return 0 if wall < 10 else 1
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
