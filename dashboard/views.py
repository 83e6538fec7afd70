"""Pure functions of the dashboard: filters, badges, compare tables and figures. No Streamlit, no database.

Everything here takes a runs DataFrame (`Ledger.runs()`) or `RunRecord`s and returns plain data, a pandas Styler
or a Plotly figure, so it is tested without a running app.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd

from ledger.diffing import flatten
from ledger.record import RunRecord

PAGE_SIZES = (25, 50, 100, 200)
MAX_COMPARE = 10
MAX_PARALLEL = 2_000
DIFF_STYLE = "background-color: rgba(255, 196, 0, 0.28); font-weight: 600"
SECTIONS = {"request": "Request", "pins": "Pins", "outcome": "Outcome"}

# --- badges ---------------------------------------------------------------------------------------------------

# Badges are text with a glyph that plain fonts have (DejaVu, Source Sans): tables are drawn on a canvas, and a
# headless server or a minimal desktop often has no emoji font. Colour comes from `badge_colors` and `badge`.
STATUS_BADGES = {
    "Completed": "✔ Completed",
    "Failed": "✖ Failed",
    "InProgress": "◔ InProgress",
    "Stopping": "■ Stopping",
    "Stopped": "■ Stopped",
}
VERDICT_BADGES = {"IDENTICAL": "✔ IDENTICAL", "EQUIVALENT": "≈ EQUIVALENT", "DIVERGED": "✖ DIVERGED",
                  "UNVERIFIABLE": "? UNVERIFIABLE"}
PINNED, GAPS, PENDING = "● fully pinned", "▲", "◔ pending"
COLORS = {"✔": "green", "●": "green", "≈": "orange", "▲": "orange", "◔": "blue", "■": "gray", "✖": "red", "·": "gray",
          "?": "orange"}  # ? UNVERIFIABLE: not a failure of the reproduction, and not a pass


def missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def status_badge(status: Any) -> str:
    if missing(status) or status == "":
        return "· unknown"
    return STATUS_BADGES.get(str(status), str(status))


def gap_badge(gap_count: Any) -> str:
    """How fully a run is pinned: every reference pinned, or how many could not be."""
    count = 0 if missing(gap_count) else int(gap_count)
    if count == 0:
        return PINNED
    return f"{GAPS} {count} gap" + ("s" if count > 1 else "")


def verdict_badge(verdict: Any, reproduction_of: Any = None) -> str:
    """A reproduction's verdict; a reproduction still without one is pending; other runs have none."""
    if not missing(verdict) and verdict:
        return VERDICT_BADGES.get(str(verdict), str(verdict))
    if not missing(reproduction_of) and reproduction_of:
        return PENDING
    return ""


def badge_color(text: str) -> str | None:
    """The colour of a badge from its glyph: green pinned/completed/identical, orange gaps/equivalent, red
    failed/diverged."""
    return COLORS.get(text[:1]) if text else None


def badge(text: str) -> str:
    """A badge as Streamlit markdown: coloured, its glyph kept."""
    if not text:
        return ""
    return f":{badge_color(text) or 'gray'}-badge[{text}]"


# --- the runs table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilter:
    """What the Runs page's filter widgets ask for. `until` is inclusive (a whole day)."""

    projects: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    text: str = ""
    where: str = ""
    only: str = "all"  # "all" | "reproductions" | "gaps"

    def narrows(self, first_day: date | None = None, last_day: date | None = None) -> bool:
        """Whether the filter leaves out any run (a date range covering every run's day does not)."""
        dates = (self.since is not None and (first_day is None or self.since > first_day)) or \
                (self.until is not None and (last_day is None or self.until < last_day))
        return bool(self.projects or self.statuses or self.text.strip() or self.where.strip()
                    or self.only != "all" or dates)


