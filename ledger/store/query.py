"""Queries over the projections: the runs DataFrame and the `--where` filter language.

The filter language is MLflow's search syntax, cut down: conditions joined by `and` (outside quotes), each
`params.NAME OP VALUE`, `metrics.NAME OP VALUE` or `COLUMN OP VALUE` (project, status, job_name, backend,
verdict, created_by, gap_count), OP one of = != < <= > >=, VALUE a number or a quoted string.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import text

from ledger.errors import UsageError
from ledger.store.engine import chunks, in_clause

RUN_FRAME_COLUMNS = (
    "run_id", "project", "job_name", "backend", "status", "created_at", "created_by", "image_digest",
    "code_commit", "gap_count", "reproduction_of", "verdict", "model_uri", "model_tree_sha256",
)
FILTERABLE_COLUMNS = {"project", "status", "job_name", "backend", "verdict", "created_by", "gap_count", "run_id",
                      "reproduction_of"}
NUMERIC_COLUMNS = {"gap_count"}
PARAM_PREFIX_CHARS = 100  # params are indexed by key and this many characters of the value (alembic 0004)
OPERATORS = ("<=", ">=", "!=", "=", "<", ">")

_CONDITION = re.compile(
    r"""\s*(?P<name>[A-Za-z_][\w.\-/:]*)\s*(?P<op><=|>=|!=|=|<|>)\s*
        (?P<value>'(?:[^']|'')*'|"(?:[^"]|"")*"|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Condition:
    scope: str  # "params" | "metrics" | "column"
    name: str
    op: str
    value: str | float
    numeric: bool
    text: str  # the value as written, without quotes


_PIECE = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|\s+and\s+|[^'"\s]+|\s+|['"]""", re.IGNORECASE)


def split_conditions(where: str) -> list[str]:
    """Pure: a `--where` string cut at each `and` that is not inside a quoted value."""
    parts, current = [], ""
    for piece in _PIECE.findall(where.strip()):
        if piece[:1].isspace() and piece.strip().lower() == "and":
            parts.append(current)
            current = ""
        else:
            current += piece
    return parts + [current]


def parse_where(where: str) -> list[Condition]:
    """Pure: the conditions of a `--where` string, or UsageError naming the part that cannot be read."""
    conditions = []
    for part in split_conditions(where):
        match = _CONDITION.match(part)
        if not match:
            raise UsageError(
                f"cannot read the condition {part.strip()!r}",
                "write it like: params.max_depth = '5' and metrics.rmse < 2.5",
            )
        name, op, raw = match["name"], match["op"], match["value"]
        quoted = raw[0] in "'\""
        written = raw[1:-1].replace(raw[0] * 2, raw[0]) if quoted else raw
        value: str | float = written if quoted else float(raw)
        if name.startswith(("params.", "param.")):
            scope, name = "params", name.split(".", 1)[1]
        elif name.startswith(("metrics.", "metric.")):
            scope, name = "metrics", name.split(".", 1)[1]
            if quoted:
                raise UsageError(f"metric {name} compared with text {raw}", "compare metrics with numbers")
        elif name in FILTERABLE_COLUMNS:
            scope = "column"
            if name in NUMERIC_COLUMNS and quoted:
                try:
                    value, quoted = float(written), False  # '3' is the number 3, as SQLite would read it
                except ValueError:
                    raise UsageError(f"{name} is a count, compared with text {raw}",
                                     f"compare it with a number: {name} > 0") from None
        else:
            raise UsageError(
                f"unknown field {name!r} in --where",
                f"use params.NAME, metrics.NAME or one of: {', '.join(sorted(FILTERABLE_COLUMNS))}",
            )
        conditions.append(Condition(scope, name, op, value, numeric=not quoted, text=written))
    return conditions


NUMBER_TEXT_LIMIT = 400  # longer text is never a number: PostgreSQL's NUMERIC would overflow on it
_DOUBLE_OVERFLOW = "1.7976931348623158079e308"  # from here up, text rounds to infinity as a double
_DOUBLE_UNDERFLOW = "2.4703282292062328e-324"  # below this, text rounds to 0 as a double
# A number, as both stores read it: optional sign, digits with an optional point (or a point and digits), an
# optional exponent; spaces around it (SQLite's trim) but no other white space.
NUMBER_PATTERN = r"^ *[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)? *$"
# SQLite has no regular expressions: the same language as NUMBER_PATTERN, as GLOBs that a number matches (first)
# and GLOBs that no number matches (the rest). tests/test_bad_input.py checks the two agree.
_SQLITE_NUMBER_GLOBS = ("*[0-9]*",)
_SQLITE_NOT_NUMBER_GLOBS = (
    "*[^0-9.eE+-]*", "*.*.*", "*[eE]*[eE]*", "*[0-9.][+-]*", "*[+-][+-]*", "*[eE]", "*[eE][+-]", "*[eE]*.*",
    "[eE]*", ".[eE]*", "[+-][eE]*", "[+-].[eE]*",
)


