"""The ledger's dashboard: `ledger dashboard` runs `streamlit run` on this file.

Read-only: it browses, compares and verifies the ledger through the library's read API, and shows the commands
to copy for anything that would launch a job.
"""

import streamlit as st

from ledger.dashboard import data

st.set_page_config(page_title="Ledger", page_icon=":material/menu_book:", layout="wide")

PAGES = [
    st.Page("page_runs.py", title="Runs", icon=":material/table_rows:", url_path="runs", default=True),
    st.Page("page_compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    st.Page("page_run.py", title="Run", icon=":material/description:", url_path="run"),
    st.Page("page_lineage.py", title="Lineage", icon=":material/account_tree:", url_path="lineage"),
    st.Page("page_integrity.py", title="Integrity", icon=":material/verified_user:", url_path="integrity"),
]

page = st.navigation(PAGES)

with st.sidebar:
    st.markdown("### :material/menu_book: Reproducibility ledger")
    with data.friendly_errors():
        book = data.open_book()
        seq, head_hash = book.head()
        st.caption(f"`{book.where}`")
        st.caption(f"{seq:,} entries · head `{head_hash[:12]}…`" if seq else "no entries yet")
    st.caption("Read-only: commands to copy, never a launch.")

page.run()
