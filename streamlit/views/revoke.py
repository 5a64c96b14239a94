"""Revoke Certificate: pick an active certificate, a reason, confirm by typing its CN."""

import streamlit as st

from pki import report
from pki.ca import REVOCATION_REASONS
from pki.issuing import revoke_certificate
from pki.step import StepError
from pki.validate import InvalidInput
from views import common

st.title("Revoke Certificate")
settings = common.settings()

done = st.session_state.pop("revoke_message", None)
if done:
    kind, message = done
    (st.success if kind == "success" else st.warning)(message, icon=":material/check_circle:")

now = common.now()
crl, _ = common.crl()
table = report.rows(common.inventory().records(), now, crl.revoked if crl else None, settings.expiring_days)
active = {row.record.folder: row.record for row in table if row.status in report.VALID and row.record.archived is None}

if not active:
    st.info("No active certificate to revoke.")
    st.stop()

with st.form("revoke", clear_on_submit=True):
    folder = st.selectbox(
        "Certificate",
        list(active),
        index=None,
        placeholder="Choose an active certificate",
        format_func=lambda f: (
            f"{active[f].cn} ({active[f].kind.value}, serial {active[f].serial_hex}, "
            f"expires {active[f].not_after:%Y-%m-%d})"
        ),
    )
    reason_code = st.selectbox(
        "Reason (RFC 5280)", list(REVOCATION_REASONS), format_func=lambda c: f"{REVOCATION_REASONS[c]} ({c})"
    )
    confirmation = st.text_input("Type the common name to confirm", placeholder="the CN of the chosen certificate")
    st.caption(
        "Revocation is permanent. The certificate's folder is renamed to {CN}.revoked and kept for audit; "
        "brokers refuse the certificate once they load the new CRL."
    )
    submitted = st.form_submit_button("Revoke certificate", type="primary")

if submitted and folder is None:
    st.error("Choose the certificate to revoke.", icon=":material/edit:")
elif submitted:
    record = active[folder]
    try:
        with st.spinner("Revoking..."):
            result = revoke_certificate(
                common.ca(),
                common.inventory(),
                record,
                reason_code=reason_code,
                confirmation=confirmation,
                audit=common.audit(),
            )
    except InvalidInput as exc:
        st.error(str(exc), icon=":material/edit:")
    except StepError as exc:
        st.error(f"The certificate was not revoked. {exc}", icon=":material/error:")
    else:
        common.forget_ca_state()
        crl, crl_problem = common.crl()
        first = "was already revoked at the CA" if result.already_revoked else "is revoked"
        if crl and record.serial in crl.revoked:
            outcome = ("success", f"The CA's CRL now lists serial {record.serial_hex}.")
        else:
            outcome = ("warning", f"The CRL could not confirm it yet ({crl_problem or 'serial not listed'}).")
        st.session_state["revoke_message"] = (
            outcome[0],
            f"**{record.cn}** (serial `{record.serial_hex}`) {first}. "
            f"Its folder is now `certs/{result.folder}/`. {outcome[1]}",
        )
        st.rerun()