def _param_as_number(dialect: str) -> str:
    """SQL for a param's text as a double, NULL where it is not a number (params are stored as sent: text).

    Both stores give the same answer: text beyond a double's range is +-infinity and text below it 0 (SQLite's
    CAST does that; PostgreSQL's would raise, so such text goes through NUMERIC and is clamped first). The usual
    short numbers take a fast path of one or two tests.
    """
    if dialect == "postgresql":
        n = "CAST(trim(p.value) AS NUMERIC)"
        huge_exponent = "p.value ~ '[eE][-+]?0*[1-9][0-9]{3,} *$'"  # |exponent| >= 1000: far out of range
        return (f"CASE WHEN length(p.value) <= {NUMBER_TEXT_LIMIT} AND p.value ~ '{NUMBER_PATTERN}' THEN CASE"
                # at most 20 characters and an exponent under 100: within a double's range, so the cast is safe
                f" WHEN length(p.value) <= 20 AND p.value !~ '[eE][-+]?0*[0-9]{{3}}'"
                f" THEN CAST(p.value AS DOUBLE PRECISION)"
                f" WHEN substring(p.value from '^ *[-+]?([0-9.]*)') !~ '[1-9]' THEN 0.0::DOUBLE PRECISION"
                f" WHEN {huge_exponent} AND p.value ~ '[eE]-' THEN 0.0::DOUBLE PRECISION"
                f" WHEN {huge_exponent} THEN CASE WHEN p.value ~ '^ *-' THEN '-Infinity' ELSE 'Infinity' END"
                f"::DOUBLE PRECISION"
                f" WHEN {n} >= {_DOUBLE_OVERFLOW} THEN 'Infinity'::DOUBLE PRECISION"
                f" WHEN {n} <= -{_DOUBLE_OVERFLOW} THEN '-Infinity'::DOUBLE PRECISION"
                f" WHEN abs({n}) < {_DOUBLE_UNDERFLOW} THEN 0.0::DOUBLE PRECISION"
                f" ELSE CAST({n} AS DOUBLE PRECISION) END END")
    value = "trim(p.value)"
    # digits with at most one point, no sign or exponent: a number, known in three tests
    plain = f"{value} GLOB '*[0-9]*' AND {value} NOT GLOB '*[^0-9.]*' AND {value} NOT GLOB '*.*.*'"
    checks = [f"length(p.value) <= {NUMBER_TEXT_LIMIT}"]
    checks += [f"{value} GLOB '{glob}'" for glob in _SQLITE_NUMBER_GLOBS]
    checks += [f"{value} NOT GLOB '{glob}'" for glob in _SQLITE_NOT_NUMBER_GLOBS]
    return (f"CASE WHEN length(p.value) <= {NUMBER_TEXT_LIMIT} AND {plain} THEN CAST({value} AS REAL)"
            f" WHEN {' AND '.join(checks)} THEN CAST({value} AS REAL) END")


def build_where_sql(conditions: list[Condition], dialect: str) -> tuple[list[str], dict]:
    """SQL clauses over `runs` and their bind values. Each param/metric condition is an indexed IN (...)."""
    clauses, binds = [], {}
    for i, cond in enumerate(conditions):
        key, val = f"k{i}", f"v{i}"
        binds[key], binds[val] = cond.name, cond.value
        if cond.scope == "column":
            if cond.name != "gap_count":
                binds[val] = cond.text  # a text column compares as text, even with an unquoted number
            clauses.append(f"runs.{cond.name} {cond.op} :{val}")
        elif cond.scope == "metrics":
            clauses.append(f"runs.run_id IN (SELECT run_id FROM metrics WHERE key = :{key} AND value {cond.op} :{val})")
        elif cond.numeric:
            number = _param_as_number(dialect)
            clauses.append(f"runs.run_id IN (SELECT p.run_id FROM params p WHERE p.key = :{key} AND {number} {cond.op} :{val})")
        elif cond.op == "=":  # the prefix first: that is what the index holds (alembic 0004)
            prefix = f"substr(value, 1, {PARAM_PREFIX_CHARS})"
            # SQLite would put the constant of `value = :v` into the prefix term (constant propagation), which then
            # no longer matches the index's expression: `+value` keeps the whole value out of that (10,000 runs of
            # 100,000: 0.19 s -> 0.02 s).
            whole = "+value" if dialect == "sqlite" else "value"
            clauses.append(f"runs.run_id IN (SELECT run_id FROM params WHERE key = :{key} AND {prefix} = "
                           f"substr(:{val}, 1, {PARAM_PREFIX_CHARS}) AND {whole} = :{val})")
        else:
            clauses.append(f"runs.run_id IN (SELECT run_id FROM params WHERE key = :{key} AND value {cond.op} :{val})")
    return clauses, binds


