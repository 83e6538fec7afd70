"""The dashboard's query layer: the library's read API (and ledger.store.browse) behind Streamlit caches. The
dashboard is an edge: it opens the ledger once per server process (`open_book()`, cached), and every query goes
through that handle.

Every cache key carries the ledger head (seq, and hash where it matters), so a new entry (a run, an outcome, a
verdict) invalidates what it changes, while every rerun in between (a filter, a sort, a page) reuses it:
- the filter facets and each page of the unfiltered table come from indexed queries (the Runs page's first render
  never reads every run);
- the whole runs table (every run's row and final metrics) is a DataFrame loaded with st.cache_data once per head,
  the first time a filter or a sort needs it;
- records, params of a page, `--where` results and the tag index likewise. Verification is never cached.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st

from ledger.config import load_settings
from ledger.dashboard import views
from ledger.errors import LedgerError
from ledger.record import RunRecord
from ledger.store import browse
from ledger.store.integrity import VerifyReport
from ledger.store.ledger import Ledger, open_ledger

log = logging.getLogger("ledger.dashboard")


@dataclass
class Facets:
    """What the Runs page's widgets offer, read from the indexes (no scan of the runs)."""

    head_seq: int
    total: int
    projects: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    metric_columns: list[str] = field(default_factory=list)
    param_columns: list[str] = field(default_factory=list)
    varying_params: list[str] = field(default_factory=list)
    first_day: object = None
    last_day: object = None


@dataclass
class RunsData:
    """The whole runs table of one ledger head (params aside), ready to filter and sort."""

    frame: pd.DataFrame
    head_seq: int

    @property
    def total(self) -> int:
        return len(self.frame)


# --- the ledger -----------------------------------------------------------------------------------------------


def db_url() -> str:
    return load_settings().db_url


@st.cache_resource(show_spinner=False)
def _open_book(url: str) -> Ledger:
    return open_ledger(url)


def open_book() -> Ledger:
    """The ledger at LEDGER_DB_URL (or in LEDGER_HOME), opened once per database per server process."""
    return _open_book(db_url())


def head() -> tuple[int, str]:
    return open_book().head()


def mlflow_uri() -> str:
    return load_settings().mlflow_uri


# --- runs -----------------------------------------------------------------------------------------------------


def build_facets(book: Ledger, seq: int) -> Facets:
    found = browse.facets(book)
    recent = pd.DataFrame.from_records(browse.newest_params(book)).add_prefix("params.")
    day = lambda text: pd.Timestamp(text).date() if text else None
    return Facets(head_seq=seq, total=found.total, projects=found.projects, statuses=found.statuses,
                  metric_columns=[f"metrics.{k}" for k in found.metric_keys],
                  param_columns=[f"params.{k}" for k in found.param_keys],
                  varying_params=views.varying_params(recent) if len(recent) else [],
                  first_day=day(found.first_created), last_day=day(found.last_created))


@st.cache_data(max_entries=4, show_spinner=False)
def _facets(url: str, seq: int, head_hash: str) -> Facets:
    return build_facets(_open_book(url), seq)


def facets() -> Facets:
    seq, head_hash = head()
    return _facets(db_url(), seq, head_hash)


def build_runs_data(book: Ledger, seq: int) -> RunsData:
    """Every run (params aside, see `browse.runs_table`), prepared for filtering."""
    return RunsData(frame=views.prepare_runs(browse.runs_table(book)), head_seq=seq)


@st.cache_data(max_entries=2, show_spinner="Loading every run for this filter…")
def _runs_data(url: str, seq: int, head_hash: str) -> RunsData:
    return build_runs_data(_open_book(url), seq)


def runs_data() -> RunsData:
    """The whole runs table, loaded once per ledger head: for filters and sorts the database does not index."""
    seq, head_hash = head()
    return _runs_data(db_url(), seq, head_hash)