def prepare_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the columns filtering needs once per load (a lowercase search text)."""
    frame = frame.reset_index(drop=True)
    if frame.empty:
        frame["_search"] = pd.Series(dtype="object")
        return frame
    frame["_search"] = (frame["job_name"].fillna("") + " " + frame["run_id"]).str.lower()
    return frame


def filter_runs(frame: pd.DataFrame, flt: RunFilter, where_ids: set[str] | None = None,
                tag_ids: set[str] | None = None) -> pd.DataFrame:
    """Rows of `frame` that pass the filter. `where_ids`: the runs the condition selects (None: no condition);
    `tag_ids`: the runs whose tags contain the search text."""
    if frame.empty:
        return frame
    mask = pd.Series(True, index=frame.index)
    if flt.projects:
        mask &= frame["project"].isin(flt.projects)
    if flt.statuses:
        mask &= frame["status"].fillna("unknown").isin(flt.statuses)
    if flt.since:
        mask &= frame["created_at"] >= pd.Timestamp(flt.since, tz="UTC")
    if flt.until:
        mask &= frame["created_at"] < pd.Timestamp(flt.until + timedelta(days=1), tz="UTC")
    needle = flt.text.strip().lower()
    if needle:
        hit = frame["_search"].str.contains(needle, regex=False)
        if tag_ids:
            hit |= frame["run_id"].isin(tag_ids)
        mask &= hit
    if where_ids is not None:
        mask &= frame["run_id"].isin(where_ids)
    if flt.only == "reproductions":
        mask &= frame["reproduction_of"].notna()
    elif flt.only == "gaps":
        mask &= frame["gap_count"].fillna(0) > 0
    return frame[mask]


def default_metric(metrics: list[str]) -> int:
    """Index of the metric to show first: a validation metric when there is one (what a model is chosen by)."""
    for i, name in enumerate(metrics):
        if "validation" in name or name.split(".")[-1].startswith(("val", "test", "eval")):
            return i
    return 0


def numeric_or_text(column: pd.Series) -> pd.Series:
    """Params are text as sent; sort them as numbers when every value present is one."""
    if column.dtype != object:
        return column
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().sum() == column.notna().sum() else column.astype("string").str.lower()


def sort_runs(frame: pd.DataFrame, column: str, descending: bool, values: pd.Series | None = None) -> pd.DataFrame:
    """`frame` ordered by `column` (or by `values`, aligned with it: a param read apart), missing values last."""
    if frame.empty:
        return frame
    if values is None:
        if column not in frame.columns:
            return frame
        values = frame[column]
    order = numeric_or_text(values).sort_values(ascending=not descending, na_position="last", kind="stable")
    return frame.loc[order.index]


def page_count(rows: int, page_size: int) -> int:
    return max(1, math.ceil(rows / page_size))


def page_of(frame: pd.DataFrame, page: int, page_size: int) -> pd.DataFrame:
    start = (max(1, page) - 1) * page_size
    return frame.iloc[start : start + page_size]


def runs_table(page: pd.DataFrame, metric_columns: list[str], param_columns: list[str],
               params: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """The rows of one page as shown: badges, the chosen metrics and params. Only this page is built.
    `params`: {run_id: {name: value}} for the page's runs (the runs table is loaded without them)."""
    table = pd.DataFrame({
        "run id": page["run_id"].to_numpy(),
        "job name": page["job_name"].to_numpy(),
        "project": page["project"].to_numpy(),
        "status": [status_badge(s) for s in page["status"]],
        "created": page["created_at"].dt.tz_convert(None).to_numpy() if len(page) else [],
        "pinning": [gap_badge(g) for g in page["gap_count"]],
        "verdict": [verdict_badge(v, r) for v, r in zip(page["verdict"], page["reproduction_of"])],
    })
    for column in metric_columns:
        if column in page.columns:
            table[column] = page[column].to_numpy()
    for column in param_columns:
        name = column.removeprefix("params.")
        if column in page.columns:
            table[column] = page[column].to_numpy()
        elif params is not None:
            table[column] = [params.get(run_id, {}).get(name) for run_id in page["run_id"]]
    table["open"] = [f"run?run={run_id}" for run_id in page["run_id"]]
    return table


CSS_COLORS = {"green": "#1a7f37", "orange": "#b35900", "red": "#cf222e", "blue": "#0969da", "gray": "#6e7781"}


def style_runs_table(table: pd.DataFrame):
    """Colour the badge columns of one page of the runs table; numbers to 4 places, times to the minute."""
    def color(text) -> str:
        name = badge_color(text) if isinstance(text, str) else None
        return f"color: {CSS_COLORS[name]}; font-weight: 600" if name else ""

    metric_columns = [c for c in table.columns if c.startswith("metrics.")]
    return (table.style.map(color, subset=["status", "pinning", "verdict"])
            .format("{:.4f}", subset=metric_columns, na_rep="")
            .format(lambda t: "" if missing(t) else t.strftime("%Y-%m-%d %H:%M"), subset=["created"])
            .format(lambda v: "" if missing(v) else str(v),
                    subset=[c for c in table.columns if c.startswith("params.")]))


