"""View Certificates: every certificate under certs/, searchable, with details and a download."""

import pandas as pd
import streamlit as st

from pki import report
from pki.ca import CertKind
from pki.inventory import Kind, Status
from pki.issuing import reissue_certificate
from views import common

st.title("View Certificates")
settings = common.settings()
now = common.now()
crl, crl_problem = common.crl()
if crl is None:
    st.warning(
        f"The CA's CRL cannot be read ({crl_problem}): 'revoked' only reflects folders named .revoked.",
        icon=":material/warning:",
    )
table = report.rows(common.records(), now, crl.revoked if crl else None, settings.expiring_days)

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

        can_reissue = record.kind is Kind.SERVER and record.folder == record.cn and chosen.status in report.VALID
        if can_reissue:
            st.subheader("Re-issue")
            st.caption(
                "A broker certificate (serverAuth only) cannot renew itself. Re-issue it: a new key and "
                "certificate with the same names; the current one stays valid until you install the new one, "
                f"and its folder is kept as certs/{record.cn}.replaced."
            )
            if st.button("Re-issue this broker certificate", icon=":material/autorenew:"):
                try:
                    with st.spinner("Issuing..."):
                        issued = reissue_certificate(
                            common.ca(),
                            common.inventory(),
                            record,
                            max_days=common.max_days()[CertKind.SERVER],
                            revoked_serials=crl.revoked if crl else None,
                            audit=common.audit(),
                        )
                except common.FAILED as exc:
                    common.show_failure(exc, "Re-issuing")
                else:
                    st.session_state["reissued"] = (issued.record.folder, issued.archived_as)

# The result (and its key download) stays while that certificate is the one selected, no longer.
reissued = st.session_state.get("reissued")
if reissued and chosen and chosen.cn == reissued[0] and (record := common.inventory().current(reissued[0])):
    common.show_issued(record, reissued[1], verb="Re-issued")
elif reissued:
    del st.session_state["reissued"]