@st.cache_data(max_entries=32, show_spinner=False)
def _page_rows(url: str, seq: int, page: int, page_size: int) -> pd.DataFrame:
    return browse.runs_table(_open_book(url), limit=page_size, offset=(page - 1) * page_size)


def page_rows(page: int, page_size: int, seq: int) -> pd.DataFrame:
    """One page of the newest runs, straight from the database: the unfiltered table needs nothing more."""
    return _page_rows(db_url(), seq, page, page_size)


@st.cache_data(max_entries=32, show_spinner=False)
def _runs_rows(url: str, seq: int, run_ids: tuple[str, ...]) -> pd.DataFrame:
    return browse.runs_table(_open_book(url), run_ids=list(run_ids), with_params=True)


def runs_rows(run_ids: list[str], seq: int) -> pd.DataFrame:
    """These runs' rows with every param and metric (compare, plots)."""
    return _runs_rows(db_url(), seq, tuple(run_ids))


@st.cache_data(max_entries=16, show_spinner="Reading that param of every run…")
def _param_column(url: str, seq: int, key: str) -> dict[str, str]:
    return browse.param_column(_open_book(url), key)


def param_values(frame: pd.DataFrame, column: str, seq: int) -> pd.Series:
    """A `params.NAME` column for the rows of `frame` (the runs table leaves params out until asked)."""
    values = _param_column(db_url(), seq, column.removeprefix("params."))
    return frame["run_id"].map(values)


@st.cache_data(max_entries=64, show_spinner=False)
def _params_of(url: str, seq: int, run_ids: tuple[str, ...]) -> dict[str, dict[str, str]]:
    return browse.params_of(_open_book(url), list(run_ids))


def params_of(run_ids: list[str], seq: int) -> dict[str, dict[str, str]]:
    return _params_of(db_url(), seq, tuple(run_ids))


@st.cache_data(max_entries=64, show_spinner=False)
def _where_ids(url: str, seq: int, where: str) -> frozenset[str]:
    return frozenset(browse.run_ids_where(_open_book(url), where))


def where_ids(where: str, seq: int) -> frozenset[str]:
    """The runs a `--where` condition selects (raises UsageError when it cannot be read)."""
    return _where_ids(db_url(), seq, where.strip())


_tag_lock = threading.Lock()


@st.cache_resource(show_spinner=False)
def _tag_index(url: str) -> browse.TagIndex:
    return browse.TagIndex()


def _extend_tag_index(index: browse.TagIndex, url: str) -> None:
    """Read the entries recorded since the index was last extended. The caller holds `_tag_lock`."""
    browse.update_tag_index(_open_book(url), index)


def warm_tag_index(seq: int) -> None:
    """Start indexing the tags in the background, so that the first text search seldom waits for it."""
    url = db_url()
    index = _tag_index(url)
    if index.last_seq >= seq or _tag_lock.locked():
        return

    def work() -> None:
        try:
            with _tag_lock:
                _extend_tag_index(index, url)
        except Exception:
            log.warning("indexing tags in the background failed", exc_info=True)

    threading.Thread(target=work, name="ledger-dashboard-tags", daemon=True).start()


def tag_hits(needle: str, seq: int) -> set[str]:
    """Runs whose tags contain `needle`. The tag index is built once (in the background after the Runs page
    first shows, or here) and then only extended with the entries recorded since."""
    if not needle.strip():
        return set()
    url = db_url()
    index = _tag_index(url)
    with _tag_lock:  # waits for a background build; no build changes the index while it is searched
        if index.last_seq < seq:
            with st.spinner("Indexing the tags of every run (once; later only new entries are read)…"):
                _extend_tag_index(index, url)
        return index.search(needle)


# --- records --------------------------------------------------------------------------------------------------


@st.cache_data(max_entries=256, show_spinner=False)
def _record(url: str, seq: int, run_id: str) -> RunRecord:
    return _open_book(url).get(run_id)


