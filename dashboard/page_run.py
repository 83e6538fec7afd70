"""Run: one record, whole, grouped: code, data, image, hardware, environment, outcome; its gaps and their fixes;
the data manifest; its reproductions and their verdicts; the commands to copy; the MLflow run; the audit report."""

import functools

import pandas as pd
import streamlit as st

from ledger.dashboard import data, views

st.title("Run")

with data.friendly_errors():
    if data.head()[0] == 0:
        data.empty_state()
        st.stop()

    from_url = st.query_params.get("run", "")
    if st.session_state.get("run_from_url") != from_url or "run_ref" not in st.session_state:
        st.session_state["run_from_url"] = from_url
        st.session_state["run_ref"] = from_url
    ref = st.text_input("Run: id, unique id prefix or job name", key="run_ref",
                        placeholder="pick one below, or paste a run id").strip()
    if not ref:
        newest = data.newest_runs(200)
        choice = st.selectbox("Or one of the newest runs", [""] + newest["run_id"].tolist(), key="run_pick",
                              format_func=lambda r: "—" if not r else
                              f"{newest.set_index('run_id').at[r, 'job_name']} · {r}")
        if not choice:
            st.info("Choose a run to see its whole record.", icon=":material/arrow_upward:")
            st.stop()
        ref = choice
    if ref != from_url:
        st.query_params["run"] = ref
        st.session_state["run_from_url"] = ref

    record = data.record(ref)
    pins, outcome = record.pins, record.outcome

    # --- header ---
    st.subheader(record.job_name)
    badges = [views.badge(views.status_badge(outcome.status)), views.badge(views.gap_badge(len(pins.gaps)))]
    if record.reproduction_of:
        badges.append(views.badge(views.verdict_badge(record.verdict.result if record.verdict else None,
                                                      record.reproduction_of)))
        badges.append(f"reproduces `{record.reproduction_of}`")
    st.markdown(" ".join(badges))
    st.markdown(f"**Project** {record.project} · **Backend** {record.backend} · "
                f"**Created** {record.created_at[:16].replace('T', ' ')} UTC · **By** {record.created_by or 'unknown'}")
    st.caption(f"run id `{record.run_id}`"
               + (f" · chain seq {record.chain.seq}, entry `{record.chain.entry_hash[:16]}…`" if record.chain else ""))
    if outcome.status == "Failed":
        st.error(f"The run failed: {outcome.failure_reason or 'no reason recorded'}", icon=":material/error:")
    if pins.gaps:
        st.warning(f"{len(pins.gaps)} reference(s) could not be pinned: "
                   + ", ".join(g.what for g in pins.gaps) + ". The Gaps tab says how to pin each next time.",
                   icon=":material/warning:")

    st.markdown("**Commands to copy**: reproduce it (the dry run shows what drifted, before anything runs), "
                "and its audit report.")
    st.code(f"ledger reproduce {record.run_id} --dry-run\n"
            f"ledger reproduce {record.run_id}\n"
            f"ledger audit {record.run_id} --format html -o audit-{record.run_id[-6:]}.html", language="bash")
    url = views.mlflow_run_url(record, data.mlflow_uri())
    has_audit = data.audit_available()
    if url or has_audit:
        slots = iter(st.columns(4))
        if url:
            next(slots).link_button("MLflow run", url, icon=":material/open_in_new:", help=url)
        if has_audit:  # made when pressed: a report verifies the whole log
            next(slots).download_button("Audit report (HTML)",
                                        functools.partial(data.audit_html, data.db_url(), record.run_id),
                                        file_name=f"audit-{record.run_id}.html", mime="text/html",
                                        icon=":material/download:", key="audit_download",
                                        help="What was trained, on what and by whom, with the log's evidence")

    tabs = st.tabs(["Code", "Data", "Image", "Hardware", "Environment", "Outcome",
                    f"Gaps ({len(pins.gaps)})", "Reproductions", "Request", "JSON"])
    code, dataset, image, hardware, environment, result, gaps, reproductions, request, raw = tabs

    with code:
        c = pins.code
        archive = c.source_archive
        st.table(views.facts_frame([
            ("repository", c.repo_url), ("commit", c.commit), ("branch", c.branch),
            ("uncommitted changes", c.dirty), ("diff sha256", c.diff_sha256),
            ("untracked files", ", ".join(c.untracked)),
            ("source archive", archive.uri if archive else None),
            ("archive version", archive.version_id if archive else None),
            ("archive sha256", archive.sha256 if archive else None),
        ]).set_index(""))

    with dataset:
        if not pins.data:
            st.info("No input channels were recorded.", icon=":material/inbox:")
        else:
            channels = pd.DataFrame([
                {"channel": name, "uri": pin.uri, "kind": pin.kind, "objects": pin.object_count,
                 "bytes": pin.total_bytes, "pinned": pin.pinned, "snapshot": pin.snapshot_uri,
                 "manifest sha256": pin.manifest_sha256}
                for name, pin in sorted(pins.data.items())])
            st.dataframe(channels, hide_index=True, key="channels",
                         column_config={"pinned": st.column_config.CheckboxColumn("pinned")})
            needle = st.text_input("Search the manifest (key, version id or channel)", key="manifest_search")
            manifest = views.manifest_frame(record, needle)
            total = sum(len(p.objects) for p in pins.data.values())
            st.caption(f"{len(manifest):,} of {total:,} objects" + (" (first 1,000 shown)" if len(manifest) > 1000 else ""))
            st.dataframe(manifest.head(1000), hide_index=True, key="manifest")
            st.caption("Which other runs read one of these objects: the Lineage page.")

    with image:
        stood_in = pins.image.stood_in()
        if stood_in:
            st.info(stood_in + ": the requested image did not run.", icon=":material/swap_horiz:")
        st.table(views.facts_frame([("image requested", pins.image.uri), ("ran", stood_in or "the requested image"),
                                        ("stand-in fingerprint" if stood_in else "digest", pins.image.digest),
                                        ("pinned uri", pins.image.pinned_uri), ("resolved by", pins.image.source)]
                                       ).set_index(""))

    with hardware:
        hw = pins.hardware
        st.table(views.facts_frame([
            ("requested", hw.describe_requested()), ("ran", hw.describe_ran(record.backend)),
            ("ran: observed", (hw.ran or {}).get("how"))]).set_index(""))

    with environment:
        env = pins.environment
        st.table(views.facts_frame([("python", env.python), ("platform", env.platform),
                                        ("packages", len(env.packages)), ("fingerprint", env.fingerprint)]
                                       ).set_index(""))
        if env.packages:
            packages = pd.DataFrame(sorted(env.packages.items()), columns=["package", "version"])
            st.dataframe(packages, hide_index=True, key="packages", height=300)
        st.markdown("**Hyperparameters**")
        if pins.hyperparameters:
            st.dataframe(pd.DataFrame(sorted(pins.hyperparameters.items()), columns=["name", "value"]),
                         hide_index=True, key="hyperparameters")
        else:
            st.caption("none")

    with result:
        artifact = outcome.model_artifact
        st.table(views.facts_frame([
            ("status", outcome.status), ("arn", outcome.arn), ("started", outcome.started_at),
            ("ended", outcome.ended_at), ("billable seconds", outcome.billable_seconds),
            ("failure", outcome.failure_reason),
            ("model artifact", artifact.uri if artifact else None),
            ("model version", artifact.version_id if artifact else None),
            ("model sha256", artifact.sha256 if artifact else None),
            ("model tree sha256", artifact.tree_sha256 if artifact else None),
        ]).set_index(""))
        if outcome.metrics:
            st.dataframe(pd.DataFrame(sorted(outcome.metrics.items()), columns=["metric", "final value"]),
                         hide_index=True, key="final_metrics")
        else:
            st.caption("No final metrics recorded.")
        series = views.series_long([record])
        if not series.empty:
            names = sorted(series["metric"].unique())
            metric = st.selectbox("Metric series", names, key="run_series_metric", index=views.default_metric(names))
            st.plotly_chart(views.series_figure(series, metric), key="run_series")

    with gaps:
        if not pins.gaps:
            st.success("Fully pinned: every reference was resolved to an immutable one.", icon=":material/check_circle:")
        else:
            st.warning(f"{len(pins.gaps)} reference(s) could not be pinned; a reproduction may not get the same "
                       "inputs. Each fix says how to pin it next time.", icon=":material/warning:")
            st.dataframe(pd.DataFrame([{"what": g.what, "why": g.why, "fix": g.fix} for g in pins.gaps]),
                         hide_index=True, key="gaps")

    with reproductions:
        if record.reproduction_of:
            st.markdown(f"This run reproduces `{record.reproduction_of}`.")
            if record.verdict:
                st.markdown(f"Verdict: {views.badge(views.verdict_badge(record.verdict.result))}")
                if record.verdict.differences:
                    st.markdown("What differs from the original:")
                    st.dataframe(views.facts_table(record.verdict.differences), hide_index=True)
                if record.verdict.explained_by:
                    st.markdown("What drifted, or ran in place of what the original ran on, which may explain it:")
                    st.dataframe(views.facts_table(record.verdict.explained_by), hide_index=True)
                if record.verdict.compensated:
                    st.markdown("What drifted, but the pinned relaunch made up for:")
                    st.dataframe(views.facts_table(record.verdict.compensated), hide_index=True)
            else:
                st.caption("No verdict recorded yet.")
        copies = data.reproductions(record.run_id)
        if copies:
            st.dataframe(pd.DataFrame([{
                "reproduction": r.run_id, "job name": r.job_name, "status": views.status_badge(r.outcome.status),
                "verdict": views.verdict_badge(r.verdict.result if r.verdict else None, r.reproduction_of),
                "differences": len(r.verdict.differences) if r.verdict else None,
                "compare": f"compare?runs={record.run_id},{r.run_id}",
            } for r in copies]), hide_index=True, key="reproductions",
                column_config={"compare": st.column_config.LinkColumn("compare", display_text="compare ↗")})
        elif not record.reproduction_of:
            st.caption("Not reproduced yet. To reproduce it: `ledger reproduce " + record.run_id + "`")

    with request:
        st.json(record.request, expanded=2)
        if record.original_request:
            st.markdown("**As the SDK built it, before pinning**")
            st.json(record.original_request, expanded=1)

    with raw:
        st.download_button("Download the record (JSON)", record.to_json(), file_name=f"{record.run_id}.json",
                           mime="application/json", key="json_download")
        st.json(record.to_dict(), expanded=1)
