"""The dashboard at 100,000 runs, beside MLflow (by hand, not in CI). Issue 7, "Speed".

Everything happens in a fresh temporary LEDGER_HOME, removed at the end (--keep keeps it; --home reuses a ledger).

1. Load: `Ledger.append_many` of --runs runs in batches of 1,000, made by bench_store.RunFactory (20 params,
   3 metrics, a real request, image/code/data/environment/hardware pins). Not a figure of this bench.
2. The Runs page's first render: a new AppTest session of dashboard/app.py (Runs is the default page) with the
   Streamlit caches emptied, timed around `AppTest.run()`: the script from its first line to its last element,
   i.e. opening the ledger, the head query, the filter facets (from indexes), one page of 50 runs newest first
   with its params and badges, styled and sent. The Python modules are imported beforehand (a server has started
   before a user opens a page). Aim: < 2 s.
   Also timed, in the same session: the first view that filters or sorts (it loads every run's row and metrics
   once per ledger head, `build_runs_data`, also timed alone), later filter and sort changes, and a text search
   over job names and tags (the first one builds the tag index from the log).
3. A compare of 10 runs: in a session that has shown the Runs page, the Compare page opened with 10 run ids
   (what the Compare button does), the record cache emptied: 10 records read and folded from the log, three
   side-by-side tables with highlights, metric bars, metric series, parallel coordinates. Aim: < 1 s.
4. The peer: MLflow's own migrations create a SQLite store and bench_store.fill_mlflow fills its tables with the
   same runs by bulk SQL (and checks search_runs returns them with the same params and metrics). Timed:
   `mlflow.search_runs` of every run into a DataFrame (what the ledger's runs table loads), and of the first 100
   (what MLflow's UI asks for its first page of runs).

    .venv/bin/python bench/bench_dashboard.py                  # 100,000 runs (about 10 minutes)
    .venv/bin/python bench/bench_dashboard.py --runs 10000     # a smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_store import RunFactory, fill_mlflow


def say(line: str) -> None:
    print(line, flush=True)


def timed(fn):
    began = time.perf_counter()
    value = fn()
    return time.perf_counter() - began, value


# --- 1. the ledger --------------------------------------------------------------------------------------------


def load(book, runs: int, batch: int) -> None:
    factory = RunFactory()
    began = time.perf_counter()
    for start in range(0, runs, batch):
        book.append_many([factory.record(i) for i in range(start, min(start + batch, runs))])
        done = min(start + batch, runs)
        if done % max(batch, runs // 10) == 0 or done == runs:
            say(f"  appended {done:>9,} runs ({done / (time.perf_counter() - began):,.0f} runs/s)")


# --- 2 and 3. the dashboard -----------------------------------------------------------------------------------


def quiet_streamlit() -> None:
    warnings.filterwarnings("ignore")
    for name in ("streamlit", "streamlit.runtime.scriptrunner_utils.script_run_context",
                 "streamlit.runtime.caching.cache_data_api"):
        logging.getLogger(name).setLevel(logging.ERROR)


def settle() -> None:
    """Wait for the tag index the Runs page starts building in the background after it is drawn, so that each
    timing below measures its own work only."""
    import threading

    for thread in threading.enumerate():
        if thread.name == "ledger-dashboard-tags":
            thread.join()


def clear_caches() -> None:
    import streamlit as st

    settle()
    st.cache_data.clear()
    st.cache_resource.clear()


def new_app():
    from streamlit.testing.v1 import AppTest

    from ledger.dashboard import APP_PATH

    return AppTest.from_file(str(APP_PATH), default_timeout=120)


def check_runs_page(at, runs: int) -> None:
    assert not at.exception, [e.value for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    assert f"of {runs:,} matching runs" in captions, captions
    table = next(df for df in at.dataframe if df.key and df.key.startswith("runs_table_")).value
    assert len(table) == 50 and table["metrics.validation:rmse"].notna().all(), table.head()


def bench_runs_page(runs: int, reps: int) -> dict[str, float]:
    from ledger.dashboard import data

    clear_caches()
    at = new_app()
    cold_process, _ = timed(at.run)  # imports the pages' modules too: what the server pays once
    check_runs_page(at, runs)
    say(f"  first session of this process (modules imported on the way): {cold_process:.2f} s")

    firsts = []
    for _ in range(reps):
        clear_caches()
        at = new_app()
        seconds, _ = timed(at.run)
        check_runs_page(at, runs)
        firsts.append(seconds)
    first = statistics.median(firsts)
    say(f"  Runs page, first render (caches empty), median of {reps}: {first:.3f} s  "
        f"[{', '.join(f'{s:.2f}' for s in firsts)}]")

    filtered = []
    for _ in range(reps):  # a sort the database has no index for: the whole runs table is loaded, then cached
        settle()
        data._runs_data.clear()
        at.selectbox(key="sort_by").set_value("metrics.validation:rmse")
        seconds, _ = timed(at.run)
        assert not at.exception
        filtered.append(seconds)
        at.selectbox(key="sort_by").set_value("created_at").run()
    first_filtered = statistics.median(filtered)
    say(f"  first sorted/filtered view (the whole runs table loaded), median of {reps}: {first_filtered:.3f} s")

    warm = []
    for n in range(reps):  # the same session, runs table cached: a filter, a sort, a page
        settle()
        at.text_input(key="f_where").set_value(f"params.max_depth = '{n % 10 + 1}'")
        at.selectbox(key="sort_by").set_value("metrics.validation:rmse" if n % 2 else "metrics.train:rmse")
        seconds, _ = timed(at.run)
        assert not at.exception
        warm.append(seconds)
    rerun = statistics.median(warm)
    say(f"  later filter and sort changes (condition in SQL, sort of ~10,000 rows), median of {reps}: {rerun:.3f} s")

    at.text_input(key="f_where").set_value("")
    at.text_input(key="f_text").set_value("team=pricing")
    settle()
    data._tag_index.clear()  # the worst case: a search typed before the background indexing is done
    search_cold, _ = timed(at.run)
    assert not at.exception and f"of {runs:,} matching runs" in " ".join(c.value for c in at.caption)
    at.text_input(key="f_text").set_value("0004242")
    search_warm, _ = timed(at.run)
    assert not at.exception and "of 1 matching runs" in " ".join(c.value for c in at.caption)
    say(f"  text search over job names and tags: first (indexes every run's tags from the log) {search_cold:.2f} s, "
        f"later {search_warm:.2f} s")

    book = data.open_book()
    seq = book.head()[0]
    loads = [timed(lambda: data.build_runs_data(book, seq))[0] for _ in range(reps)]
    say(f"  of which the data function, build_runs_data (SQL + DataFrame), median of {reps}: "
        f"{statistics.median(loads):.3f} s")
    return {"first": first, "rerun": rerun, "data": statistics.median(loads), "process": cold_process,
            "first_filtered": first_filtered, "search_cold": search_cold, "search_warm": search_warm}


def bench_compare(book, reps: int) -> dict[str, float]:
    from ledger.dashboard import data

    ids = book.runs(limit=10)["run_id"].tolist()
    assert len(ids) == 10
    at = new_app()
    at.run()  # the Runs page, as a user who selected runs there
    settle()

    def open_compare():
        data._record.clear()  # records read and folded afresh, every time
        at.query_params = {"runs": ",".join(ids)}
        at.switch_page("page_compare.py")
        return at.run()

    times = []
    for _ in range(reps):
        seconds, _ = timed(open_compare)
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.tabs[1].dataframe[0].value.columns) == 11  # differs + 10 runs
        assert len(at.get("plotly_chart")) >= 2  # bars and parallel coordinates (these runs have no series)
        times.append(seconds)
        at.switch_page("page_runs.py").run()
    warm = statistics.median(times)
    say(f"  Compare of 10 runs (records read afresh, runs table cached), median of {reps}: {warm:.3f} s  "
        f"[{', '.join(f'{s:.2f}' for s in times)}]")

    clear_caches()
    at = new_app()
    at.query_params = {"runs": ",".join(ids)}
    at.run()
    settle()
    clear_caches()
    seconds, _ = timed(lambda: at.switch_page("page_compare.py").run())
    assert not at.exception
    say(f"  Compare of 10 runs opened in a new session with every cache empty: {seconds:.3f} s")
    return {"compare": warm, "compare_cold": seconds}


# --- 4. MLflow ------------------------------------------------------------------------------------------------


def bench_mlflow(tmp: Path, ledger_db: Path, runs: int) -> dict[str, float]:
    seconds, (experiment_id, check_frame, search_runs, count) = timed(
        lambda: fill_mlflow(ledger_db, tmp / "mlflow.db"))
    assert count == runs, (count, runs)
    say(f"  MLflow store filled with {count:,} runs by bulk SQL in {seconds:.0f} s (not measured)")
    first_page = [timed(lambda: search_runs(experiment_ids=[experiment_id], max_results=100))[0] for _ in range(3)]
    say(f"  mlflow.search_runs(max_results=100), MLflow UI's first page, median of 3: "
        f"{statistics.median(first_page):.3f} s")
    seconds, frame = timed(lambda: search_runs(experiment_ids=[experiment_id], max_results=runs + 1000))
    check_frame(frame, runs)
    say(f"  mlflow.search_runs() of all {runs:,} runs into a DataFrame: {seconds:.1f} s")
    return {"mlflow_all": seconds, "mlflow_page": statistics.median(first_page)}


# --- main -----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--home", type=Path, help="reuse this LEDGER_HOME if its ledger already has --runs runs")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary LEDGER_HOME")
    args = parser.parse_args(argv)

    quiet_streamlit()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    home = args.home or tmp / "home"
    for name in ("LEDGER_DB_URL", "LEDGER_MLFLOW_URI", "MLFLOW_TRACKING_URI"):
        os.environ.pop(name, None)
    os.environ["LEDGER_HOME"] = str(home)
    began = time.perf_counter()
    try:
        from ledger import open_ledger

        book = open_ledger()
        have = 0
        if args.home:
            from ledger.store import browse

            have = browse.facets(book).total
        say(f"bench_dashboard: {args.runs:,} runs in {home}; python {sys.version.split()[0]}, {os.cpu_count()} cores")
        if have != args.runs:
            if have:
                raise SystemExit(f"{home} holds {have:,} runs, not {args.runs:,}")
            say("\n1. loading the ledger (append_many, batches of 1,000; not a figure)")
            load(book, args.runs, args.batch)

        # the server has imported its modules before anyone opens a page
        import plotly.graph_objects
        import plotly.subplots  # noqa: F401
        import streamlit.testing.v1  # noqa: F401

        import ledger.dashboard.data  # noqa: F401

        say(f"\n2. the Runs page over {args.runs:,} runs")
        page = bench_runs_page(args.runs, args.reps)
        say("\n3. Compare, 10 runs")
        compare = bench_compare(book, args.reps)
        peer = {}
        if not args.skip_mlflow:
            say(f"\n4. the peer: mlflow.search_runs over the same {args.runs:,} runs")
            peer = bench_mlflow(tmp, home / "ledger.db", args.runs)
        book.engine.dispose()
    finally:
        if args.keep or args.home:
            say(f"kept {home}")
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        ("Runs page, first render (s)", f"{page['first']:.2f}", "< 2", page["first"] < 2),
        ("Runs page, first sorted/filtered view (s)", f"{page['first_filtered']:.2f}", "", None),
        ("  of which the whole runs table load (s)", f"{page['data']:.2f}", "", None),
        ("Runs page, later filter/sort changes (s)", f"{page['rerun']:.2f}", "", None),
        ("Runs page, first text search (tag index) (s)", f"{page['search_cold']:.2f}", "", None),
        ("Runs page, later text searches (s)", f"{page['search_warm']:.2f}", "", None),
        ("Compare, 10 runs (s)", f"{compare['compare']:.2f}", "< 1", compare["compare"] < 1),
        ("Compare, 10 runs, every cache empty (s)", f"{compare['compare_cold']:.2f}", "", None),
    ]
    if peer:
        rows += [("peer: mlflow.search_runs, all runs (s)", f"{peer['mlflow_all']:.1f}", "", None),
                 ("peer: mlflow.search_runs, first 100 (s)", f"{peer['mlflow_page']:.2f}", "", None)]
    say("")
    width = max(len(r[0]) for r in rows)
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("pass" if ok else "FAIL")
        say(f"{name:<{width}}  {value:>8}  {target:>4}  {verdict}")
    if peer:
        say(f"* MLflow all runs / dashboard first render: {peer['mlflow_all'] / page['first']:.0f}x")
    say(f"* {args.runs:,} runs, 20 params and 3 metrics each; whole bench {time.perf_counter() - began:.0f} s")
    return 0 if page["first"] < 2 and compare["compare"] < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