def resolve(run_ref: str) -> str:
    return open_book().resolve(run_ref)


def record(run_ref: str) -> RunRecord:
    """One run's current record, by id, unique id prefix or job name."""
    run_id = resolve(run_ref)
    return _record(db_url(), head()[0], run_id)


def resolve_many(refs: list[str]) -> tuple[list[str], list[str]]:
    """The run ids the refs name (each once, in order), and a message for each ref that names none."""
    book = open_book()
    ids, problems = [], []
    for ref in refs:
        try:
            run_id = book.resolve(ref)
        except LedgerError as error:
            problems.append(f"{ref}: {error.message}")
            continue
        if run_id not in ids:
            ids.append(run_id)
    return ids, problems


def records_of(run_ids: list[str]) -> list[RunRecord]:
    seq = head()[0]
    return [_record(db_url(), seq, run_id) for run_id in run_ids]


def reproductions(run_id: str) -> list[RunRecord]:
    found = open_book().reproductions_of(run_id)
    seq = head()[0]
    return [_record(db_url(), seq, r) for r in found]


def newest_runs(limit: int = 200) -> pd.DataFrame:
    return page_rows(1, limit, head()[0])[["run_id", "job_name"]]


# --- lineage and integrity -------------------------------------------------------------------------------------


LINEAGE_COLUMNS = (
    "run_id", "channel", "bucket", "key", "version_id", "etag", "size", "job_name", "project", "status",
    "created_at", "reproduction_of", "verdict", "model_uri", "model_tree_sha256",
)


def lineage(uri: str, version_id: str | None, limit: int = 5_000) -> tuple[pd.DataFrame, list[dict]]:
    """One row an object read, newest run first (`ledger lineage` answers the same question), and for one object
    the versions runs read."""
    from ledger.store.lineage import runs_that_read

    found = runs_that_read(open_book(), uri, version_id or None)
    rows = [{**run, "bucket": found["bucket"], "model_uri": run["model"]["uri"],
             "model_tree_sha256": run["model"]["tree_sha256"], **read}
            for run in reversed(found["runs"]) for read in run["read"]]
    return pd.DataFrame(rows[:limit], columns=list(LINEAGE_COLUMNS)), found["versions"]


def verify(check_projections: bool) -> VerifyReport:
    return open_book().verify(check_projections=check_projections)


def entry(seq: int) -> dict | None:
    return browse.entry(open_book(), seq)


def seq_of_hash(entry_hash: str) -> int | None:
    return browse.seq_of_hash(open_book(), entry_hash)


def audit_available() -> bool:
    """Whether this install has `ledger.audit` (the audit report renderer)."""
    import importlib.util

    return importlib.util.find_spec("ledger.audit") is not None


def audit_html(url: str, run_id: str) -> bytes:
    """The audit report of one run (and its reproductions) as self-contained HTML. It verifies the whole log,
    so the Run page calls it only when the download button is pressed."""
    from ledger import audit

    return audit.render_html(audit.collect_report(_open_book(url), [run_id])).encode("utf-8")


# --- page helpers ---------------------------------------------------------------------------------------------


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Show what went wrong and what to do, never a traceback: a LedgerError's message and hint; anything else
    as one line, its traceback in the server's log."""
    try:
        yield
    except LedgerError as error:
        st.error(error.message, icon=":material/warning:")
        if error.hint:
            st.info(f"Next: {error.hint}")
    except Exception as error:
        log.exception("dashboard page failed")
        st.error(f"Something went wrong: {type(error).__name__}: {error}", icon=":material/warning:")
        st.caption("The details are in the log of the `ledger dashboard` process.")


def empty_state() -> None:
    st.info("No runs recorded yet.", icon=":material/inbox:")
    st.markdown("Record some, then come back:")
    st.code("ledger demo", language="bash")
    st.caption(f"Ledger: `{open_book().where}`")
