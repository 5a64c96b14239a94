"""Revoke Certificate: pick a site or broker, a reason, confirm by typing its CN.

Every valid certificate of that CN is revoked: the one in certs/, and those the CA's log knows
(a site enrolled by token, each renewal a new serial).
"""

import streamlit as st

from pki import report
from pki.ca import REVOCATION_REASONS
from pki.issuing import revoke_cn
from views import common

st.title("Revoke Certificate")
settings = common.settings()

done = st.session_state.pop("revoke_message", None)
if done:
    kind, message = done
    (st.success if kind == "success" else st.warning)(message, icon=":material/check_circle:")

now = common.now()
crl, _ = common.crl()
revoked_serials = crl.revoked if crl else None
table = report.rows(common.records(), now, revoked_serials, settings.expiring_days)
by_cn = report.revocable(table)

if not by_cn:
    st.info("No active certificate to revoke.")
    st.stop()


def describe(cn: str) -> str:
    rows = by_cn[cn]
    kinds = "/".join(sorted({row.record.kind.value for row in rows}))
    plural = "s" if len(rows) > 1 else ""
    return f"{cn} ({kinds}, {len(rows)} valid certificate{plural})"


cn = st.selectbox("Certificate", list(by_cn), index=None, placeholder="Choose a site or broker", format_func=describe)
if cn is None:
    st.caption("Choose the site or broker whose certificates to revoke.")
    st.stop()

rows = {row.record.serial: row for row in by_cn[cn]}


def label(serial: int) -> str:
    record = rows[serial].record
    note = ", superseded" if rows[serial].superseded else ""
    return (
        f"serial {record.serial_hex} ({record.kind.value}, expires {record.not_after:%Y-%m-%d}, {record.source}{note})"
    )


with st.form("revoke"):
    chosen = st.multiselect(f"Certificates of {cn} to revoke", list(rows), default=list(rows), format_func=label)
    reason_code = st.selectbox(
        "Reason (RFC 5280)", list(REVOCATION_REASONS), format_func=lambda c: f"{REVOCATION_REASONS[c]} ({c})"
    )
    confirmation = st.text_input("Type the common name to confirm", placeholder="the CN of the chosen certificate")
    st.caption(
        "Revocation is permanent. By default every valid certificate of the CN goes (renewals included); "
        "untick one to keep it (e.g. revoke only the broker certificate a re-issue replaced). The folder "
        "certs/{CN} is renamed {CN}.revoked when its certificate is revoked, and kept for audit; brokers "
        "refuse the certificates once they load the new CRL."
    )
    submitted = st.form_submit_button("Revoke certificate", type="primary")

if submitted:
    try:
        with st.spinner("Revoking..."):
            result = revoke_cn(
                common.ca(),
                common.inventory(),
                cn,
                reason_code=reason_code,
                confirmation=confirmation,
                revoked_serials=revoked_serials,
                audit=common.audit(),
                only=chosen,
            )
    except common.FAILED as exc:
        common.show_failure(exc, "Revoking")
    else:
        common.forget_ca_state()
        crl, crl_problem = common.crl()
        serials = ", ".join(f"{s:X}" for s in result.serials)
        listed = crl is not None and all(s in crl.revoked for s in result.serials)
        message = f"**{cn}**: revoked serial {serials}."
        if result.folder:
            message += f" Its folder is now `certs/{result.folder}/`."
        if listed:
            message += " The CA's CRL now lists " + ("it." if len(result.serials) == 1 else "them all.")
        else:
            message += f" The CRL could not confirm it yet ({crl_problem or 'not listed'})."
        if result.failures:
            failed = "; ".join(f"{s:X}: {why}" for s, why in result.failures.items())
            message += f" NOT revoked: {failed}"
        st.session_state["revoke_message"] = ("success" if listed and not result.failures else "warning", message)
        st.rerun()
