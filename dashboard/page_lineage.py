"""Lineage: which runs read an S3 object (or a version of it, or anything under a prefix), and the models they made."""

import pandas as pd
import streamlit as st

from ledger.dashboard import data, views
from ledger.errors import LedgerError

st.title("Lineage")
st.caption("Which runs read this data, and what they made from it. An S3 URI ending in `/` searches a prefix.")

with data.friendly_errors():
    if data.head()[0] == 0:
        data.empty_state()
        st.stop()

    for name in ("uri", "version"):  # ?uri=s3://…&version=… opens a search directly (links, the Run page)
        from_url = st.query_params.get(name, "")
        if st.session_state.get(f"lineage_{name}_from_url") != from_url or f"lineage_{name}" not in st.session_state:
            st.session_state[f"lineage_{name}_from_url"] = from_url
            st.session_state[f"lineage_{name}"] = from_url
    with st.form("lineage_form", border=False):
        columns = st.columns([6, 3, 1], vertical_alignment="bottom")
        uri = columns[0].text_input("S3 URI", key="lineage_uri",
                                    placeholder="s3://my-bucket/datasets/train/part-00000.csv")
        version = columns[1].text_input("Version id (optional)", key="lineage_version",
                                        placeholder="any version")
        columns[2].form_submit_button("Search", type="primary", icon=":material/search:")

    uri, version = uri.strip(), version.strip()
    if not uri:
        st.info("Enter the S3 URI of an object (or a prefix ending in `/`) that training jobs read.", icon=":material/search:")
        st.stop()
    if (uri, version) != (st.query_params.get("uri", ""), st.query_params.get("version", "")):
        st.query_params.from_dict({"uri": uri, "version": version} if version else {"uri": uri})
        st.session_state["lineage_uri_from_url"], st.session_state["lineage_version_from_url"] = uri, version

    try:
        found, versions = data.lineage(uri, version or None)
    except LedgerError as error:
        st.error(error.message, icon=":material/warning:")
        st.info(f"Next: {error.hint}")
        st.stop()

    if versions and not version:
        st.caption("Versions of this object that recorded runs read: " + ", ".join(
            f"`{v['version_id'] or 'unversioned'}` ({v['runs']} run{'s' if v['runs'] > 1 else ''})" for v in versions))
    if found.empty:
        what = f"version `{version}` of `{uri}`" if version else f"`{uri}`"
        st.warning(f"No recorded run read {what}.", icon=":material/search:")
        st.caption("Only S3 inputs pinned at capture are indexed (LEDGER_DATA_PIN=versions or snapshot).")
        st.stop()

    runs = found.drop_duplicates("run_id")
    models = runs["model_uri"].notna().sum()
    cols = st.columns(3)
    cols[0].metric("Runs that read it", f"{len(runs):,}")
    cols[1].metric("Objects matched", f"{found[['bucket', 'key', 'version_id']].drop_duplicates().shape[0]:,}")
    cols[2].metric("Model artifacts made", f"{models:,}")

    table = pd.DataFrame({
        "run id": runs["run_id"], "job name": runs["job_name"], "project": runs["project"],
        "status": [views.status_badge(s) for s in runs["status"]],
        "created": pd.to_datetime(runs["created_at"], format="ISO8601", utc=True).dt.tz_convert(None),
        "channel": runs["channel"], "object read": runs["key"], "version read": runs["version_id"],
        "model artifact": runs["model_uri"], "model tree sha256": runs["model_tree_sha256"],
        "verdict": [views.verdict_badge(v, r) for v, r in zip(runs["verdict"], runs["reproduction_of"])],
        "open": [f"run?run={r}" for r in runs["run_id"]],
    })
    st.dataframe(table, hide_index=True, key="lineage_runs", column_config={
        "created": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm"),
        "open": st.column_config.LinkColumn("open", display_text="open ↗", width="small"),
    })
    if len(found) > len(runs):
        with st.expander(f"Every object read ({len(found):,} rows)"):
            st.dataframe(found[["run_id", "channel", "bucket", "key", "version_id", "etag", "size"]],
                         hide_index=True, key="lineage_objects")
    flag = f" --version-id {version}" if version else ""
    st.code(f"ledger lineage {uri}{flag}", language="bash")