def varying_params(frame: pd.DataFrame, limit: int = 4) -> list[str]:
    """Param columns whose value differs between runs, the most varied first (what a table should show)."""
    columns = [c for c in frame.columns if c.startswith("params.")]
    sample = frame[columns].head(5_000)
    counts = {c: sample[c].nunique(dropna=True) for c in columns}
    return sorted((c for c in columns if counts[c] > 1), key=lambda c: (-min(counts[c], 50), c))[:limit]


# --- compare --------------------------------------------------------------------------------------------------


def run_labels(records: list[RunRecord]) -> list[str]:
    """A short unique column label a run: its job name and the end of its id."""
    labels = [f"{r.job_name} · {r.run_id[-6:]}" for r in records]
    if len(set(labels)) < len(labels):
        labels = [f"{r.job_name} · {r.run_id}" for r in records]
    return labels


def cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def compare_frame(records: list[RunRecord], section: str) -> pd.DataFrame:
    """One row a field of `section` (request, pins or outcome), one column a run; `differs` marks the rows whose
    values are not all the same (a field missing from some runs differs). Metric series are left to the plots."""
    labels = run_labels(records)
    flats = [flatten({section: record.to_dict().get(section)}) for record in records]
    fields = sorted(set().union(*flats)) if flats else []
    data = {label: [cell_text(flat.get(f)) for f in fields] for label, flat in zip(labels, flats)}
    frame = pd.DataFrame(data, index=pd.Index(fields, name="field"), dtype="object")
    values = frame.fillna("\x00missing")
    frame.insert(0, "differs", values.nunique(axis=1) > 1 if len(frame) else pd.Series(dtype=bool))
    return frame


def only_differences(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["differs"]]


def style_differences(frame: pd.DataFrame):
    """Highlight, in each differing row, the cells whose value is not the first run's (and the first run's cell)."""
    run_columns = [c for c in frame.columns if c != "differs"]

    def row_style(row: pd.Series) -> list[str]:
        if not row["differs"]:
            return [""] * len(row)
        first = row[run_columns[0]]
        styles = []
        for column, value in row.items():
            if column == "differs" or column == run_columns[0] or value != first:
                styles.append(DIFF_STYLE)
            else:
                styles.append("")
        return styles

    return frame.style.apply(row_style, axis=1)


def metrics_long(records: list[RunRecord]) -> pd.DataFrame:
    labels = run_labels(records)
    rows = [{"run": label, "metric": name, "value": value}
            for label, record in zip(labels, records)
            for name, value in sorted(record.outcome.metrics.items()) if value is not None]
    return pd.DataFrame(rows, columns=["run", "metric", "value"])


def series_long(records: list[RunRecord]) -> pd.DataFrame:
    """Every point of every run's `outcome.metric_series` (local runs record them), long form."""
    labels = run_labels(records)
    rows = []
    for label, record in zip(labels, records):
        for point in getattr(record.outcome, "metric_series", None) or []:
            if isinstance(point, dict) and point.get("value") is not None:
                rows.append({"run": label, "metric": str(point.get("name")), "step": point.get("step"),
                             "value": point["value"]})
    return pd.DataFrame(rows, columns=["run", "metric", "step", "value"])


PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880", "#FF97FF",
           "#FECB52")  # Plotly's qualitative palette


def run_colors(labels: list[str]) -> dict[str, str]:
    """One colour a run, the same in every figure of a comparison."""
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}


