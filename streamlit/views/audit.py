"""Audit: who did what, when, from where; filtered, exported as CSV, and the chain of lines checked."""

import streamlit as st

from pki.audit import csv_of, rotated_files, search, verify
from views import common
from views.tables import table_of

COLUMNS = ["time", "user", "role", "via", "address", "action", "outcome", "cn", "serial", "account", "error"]

st.title("Audit")
trail = common.gate().audit
entries = trail.entries(limit=None)

left, middle, right = st.columns(3)
users = left.multiselect("User", sorted({str(e.get("user") or e.get("account") or "") for e in entries} - {""}))
actions = middle.multiselect("Action", sorted({str(e.get("action", "")) for e in entries}))
text = right.text_input("CN, serial or any text", placeholder="site-001")
since_col, until_col = st.columns(2)
since = since_col.date_input("From", value=None)
until = until_col.date_input("Until", value=None)
found = search(entries, users=users, actions=actions, text=text, since=since, until=until)

fields = {key for entry in found for key in entry}
st.caption(f"{len(found)} of {len(entries)} lines, newest first.")
st.dataframe(table_of(found, [c for c in COLUMNS if c in fields] or ["time"]), hide_index=True)
st.download_button(
    "Export CSV (every field of these lines)",
    csv_of(found),
    "audit.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
)

st.subheader("Chain of lines")
try:
    result = verify([*rotated_files(trail.path), trail.path]) if trail.path.exists() else None
except OSError as exc:
    st.error(f"The audit trail cannot be read: {exc}", icon=":material/error:")
    st.stop()
if result is None:
    st.caption("The audit trail is empty.")
elif result.broken:
    st.error(f"**The chain is broken.** {result.broken}", icon=":material/gpp_bad:")
else:
    st.success(
        f"The chain holds: {result.lines} lines ({result.unchained} from before the chain). "
        f"Hash of the last line: `{result.head}` (note it elsewhere: a cut-off end shows against it).",
        icon=":material/verified:",
    )