def build_run_filters(dialect: str, project: str | None = None, status: str | None = None, since: str | None = None,
                      until: str | None = None, where: str | None = None) -> tuple[list[str], dict]:
    """Pure: SQL clauses over `runs` and their bind values for the filters given (since and until as stored UTC
    text: since inclusive, until exclusive)."""
    clauses, binds = [], {}
    for name, column, op, value in (("project", "project", "=", project), ("status", "status", "=", status),
                                    ("since", "created_at", ">=", since), ("until", "created_at", "<", until)):
        if value:
            clauses.append(f"runs.{column} {op} :{name}")
            binds[name] = value
    if where:
        more, more_binds = build_where_sql(parse_where(where), dialect)
        clauses += more
        binds.update(more_binds)
    return clauses, binds


def runs_frame(conn, project=None, status=None, where=None, limit=None, since=None, until=None) -> pd.DataFrame:
    clauses, binds = build_run_filters(conn.dialect.name, project, status, since, until, where)
    sql = f"SELECT {', '.join(RUN_FRAME_COLUMNS)}, params_json, metrics_json FROM runs"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY runs.run_id DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = conn.execute(text(sql), binds).all()
    return build_runs_frame(rows)


def select_run_ids(book, project: str | None = None, since: str | None = None,
                   until: str | None = None) -> list[str]:
    """The ids of the runs the filters select, oldest first (every run when there is no filter)."""
    clauses, binds = build_run_filters(book.engine.dialect.name, project=project, since=since, until=until)
    sql = "SELECT run_id FROM runs" + (f" WHERE {' AND '.join(clauses)}" if clauses else "") + " ORDER BY run_id"
    with book._reading() as conn:
        return [row[0] for row in conn.execute(text(sql), binds)]


def related_run_ids(book, run_ids: list[str]) -> list[str]:
    """These runs, then the reproductions of each and the originals of those that are reproductions, until no
    run adds another."""
    included = dict.fromkeys(run_ids)
    frontier = list(run_ids)
    with book._reading() as conn:
        while frontier:
            found: list[str] = []
            for chunk in chunks(frontier):
                marks, binds = in_clause("r", chunk)
                rows = conn.execute(text(f"SELECT run_id, reproduction_of FROM runs WHERE reproduction_of IN "
                                         f"({marks}) OR run_id IN ({marks})"), binds)
                for run_id, original in rows:
                    for candidate in (run_id, original):
                        if candidate and candidate not in included:
                            included[candidate] = None
                            found.append(candidate)
            frontier = found
    return list(included)


def json_objects_frame(texts: list[str]) -> pd.DataFrame:
    """A DataFrame of flat JSON objects (a column a key, in order of first appearance, absent keys missing), read
    by Arrow's JSON reader as one document: 100,000 runs' params in a quarter of the time of one json.loads a row
    and a frame from dicts. The same frame as that, which stays the way for what Arrow refuses."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    data = "\n".join(text or "{}" for text in texts).encode("utf-8")
    # one block (no type to reconcile between blocks)
    read_options = pa_json.ReadOptions(block_size=max(len(data) + 1, 1 << 20))
    try:
        table = pa_json.read_json(io.BytesIO(data), read_options=read_options)
        guessed = [f.name for f in table.schema if pa.types.is_timestamp(f.type)]
        if guessed:  # Arrow takes ISO 8601-looking strings for timestamps: read those columns as the text they are
            schema = pa.schema([pa.field(name, pa.string()) for name in guessed])
            parse_options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
            names = table.schema.names  # explicit fields come first in a read: put each back in its place
            table = pa_json.read_json(io.BytesIO(data), read_options=read_options, parse_options=parse_options)
            table = table.select(names)
        if table.num_rows == len(texts) and all(_is_json_scalar(f.type) for f in table.schema):
            return table.to_pandas()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    return pd.DataFrame.from_records(json.loads("[" + ",".join(text or "{}" for text in texts) + "]"))


def _is_json_scalar(arrow_type) -> bool:
    """A type that gives the frame json.loads gives: strings, numbers and nulls (params are strings, metrics numbers);
    booleans are left to json.loads, as Arrow's put None where pandas puts NaN for a missing one."""
    import pyarrow as pa

    return (pa.types.is_string(arrow_type) or pa.types.is_int64(arrow_type) or pa.types.is_float64(arrow_type)
            or pa.types.is_null(arrow_type))


def build_runs_frame(rows) -> pd.DataFrame:
    """Pure: rows of (RUN_FRAME_COLUMNS..., params_json, metrics_json) into one wide DataFrame."""
    n = len(RUN_FRAME_COLUMNS)
    frame = pd.DataFrame.from_records([row[:n] for row in rows], columns=list(RUN_FRAME_COLUMNS))
    if not rows:
        return frame
    frame["created_at"] = pd.to_datetime(frame["created_at"], format="ISO8601", utc=True)
    params = json_objects_frame([row[n] for row in rows])
    metrics = json_objects_frame([row[n + 1] for row in rows]).astype("float64")
    return pd.concat(
        [frame, params.add_prefix("params."), metrics.add_prefix("metrics.")], axis=1
    )
