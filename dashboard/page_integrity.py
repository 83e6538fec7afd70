"""Integrity: `ledger verify` on the running ledger: entries, head hash, when; the first bad entry when the log or a
projection was altered; and a check of an anchored head hash (from an audit report or `ledger anchor`)."""

import json

import pandas as pd
import streamlit as st

from ledger.dashboard import data

st.title("Integrity")
st.caption("Every entry's hash covers its body and the entry before it, so changing, removing or reordering any "
           "entry breaks the chain from there on. Recomputed now, each time this page runs: never cached.")

with data.friendly_errors():
    seq, head_hash = data.head()
    if seq == 0:
        st.info("The log is empty: nothing to verify yet.", icon=":material/inbox:")
        st.code("ledger demo", language="bash")
        st.stop()

    controls = st.columns([4, 1], vertical_alignment="center")
    check_projections = controls[0].toggle(
        "Also check the query tables (runs, params, metrics, data objects) against the log",
        value=seq <= 50_000, key="check_projections",
        help="The chain check reads every entry once; the projection check also folds every run's entries.")
    controls[1].button("Verify again", key="verify_again", icon=":material/refresh:")
    with st.spinner(f"Recomputing the chain of {seq:,} entries…"):
        report = data.verify(check_projections)

    if report.ok:
        st.success(f"Intact: {report.entries:,} entries, the chain recomputes to the head"
                   + (", and every projection row agrees with the log." if check_projections else "."), icon=":material/check_circle:")
    else:
        bad = report.first_bad
        where = f" at entry {bad['seq']} (run {bad['run_id']})" if bad.get("seq") is not None else ""
        st.error(f"TAMPERED{where}: {bad['problem']}", icon=":material/gpp_bad:")
        st.info("Next: restore the database from a backup; `ledger db rebuild` repairs projections only.")

    cols = st.columns([1, 1, 3, 2])
    cols[0].metric("Entries", f"{report.entries:,}")
    cols[1].metric("Head seq", f"{report.head_seq:,}")
    cols[2].markdown(f"**Head hash**  \n`{report.head_hash}`")
    cols[3].markdown(f"**Verified at (UTC)**  \n{report.verified_at[:19].replace('T', ' ')}")

    if not report.ok:
        st.subheader("The first bad entry")
        entry = data.entry(bad["seq"]) if bad.get("seq") is not None else None
        if entry is None:
            st.caption("The problem names no entry that still exists (a missing entry, or a projection row the "
                       "log does not have).")
        else:
            st.dataframe(pd.DataFrame({"": ["seq", "run id", "kind", "recorded at", "prev hash", "entry hash"],
                                       "value": [str(entry["seq"]), entry["run_id"], entry["kind"],
                                                 entry["recorded_at"], entry["prev_hash"], entry["entry_hash"]]}),
                         hide_index=True, key="bad_entry")
            try:
                body = json.loads(entry["body"])
            except ValueError:
                st.code(entry["body"][:4000], language="text")
            else:
                st.json(body, expanded=1)
        st.subheader(f"Every problem found ({len(report.problems)}{'+' if len(report.problems) >= 20 else ''})")
        st.dataframe(pd.DataFrame(report.problems, columns=["seq", "run_id", "problem"]), hide_index=True,
                     key="problems")

    st.subheader("Check an anchor")
    anchor = st.text_input("A head hash written down earlier (an audit report's, or `ledger anchor`'s)",
                           key="anchor", placeholder="64 hex characters").strip().lower()
    if anchor:
        at = data.seq_of_hash(anchor)
        if at is None:
            st.error("The log has no entry with this hash: entries were removed or rewritten since it was "
                     "anchored (or it is not from this ledger).", icon=":material/gpp_bad:")
        elif report.ok or (report.first_bad and (report.first_bad.get("seq") or 0) > at):
            st.success(f"The log still holds this head, at seq {at:,}; {report.head_seq - at:,} entries were "
                       "recorded after it.", icon=":material/check_circle:")
        else:
            st.warning(f"The log holds this hash at seq {at:,}, but the chain is broken at or before it.", icon=":material/warning:")

    st.caption("The same check on the command line (exit code 3 when tampered):")
    st.code("ledger verify", language="bash")
