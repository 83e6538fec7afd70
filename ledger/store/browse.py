"""Read-only queries the dashboard needs beyond `Ledger.runs()` and `Ledger.get()`: lineage by S3 object, the run
ids a `--where` condition selects, the tags of runs, and single log entries by seq or hash.

Each function takes the ledger handle (`book`) and returns plain Python data: no ORM object leaves `ledger.store`.
They run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import text

from ledger.store import query
from ledger.store.engine import chunks, in_clause
from ledger.store.entries import entries_by_seq

# --- filters --------------------------------------------------------------------------------------------------


def run_ids_where(book, where: str) -> set[str]:
    """The ids of the runs a `--where` condition selects (the same language as `ledger runs --where`)."""
    clauses, binds = query.build_run_filters(book.engine.dialect.name, where=where)
    sql = "SELECT runs.run_id FROM runs"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    with book._reading() as conn:
        return {row[0] for row in conn.execute(text(sql), binds)}


@dataclass
class TagIndex:
    """Tags of every run as one searchable text a run ("key=value key=value"), built from the log incrementally."""

    last_seq: int = 0
    tags: dict[str, dict[str, str]] = field(default_factory=dict)

    def text_of(self, run_id: str) -> str:
        return " ".join(f"{k}={v}" for k, v in self.tags.get(run_id, {}).items())

    def search(self, needle: str) -> set[str]:
        needle = needle.strip().lower()
        if not needle:
            return set()
        return {run_id for run_id, tags in self.tags.items()
                if any(needle in f"{k}={v}".lower() for k, v in tags.items())}


def _json(value):
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return None


def _tags_of(request_tags, annotated) -> dict[str, str]:
    tags: dict[str, str] = {}
    request_tags, annotated = _json(request_tags), _json(annotated)
    for tag in request_tags if isinstance(request_tags, list) else []:
        if isinstance(tag, dict) and "Key" in tag:
            tags[str(tag["Key"])] = str(tag.get("Value", ""))
    if isinstance(annotated, dict):
        tags.update({str(k): str(v) for k, v in annotated.items()})
    return tags


def update_tag_index(book, index: TagIndex) -> TagIndex:
    """Add the tags of entries recorded after `index.last_seq`: the request's `Tags` of each run.launched entry
    and the `tags` of run.annotated entries. The database extracts them, so large bodies never reach Python."""
    with book._reading() as conn:
        return _update_tag_index(conn, index)


def _update_tag_index(conn, index: TagIndex) -> TagIndex:
    if conn.dialect.name == "postgresql":
        request_tags = "(body::jsonb #>> '{payload,request,Tags}')"
        annotated = "(body::jsonb #>> '{payload,tags}')"
    elif conn.dialect.name == "sqlite":
        request_tags = "json_extract(body, '$.payload.request.Tags')"
        annotated = "json_extract(body, '$.payload.tags')"
    else:  # pragma: no cover - the ledger runs on SQLite and PostgreSQL only
        raise NotImplementedError(conn.dialect.name)
    head = conn.execute(text("SELECT max(seq) FROM entries")).scalar() or 0  # first: a later entry waits its turn
    rows = conn.execute(
        text(f"SELECT seq, run_id, kind, CASE WHEN kind = 'run.launched' THEN {request_tags} END, "
             f"CASE WHEN kind = 'run.annotated' THEN {annotated} END FROM entries "
             "WHERE seq > :after AND seq <= :head AND kind IN ('run.launched', 'run.annotated') ORDER BY seq"),
        {"after": index.last_seq, "head": head},
    )
    for _seq, run_id, kind, launched_tags, annotated_tags in rows:
        tags = _tags_of(launched_tags, annotated_tags)
        if kind == "run.launched":
            index.tags[run_id] = tags
        elif tags:
            index.tags.setdefault(run_id, {}).update(tags)
    index.last_seq = max(index.last_seq, head)  # only once every entry up to it is in
    return index


# --- the log --------------------------------------------------------------------------------------------------


def entry(book, seq: int) -> dict | None:
    """One log entry by its seq, as stored (the body as text), or None."""
    found = entries_by_seq(book, [int(seq)]).get(int(seq))
    return {"seq": int(seq), **found} if found else None


def seq_of_hash(book, entry_hash: str) -> int | None:
    """The seq of the entry whose hash is `entry_hash` (an anchor's head), or None if the log has no such entry."""
    with book._reading() as conn:
        row = conn.execute(text("SELECT seq FROM entries WHERE entry_hash = :h"),
                           {"h": entry_hash.strip().lower()}).first()
    return row[0] if row else None


# --- the runs table, column by column -------------------------------------------------------------------------

RUNS_TABLE_COLUMNS = (
    "run_id", "project", "job_name", "backend", "status", "created_at", "created_by", "gap_count",
    "reproduction_of", "verdict", "model_uri",
)


def _json_value(dialect: str, column: str, key: str, numeric: bool) -> str:
    """SQL for one top-level value of a JSON text column (params_json, metrics_json), parsed by the database."""
    if dialect == "postgresql":
        quoted = key.replace("'", "''")
        value = f"({column}::jsonb ->> '{quoted}')"
        return f"CAST({value} AS DOUBLE PRECISION)" if numeric else value
    path = '$."' + key.replace('"', '\\"').replace("'", "''") + '"'
    return f"json_extract({column}, '{path}')"


def _keys(conn, table: str) -> list[str]:
    return [row[0] for row in conn.execute(text(f"SELECT DISTINCT key FROM {table} ORDER BY key"))]


def runs_table(book, run_ids: list[str] | None = None, limit: int | None = None, offset: int = 0,
               with_params: bool = False):
    """Runs with their final metrics as `metrics.*` columns, newest first (created_at, then run_id), built column
    by column: every run, the runs named by `run_ids`, or one page (`limit`, `offset`).

    The params are left out unless `with_params`: with 20 of them a run they are most of the bytes, and the runs
    table shows a few of them for one page at a time (`params_of`), sorts by one at a time (`param_column`), and
    filters by them in SQL (`run_ids_where`). This keeps loading 100,000 runs under a second.
    """
    import pandas as pd

    with book._reading() as conn:
        metrics = _keys(conn, "metrics")
        select = list(RUNS_TABLE_COLUMNS) + [_json_value(conn.dialect.name, "metrics_json", m, True) for m in metrics]
        if with_params:
            select.append("params_json")
        sql = f"SELECT {', '.join(select)} FROM runs"
        rows: list = []
        if run_ids is not None:
            for chunk in chunks(run_ids):
                marks, binds = in_clause("r", chunk)
                rows += conn.execute(text(f"{sql} WHERE run_id IN ({marks})"), binds).all()
        elif limit is not None:
            rows = conn.execute(text(f"{sql} ORDER BY created_at DESC, run_id DESC LIMIT :limit OFFSET :offset"),
                                {"limit": int(limit), "offset": int(offset)}).all()
        else:
            rows = conn.execute(text(sql)).all()
    names = list(RUNS_TABLE_COLUMNS) + [f"metrics.{m}" for m in metrics]
    if not rows:
        return pd.DataFrame({name: pd.Series(dtype="float64" if name.startswith("metrics.") else "object")
                             for name in names})
    columns = list(zip(*rows))
    frame = pd.DataFrame({name: (pd.Series(values, dtype="float64") if name.startswith("metrics.") else
                                 pd.Series(values, dtype="object")) for name, values in zip(names, columns)})
    frame["created_at"] = pd.to_datetime(frame["created_at"], format="ISO8601", utc=True)
    frame["gap_count"] = frame["gap_count"].astype("int64")
    if with_params:
        params = pd.DataFrame.from_records([json.loads(p) for p in columns[-1]])
        frame = pd.concat([frame, params.add_prefix("params.")], axis=1)
    if limit is None:  # a page comes ordered from the database; the rest is ordered here, faster than an index walk
        frame = frame.sort_values(["created_at", "run_id"], ascending=False, kind="stable", ignore_index=True)
    return frame


@dataclass
class Facets:
    """What the runs filters offer, from the indexes alone (no scan of the runs)."""

    total: int
    projects: list[str]
    statuses: list[str]
    first_created: str | None
    last_created: str | None
    metric_keys: list[str]
    param_keys: list[str]


def facets(book) -> Facets:
    with book._reading() as conn:
        total = conn.execute(text("SELECT count(*) FROM runs")).scalar() or 0
        projects = [r[0] for r in conn.execute(text("SELECT DISTINCT project FROM runs ORDER BY project"))]
        statuses = sorted({r[0] or "unknown" for r in conn.execute(text("SELECT DISTINCT status FROM runs"))})
        first, last = conn.execute(text("SELECT min(created_at), max(created_at) FROM runs")).first()
        return Facets(total, projects, statuses, first, last, _keys(conn, "metrics"), _keys(conn, "params"))


def param_column(book, key: str) -> dict[str, str]:
    """One param of every run that has it: {run_id: value}."""
    value = _json_value(book.engine.dialect.name, "params_json", key, False)
    with book._reading() as conn:
        rows = conn.execute(text(f"SELECT run_id, {value} FROM runs"))
        return {run_id: v for run_id, v in rows if v is not None}


def params_of(book, run_ids: list[str]) -> dict[str, dict[str, str]]:
    """The params of these runs: {run_id: {name: value}}."""
    found: dict[str, dict[str, str]] = {}
    with book._reading() as conn:
        for chunk in chunks(run_ids):
            marks, binds = in_clause("r", chunk)
            rows = conn.execute(text(f"SELECT run_id, params_json FROM runs WHERE run_id IN ({marks})"), binds)
            found.update({run_id: json.loads(params) for run_id, params in rows})
    return found


def newest_params(book, limit: int = 2_000) -> list[dict[str, str]]:
    """The params of the newest runs: enough to see which params vary."""
    with book._reading() as conn:
        rows = conn.execute(text("SELECT params_json FROM runs ORDER BY run_id DESC LIMIT :n"), {"n": int(limit)})
        return [json.loads(row[0]) for row in rows]
