"""Compare: 2 to 10 runs side by side (request, pins, outcome), their metrics as bars and series as lines, and a
parallel coordinates plot of hyperparameters against a metric across any number of selected runs."""

import pandas as pd
import streamlit as st

from ledger.dashboard import data, views

st.title("Compare")

with data.friendly_errors():
    # The runs come in the URL (?runs=a,b,c: the Runs page's Compare button, or a shared link) or are typed here.
    from_url = st.query_params.get("runs", "")
    if st.session_state.get("compare_from_url") != from_url or "compare_refs" not in st.session_state:
        st.session_state["compare_from_url"] = from_url
        st.session_state["compare_refs"] = " ".join(views.split_refs(from_url))
    typed = st.text_input("Runs to compare: ids, unique id prefixes or job names", key="compare_refs",
                          placeholder="01J9ABC… 01J9DEF…  (or select runs on the Runs page)")
    refs = views.split_refs(typed)
    if ",".join(refs) != from_url:
        st.query_params["runs"] = ",".join(refs)
        st.session_state["compare_from_url"] = ",".join(refs)

    run_ids, problems = data.resolve_many(refs)
    for problem in problems:
        st.warning(problem, icon=":material/warning:")
    if len(run_ids) < 2:
        st.info("Pick 2 to 10 runs: select them on the Runs page and press Compare, or type their ids above.",
                icon=":material/arrow_back:")
        st.page_link("page_runs.py", label="Go to Runs", icon=":material/table_rows:")
        st.stop()

    side = data.records_of(run_ids[: views.MAX_COMPARE])  # only these are read whole
    if len(run_ids) > views.MAX_COMPARE:
        st.caption(f"{len(run_ids)} runs selected: the first {views.MAX_COMPARE} are compared side by side and "
                   "plotted; the parallel coordinates plot below shows them all.")
    labels = views.run_labels(side)

    # --- side by side ---
    st.subheader("Side by side")
    switches = st.columns([2, 6])
    only_diff = switches[0].toggle("Only differences", key="only_differences")
    frames = {name: views.compare_frame(side, name) for name in views.SECTIONS}
    differing = {name: int(frame["differs"].sum()) for name, frame in frames.items()}
    switches[1].caption(
        "Highlighted: fields whose values are not the same in every run. "
        + " · ".join(f"{views.SECTIONS[n]}: {differing[n]} of {len(f)} differ" for n, f in frames.items()))
    tabs = st.tabs([f"{views.SECTIONS[n]} ({differing[n]} differ)" for n in views.SECTIONS])
    for tab, (name, frame) in zip(tabs, frames.items()):
        with tab:
            shown = views.only_differences(frame) if only_diff else frame
            if shown.empty:
                st.success("Identical in every run." if only_diff else "Nothing recorded here.", icon=":material/check_circle:")
                continue
            st.dataframe(views.style_differences(shown), key=f"compare_{name}", height=min(38 + 35 * len(shown), 560),
                         column_config={"differs": st.column_config.CheckboxColumn("≠", width="small"),
                                        "field": st.column_config.TextColumn("field", width="large")})

    # --- metrics ---
    st.subheader("Metrics")
    metrics = views.metrics_long(side)
    if metrics.empty:
        st.info("None of these runs recorded final metrics (a failed or unfinished run has none).", icon=":material/bar_chart:")
    else:
        st.plotly_chart(views.metric_bars_figure(metrics, labels), key="metric_bars")
    series = views.series_long(side)
    if series.empty:
        st.caption("No metric series: runs record them when they run locally (`outcome.metric_series`).")
    else:
        names = sorted(series["metric"].unique())
        chosen = st.selectbox("Metric series", names, key="series_metric", index=views.default_metric(names))
        st.plotly_chart(views.series_figure(series, chosen, labels), key="metric_series")

    # --- parallel coordinates over every selected run ---
    st.subheader("Hyperparameters against a metric")
    ids = run_ids[: views.MAX_PARALLEL]
    with_params = data.runs_rows(ids, data.head()[0])
    metric_options = [c for c in with_params.columns if c.startswith("metrics.") and with_params[c].notna().any()]
    if not metric_options:
        st.info("No metric to plot against: none of these runs has a final metric.", icon=":material/bar_chart:")
    else:
        metric = st.selectbox("Metric", metric_options, key="parallel_metric", index=views.default_metric(metric_options),
                              format_func=lambda c: c.removeprefix("metrics."))
        figure, params = views.parallel_figure(with_params, metric)
        if not params:
            st.info("These runs share every hyperparameter: nothing to plot against the metric.", icon=":material/drag_handle:")
        else:
            st.plotly_chart(figure, key="parallel")
            st.caption(f"{int(with_params[metric].notna().sum())} runs; axes: the hyperparameters that differ "
                       f"({', '.join(p.removeprefix('params.') for p in params)}).")

    st.subheader("On the command line")
    st.code(f"ledger diff {side[0].run_id} {side[1].run_id}", language="bash")
    links = pd.DataFrame({"run": labels, "open": [f"run?run={r.run_id}" for r in side]})
    st.dataframe(links, hide_index=True, key="compare_links",
                 column_config={"open": st.column_config.LinkColumn("open", display_text="open ↗")})
