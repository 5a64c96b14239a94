"""View Certificates: every certificate of the fleet (certs/ and the CA's journal), searchable, with
details, the public certificate, and re-issue for broker certificates."""

import pandas as pd
import streamlit as st

from pki import report
from pki.model import Kind, Status
from pki.roles import Role
from views import common

st.title("View Certificates")
fleet = common.fleet()
fleet_table = common.table()
now, table = fleet_table.now, fleet_table.rows

search_col, status_col, type_col = st.columns([2, 1, 1])
text = search_col.text_input("Search certificates", placeholder="CN, serial, SAN or source")
statuses = status_col.multiselect("Status", [s.value for s in Status])
kinds = type_col.multiselect("Type", [k.value for k in Kind])
shown = report.search(table, text, statuses, kinds)

st.caption(f"{len(shown)} of {len(table)} certificates. Select a row for its details.")
event = st.dataframe(
    pd.DataFrame([row.as_dict(now) for row in shown], columns=report.COLUMNS),
    key="certificate_table",
    on_select="rerun",
    selection_mode="single-row",
    hide_index=True,
)
selected_rows = event.selection.rows if event else []
if selected_rows and selected_rows[0] < len(shown):
    chosen = shown[selected_rows[0]]
elif len(shown) == 1:
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
            f"**SHA-256 fingerprint**  \n`{record.fingerprint}`"
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

        if fleet.can_reissue(chosen) and common.may(Role.OPERATOR):
            st.subheader("Re-issue")
            st.caption(
                "A broker certificate (serverAuth only) cannot renew itself. Re-issue it: a new key and "
                f"certificate with the same names. Its folder is renamed {record.identity}.replaced (numbered if "
                "that exists) and the old certificate stays valid until it is revoked or expires: revoke it once "
                "the broker uses the new one."
            )
            if st.button("Re-issue this broker certificate", icon=":material/autorenew:"):
                try:
                    with st.spinner("Issuing..."):
                        issued = fleet.reissue(common.actor(), record.serial)
                except common.FAILED as exc:
                    common.show_failure(exc, "Re-issuing")
                else:
                    st.session_state["reissued"] = (record.identity, common.remember_issued(issued))

# The result (and its key download) stays while that identity is the one selected, no longer.
reissued = st.session_state.get("reissued")
if reissued and chosen and chosen.identity == reissued[0]:
    common.show_issued(*reissued[1], verb="Re-issued")
elif reissued:
    del st.session_state["reissued"]