def metric_bars_figure(metrics: pd.DataFrame, labels: list[str]):
    """One panel a metric (each its own scale), one bar a run. Built with graph_objects: plotly.express costs
    a tenth of a second more a figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = sorted(metrics["metric"].unique())
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=names, horizontal_spacing=0.07,
                        vertical_spacing=0.22 / rows)
    colors = run_colors(labels)
    for n, name in enumerate(names):
        values = metrics[metrics["metric"] == name].set_index("run")["value"]
        for label in labels:
            if label in values.index:
                fig.add_trace(go.Bar(x=[label], y=[values[label]], name=label, legendgroup=label,
                                     marker_color=colors[label], showlegend=n == 0,
                                     text=[f"{values[label]:.4g}"], textposition="auto",
                                     hovertemplate=f"{label}<br>{name}: %{{y}}<extra></extra>"),
                              row=n // columns + 1, col=n % columns + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(height=260 * rows + 80, legend_title_text="run", margin={"t": 40, "b": 10}, bargap=0.15)
    return fig


def series_figure(series: pd.DataFrame, metric: str, labels: list[str] | None = None):
    import plotly.graph_objects as go

    chosen = series[series["metric"] == metric].sort_values(["run", "step"])
    labels = labels or sorted(chosen["run"].unique())
    colors = run_colors(labels)
    fig = go.Figure()
    for label in labels:
        points = chosen[chosen["run"] == label]
        if len(points):
            fig.add_trace(go.Scatter(x=points["step"], y=points["value"], name=label, line_color=colors[label],
                                     mode="lines+markers" if len(points) <= 200 else "lines"))
    fig.update_layout(height=360, xaxis_title="step", yaxis_title=metric, legend_title_text="run",
                      margin={"t": 30, "b": 10})
    return fig


def parallel_figure(frame: pd.DataFrame, metric: str, max_params: int = 12):
    """Parallel coordinates: the hyperparameters that vary across these runs, then `metric`, coloured by it.
    Text params become categorical axes with their values as tick labels."""
    import plotly.graph_objects as go

    frame = frame[frame[metric].notna()] if metric in frame.columns else frame.iloc[0:0]
    params = [c for c in varying_params(frame, limit=max_params)]
    dimensions = []
    for column in params:
        values = numeric_or_text(frame[column])
        if pd.api.types.is_numeric_dtype(values):
            dimensions.append({"label": column.removeprefix("params."), "values": values.fillna(values.min())})
        else:
            categories = sorted(values.dropna().unique().tolist())
            codes = values.map({v: i for i, v in enumerate(categories)}).fillna(-1)
            dimensions.append({"label": column.removeprefix("params."), "values": codes,
                                   "tickvals": list(range(len(categories))), "ticktext": [str(c)[:18] for c in categories]})
    dimensions.append({"label": metric.removeprefix("metrics."), "values": frame[metric]})
    fig = go.Figure(go.Parcoords(
        line={"color": frame[metric], "colorscale": "Viridis", "showscale": True,
                  "colorbar": {"title": metric.removeprefix("metrics.")}},
        dimensions=dimensions,
    ))
    fig.update_layout(height=420, margin={"l": 60, "r": 60, "t": 50, "b": 30})
    return fig, params


# --- one run --------------------------------------------------------------------------------------------------


def manifest_frame(record: RunRecord, needle: str = "") -> pd.DataFrame:
    """Every object of every data channel, searchable by key, version id or channel name."""
    rows = []
    for channel, pin in sorted(record.pins.data.items()):
        for obj in pin.objects:
            rows.append({"channel": channel, "key": obj.key, "version_id": obj.version_id, "etag": obj.etag,
                         "size": obj.size})
    frame = pd.DataFrame(rows, columns=["channel", "key", "version_id", "etag", "size"])
    needle = needle.strip().lower()
    if needle and not frame.empty:
        text = (frame["channel"] + " " + frame["key"] + " " + frame["version_id"].fillna("")).str.lower()
        frame = frame[text.str.contains(needle, regex=False)]
    return frame


def facts_frame(pairs: list[tuple[str, Any]]) -> pd.DataFrame:
    """Name/value rows for st.dataframe; empty values shown as a dash."""
    return pd.DataFrame({"": [name for name, _ in pairs],
                         "value": ["—" if v in (None, "", [], {}) else cell_text(v) for _, v in pairs]})


def facts_table(items: list[Any]) -> pd.DataFrame:
    """A list of facts (a verdict's differences, its drift) as a table: one column a key when they are dicts."""
    if items and all(isinstance(item, dict) for item in items):
        keys = list(dict.fromkeys(k for item in items for k in item))
        return pd.DataFrame([{k: cell_text(item.get(k)) for k in keys} for item in items], columns=keys)
    return pd.DataFrame({"fact": [cell_text(item) for item in items]})


def mlflow_run_url(record: RunRecord, default_tracking_uri: str | None) -> str | None:
    """A link to the run in MLflow's UI, when the record was mirrored (`annotations.mlflow_run_id`) and the
    tracking URI is an http(s) server."""
    annotations = getattr(record, "annotations", None) or {}
    run_id = annotations.get("mlflow_run_id") if isinstance(annotations, dict) else None
    if not run_id:
        return None
    uri = str(annotations.get("mlflow_tracking_uri") or default_tracking_uri or "")
    if not uri.startswith(("http://", "https://")):
        return None
    experiment = annotations.get("mlflow_experiment_id")
    base = uri.rstrip("/")
    return f"{base}/#/experiments/{experiment}/runs/{run_id}" if experiment else f"{base}/#/runs/{run_id}"


def split_refs(text: str) -> list[str]:
    """Run references typed or passed in a URL: separated by commas, spaces or new lines; duplicates dropped."""
    seen, refs = set(), []
    for ref in text.replace(",", " ").split():
        if ref not in seen:
            seen.add(ref)
            refs.append(ref)
    return refs
