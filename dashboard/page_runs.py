"""Runs: every recorded run, filtered, sorted and paged; select runs to compare them."""

import hashlib

import streamlit as st

from ledger.dashboard import data, views
from ledger.errors import LedgerError

SELECTED = "selected_runs"  # session state: run ids selected on any page of the table, in selection order
TABLE_KEY = "runs_table_key"  # session state: the key of the table on screen (its selection state lives there)
SORTS = {"created_at": "created", "job_name": "job name", "project": "project", "status": "status",
         "gap_count": "gaps", "verdict": "verdict"}

st.title("Runs")

with data.friendly_errors():
    runs = data.facets()  # what the widgets offer, from the indexes: no scan of the runs
    if runs.total == 0:
        data.empty_state()
        st.stop()
    seq = runs.head_seq
    st.session_state.setdefault(SELECTED, [])
    st.session_state.setdefault("selection_generation", 0)

    # --- filters ---
    top = st.columns([3, 3, 3])
    projects = top[0].multiselect("Project", runs.projects, key="f_projects", placeholder="all projects")
    statuses = top[1].multiselect("Status", runs.statuses, key="f_statuses", placeholder="any status")
    # No default range: a default of (first day, last day) would go stale, and hide new runs, as the ledger grows.
    dates = top[2].date_input("Created between", value=[], key="f_dates", format="YYYY-MM-DD",
                              help=f"Runs were created from {runs.first_day} to {runs.last_day} (UTC).")
    middle = st.columns([3, 4, 2])
    search = middle[0].text_input("Search job name, run id and tags", key="f_text",
                                  placeholder="e.g. xgb-0003 or team=pricing")
    where = middle[1].text_input(
        "Condition on params, metrics or columns", key="f_where",
        placeholder="params.max_depth > 4 and metrics.validation:rmse < 2.5",
        help="The `ledger runs --where` language: `params.NAME`, `metrics.NAME` or a column (project, status, "
             "job_name, backend, verdict, created_by, gap_count), an operator (= != < <= > >=) and a number or a "
             "quoted string, joined by `and`.")
    only = middle[2].selectbox("Show", ["all", "reproductions", "gaps"], key="f_only",
                               format_func={"all": "all runs", "reproductions": "reproductions only",
                                            "gaps": "runs with gaps"}.get)
    since, until = (tuple(dates) + (None, None))[:2] if isinstance(dates, (tuple, list)) else (dates, None)
    flt = views.RunFilter(projects=tuple(projects), statuses=tuple(statuses), since=since, until=until,
                          text=search, where=where.strip(), only=only)

    # --- sorting, columns, paging ---
    controls = st.columns([3, 2, 2, 5])
    sort_options = list(SORTS) + runs.metric_columns + runs.param_columns
    sort_by = controls[0].selectbox("Sort by", sort_options, key="sort_by", format_func=lambda c: SORTS.get(c, c))
    descending = controls[1].selectbox("Order", ["descending", "ascending"], key="sort_order") == "descending"
    page_size = controls[2].selectbox("Rows per page", views.PAGE_SIZES, index=1, key="page_size")
    shown_params = controls[3].multiselect("Params shown", runs.param_columns, default=runs.varying_params,
                                           key="shown_params", format_func=lambda c: c.removeprefix("params."))
    # The pager's key leaves the ledger head out, so a run recorded meanwhile does not send the user to page 1; the
    # table's key has it, so that its selection is laid out afresh from the selected ids when rows move.
    signature = hashlib.sha256(repr((flt, sort_by, descending, page_size)).encode()).hexdigest()[:10]
    summary, table_box, pager_box = st.container(), st.container(), st.container()

    if not flt.narrows(runs.first_day, runs.last_day) and sort_by == "created_at" and descending:
        # The whole ledger, newest first: each page comes straight from the database's created_at index.
        matching = runs.total
        pages = views.page_count(matching, page_size)
        with pager_box:
            page = st.pagination(pages, key=f"page_{signature}") if pages > 1 else 1
        shown = data.page_rows(page, page_size, seq)
    else:
        # Anything else filters and sorts the whole runs table, loaded once per ledger head.
        chosen_ids = None
        if flt.where:
            try:
                chosen_ids = data.where_ids(flt.where, seq)
            except LedgerError as error:
                st.error(f"{error.message}. {error.hint}", icon=":material/warning:")
        tag_ids = data.tag_hits(flt.text, seq) if flt.text.strip() else None
        every = data.runs_data()
        found = views.filter_runs(every.frame, flt, where_ids=chosen_ids, tag_ids=tag_ids)
        values = data.param_values(found, sort_by, seq) if sort_by.startswith("params.") else None
        ordered = views.sort_runs(found, sort_by, descending, values=values)
        matching = len(ordered)
        pages = views.page_count(matching, page_size)
        with pager_box:
            page = st.pagination(pages, key=f"page_{signature}") if pages > 1 else 1
        shown = views.page_of(ordered, page, page_size)
    first = (page - 1) * page_size + 1 if len(shown) else 0
    summary.caption(f"Showing {first:,}–{first + len(shown) - 1:,} of {matching:,} matching runs "
                    f"({runs.total:,} in the ledger)" if len(shown) else
                    f"No run matches these filters ({runs.total:,} in the ledger).")

    # --- the table: only this page is built and sent ---
    page_ids = shown["run_id"].tolist()
    selected: list[str] = st.session_state[SELECTED]
    params = data.params_of(page_ids, seq) if shown_params and page_ids else {}
    table = views.runs_table(shown, runs.metric_columns, shown_params, params)
    key = f"runs_table_{signature}_{seq}_{page}_{st.session_state['selection_generation']}"
    st.session_state[TABLE_KEY] = key
    config = {
        "run id": st.column_config.TextColumn("run id", width=235),
        "created": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm"),
        "status": st.column_config.TextColumn("status", width=115),
        "pinning": st.column_config.TextColumn("pinning", width=115),
        "verdict": st.column_config.TextColumn("verdict", width=125),
        "open": st.column_config.LinkColumn("open", display_text="open ↗", width="small"),
        **{c: st.column_config.NumberColumn(c.removeprefix("metrics."), format="%.4f") for c in runs.metric_columns},
        **{c: st.column_config.TextColumn(c.removeprefix("params.")) for c in shown_params},
    }
    if len(shown):
        event = table_box.dataframe(
            views.style_runs_table(table), key=key, on_select="rerun", selection_mode="multi-row", hide_index=True,
            column_config=config,
            selection_default={"selection": {"rows": [i for i, r in enumerate(page_ids) if r in selected]}},
        )
        picked = [page_ids[i] for i in event.selection.rows if i < len(page_ids)]
        selected = [r for r in selected if r not in page_ids or r in picked] + [r for r in picked if r not in selected]
        st.session_state[SELECTED] = selected
    else:
        table_box.info("No run matches these filters. Clear a filter to see more.", icon=":material/search:")

    # --- what to do with the selection ---
    st.divider()
    bar = st.columns([4, 2, 2, 2])
    if selected:
        bar[0].markdown(f"**{len(selected)} run{'s' if len(selected) > 1 else ''} selected**: "
                        + ", ".join(f"`{r}`" for r in selected[:6]) + (" …" if len(selected) > 6 else ""))
    else:
        bar[0].markdown("Select runs in the table (the boxes at the left) to compare them.")
    if bar[1].button(f"Compare {len(selected)} runs" if len(selected) > 1 else "Compare", type="primary",
                     disabled=len(selected) < 2, key="compare_button", icon=":material/compare_arrows:"):
        st.switch_page("page_compare.py", query_params={"runs": ",".join(selected)})
    if bar[2].button("Open run", disabled=len(selected) != 1, key="open_button", icon=":material/description:"):
        st.switch_page("page_run.py", query_params={"run": selected[0]})
    if bar[3].button("Clear selection", disabled=not selected, key="clear_button"):
        st.session_state[SELECTED] = []
        st.session_state["selection_generation"] += 1
        st.rerun()
    if len(selected) == 2:
        st.caption("The same comparison on the command line:")
        st.code(f"ledger diff {selected[0]} {selected[1]}", language="bash")
    data.warm_tag_index(seq)  # after the page is drawn: ready before the first text search, most often
