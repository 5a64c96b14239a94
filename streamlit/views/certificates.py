"""View Certificates: every certificate of the fleet (certs/ and the CA's journal), searchable, with
details, the public certificate, and re-issue for broker certificates."""

import streamlit as st

from pki import report
from pki.model import Kind, Status
from pki.roles import Role
from views import common
from views.tables import table_of

PAGE_ROWS = 1000
"""Rows sent to the browser at once. A fleet of 100,000 is searched, not scrolled: the whole table would cost
the server a DataFrame and its Arrow copy (about 100 MB) and the browser 16 MB on every visit."""


st.title("View Certificates")
fleet = common.fleet()
fleet_table = common.table()
now, table = fleet_table.now, fleet_table.rows

# Column widths that fit the table at 1400 px with the sidebar open; the details show every value whole.
COLUMN_CONFIG = {
    "CN": st.column_config.TextColumn(width=130),
    "Type": st.column_config.TextColumn(width=55),
    "Serial": st.column_config.TextColumn(width=95),
    "SANs": st.column_config.TextColumn(width=125),
    "Issued": st.column_config.TextColumn(width=85),
    "Expires": st.column_config.TextColumn(width=85),
    "Days left": st.column_config.NumberColumn(width=60),
    "Status": st.column_config.TextColumn(width=105),
    "Source": st.column_config.TextColumn(width=115),
}

if st.session_state.pop("clear_selection", False):
    # After a re-issue the rows moved: a remembered row number would now point at another certificate.
    st.session_state.pop("certificate_table", None)
    for key in [k for k in st.session_state if str(k).startswith("reissue-sure-")]:
        st.session_state.pop(key, None)

search_col, status_col, type_col = st.columns([2, 1, 1])
text = search_col.text_input("Search certificates", placeholder="CN, serial, SAN or source")
statuses = status_col.multiselect("Status", [s.value for s in Status])
kinds = type_col.multiselect("Type", [k.value for k in Kind])
positions = fleet_table.search(text, statuses, kinds)
pages = max(1, -(-len(positions) // PAGE_ROWS))
# The label names the count: another count (a new search) is another widget, which starts at page 1.
page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1) if pages > 1 else 1
start = (int(page) - 1) * PAGE_ROWS
# A selected row is a position on the page shown: on another page or search it would be another certificate.
looked_at = (int(page), text, tuple(statuses), tuple(kinds))
if st.session_state.get("certificate_rows") != looked_at:
    st.session_state["certificate_rows"] = looked_at
    st.session_state.pop("certificate_table", None)
shown = [table[i] for i in positions[start : start + PAGE_ROWS]]

rows_shown = f", rows {start + 1} to {start + len(shown)} shown (search or filter to narrow)" if pages > 1 else ""
st.caption(f"{len(positions)} of {len(table)} certificates{rows_shown}. Select a row for its details.")
event = st.dataframe(
    table_of((row.as_dict(now) for row in shown), report.COLUMNS),
    key="certificate_table",
    on_select="rerun",
    selection_mode="single-row",
    hide_index=True,
    column_config=COLUMN_CONFIG,
)
selected_rows = event.selection.rows if event else []
focus = st.session_state.get("focus_serial")
focused = [table[i] for i in positions if table[i].record.serial == focus] if focus is not None else []
if selected_rows and selected_rows[0] < len(shown):
    chosen = shown[selected_rows[0]]
    st.session_state.pop("focus_serial", None)
elif focused:
    chosen = focused[0]  # the certificate a re-issue just made
elif len(positions) == 1:
    chosen = shown[0]  # a search that finds one certificate shows it at once
else:
    chosen = None

if chosen:
    record = chosen.record
    st.subheader(f"{record.cn}: {chosen.status.value}")
    if record.error:
        st.error(f"`{record.path}` cannot be read: {record.error}")
    else:
        left, right = st.columns(2)
        left.markdown(
            f"**Type** {record.kind.value}  \n**Serial** `{record.serial_hex}`  \n"
            f"**Issued** {record.not_before:%Y-%m-%d %H:%M} UTC  \n"
            f"**Expires** {record.not_after:%Y-%m-%d %H:%M} UTC  \n"
            f"**Source** `{record.source}`  \n**Private key here** {'yes' if record.has_key else 'no'}"
        )
        right.markdown(
            f"**Issuer** {record.issuer}  \n**SANs** {', '.join(record.sans) or 'none'}  \n"
            f"**SHA-256 fingerprint**  \n`{record.fingerprint() or '(the file changed since it was listed)'}`"
        )
        pem = record.pem()
        st.download_button(
            "Download certificate (public, no key)",
            data=pem,
            file_name=f"{record.cn}.crt",
            mime="application/x-pem-file",
            icon=":material/download:",
            on_click="ignore",
        )
        st.code(pem, language=None)

        just_reissued = (st.session_state.get("reissued") or ("",))[0] == chosen.identity
        if fleet.may_bundle(chosen) and common.may(Role.OPERATOR) and not just_reissued:
            st.subheader("ZIP bundle")
            st.caption(
                "The private key of this certificate is here: a bundle with it, encrypted with a new passphrase, "
                "can be made again (a lost download, a broker re-installed). Every bundle is audited."
            )
            broker = None
            if record.kind is Kind.CLIENT:
                broker = st.text_input("Broker address the site dials", value=common.settings().broker_address)
            common.bundle_controls(record.serial, record.cn, broker)

        if fleet.can_reissue(chosen) and common.may(Role.OPERATOR):
            st.subheader("Re-issue")
            st.caption(
                "A broker certificate (serverAuth only) cannot renew itself. Re-issue it: a new key and "
                f"certificate with the same names. Its folder is renamed {record.identity}.replaced (numbered if "
                "that exists) and the old certificate stays valid until it is revoked or expires: install the new "
                "bundle on the broker, then revoke the old one (Revoke Certificate ticks just that one)."
            )
            # Keyed by serial: a tick given for one certificate never carries over to another one.
            sure = st.checkbox(
                f"Yes, make a new key and certificate for {record.identity}", key=f"reissue-sure-{record.serial}"
            )
            reissue = st.button(
                "Re-issue this broker certificate",
                icon=":material/autorenew:",
                disabled=not sure,
                key=f"reissue-{record.serial}",
            )
            if reissue and sure:
                try:
                    with st.spinner("Issuing..."):
                        issued = fleet.reissue(common.actor(), record.serial)
                except common.FAILED as exc:
                    common.show_failure(exc, "Re-issuing")
                else:
                    st.session_state["reissued"] = (record.identity, common.remember_issued(issued))
                    st.session_state["focus_serial"] = issued.record.serial
                    st.session_state["clear_selection"] = True
                    st.rerun()

# The result (and its key download) stays while that identity is the one selected, no longer.
reissued = st.session_state.get("reissued")
if reissued and chosen and chosen.identity == reissued[0]:
    common.show_issued(*reissued[1], verb="Re-issued")
elif reissued:
    del st.session_state["reissued"]
