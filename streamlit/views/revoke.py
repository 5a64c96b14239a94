"""Revoke Certificate: pick a site or broker, a reason, confirm by typing its name.

Every valid certificate of that identity is offered, wherever it is filed: the one in certs/, those
in archived folders, and those the CA's journal knows (a site enrolled by token, each renewal a new
serial). The result lists each serial with the CA's answer and whether its CRL lists it.
"""

import streamlit as st

from pki import report
from pki.model import Kind
from pki.roles import Role
from views import common

BROKER_NOTE = (
    "Revoking a broker certificate changes nothing at the sites: Mosquitto bridges do not check CRLs, so a "
    "site trusts a broker certificate until it expires. Revoke a replaced broker certificate to keep the "
    "records tidy; if the broker's key leaked, the sites are protected only once the certificate expires."
)

st.title("Revoke Certificate")
fleet = common.fleet()
common.only(Role.OPERATOR, "revoke certificates")

common.show_outcome("revoke_result")

by_identity = common.table().revocable

if not by_identity:
    st.info("No active certificate to revoke.")
    st.stop()


def describe(identity: str) -> str:
    rows = by_identity[identity]
    kinds = "/".join(sorted({row.record.kind.value for row in rows}))
    plural = "s" if len(rows) > 1 else ""
    return f"{identity} ({kinds}, {len(rows)} valid certificate{plural})"


identity = st.selectbox(
    "Certificate", list(by_identity), index=None, placeholder="Choose a site or broker", format_func=describe
)
if identity is None:
    st.caption("Choose the site or broker whose certificates to revoke.")
    st.stop()

rows = {row.record.serial: row for row in by_identity[identity]}


def label(serial: int) -> str:
    record = rows[serial].record
    note = ", superseded" if rows[serial].superseded else ""
    return (
        f"serial {record.serial_hex} ({record.kind.value}, expires {record.not_after:%Y-%m-%d}, {record.source}{note})"
    )


is_broker = any(row.record.kind is Kind.SERVER for row in rows.values())
default = report.likely_to_revoke(list(rows.values()))
with st.form("revoke"):
    chosen = st.multiselect(
        f"Certificates of {identity} to revoke",
        list(rows),
        default=[row.record.serial for row in default],
        format_func=label,
    )
    reason_code = common.reason_select()
    confirmation = st.text_input("Type the common name to confirm", placeholder="the CN of the chosen certificate")
    if len(default) < len(rows):
        st.caption(
            "Ticked: the certificates a re-issue replaced. The broker's current certificate is not ticked: "
            "tick it too only to take the broker's certificate away altogether."
        )
    else:
        st.caption(
            "Ticked: every valid certificate of this identity (renewals and archived folders included). "
            "Untick one to keep it."
        )
    st.caption(
        "Revocation is permanent. A folder whose certificate is revoked is renamed {CN}.revoked and kept for "
        "audit. Brokers refuse a revoked certificate once they load the new CRL."
    )
    if is_broker:
        st.info(BROKER_NOTE, icon=":material/info:")
    submitted = st.form_submit_button("Revoke certificate", type="primary")

if submitted:
    try:
        with st.spinner("Revoking..."):
            result = fleet.revoke(
                common.actor(), identity, reason_code=reason_code, confirmation=confirmation, serials=chosen
            )
    except common.FAILED as exc:
        common.show_failure(exc, "Revoking")
    else:
        lines = [f"**{identity}**:"]
        for outcome in result.outcomes:
            crl_note = "listed on the CA's CRL" if outcome.on_crl else "NOT on the CRL yet"
            lines.append(
                f"- serial `{outcome.record.serial_hex}` ({outcome.record.source}): {outcome.answer}, {crl_note}"
            )
        for old, new in result.renamed.items():
            lines.append(f"- folder `certs/{old}/` is now `certs/{new}/`")
        for folder, why in result.not_renamed.items():
            lines.append(f"- folder `certs/{folder}/` could not be renamed ({why}); the revocation stands")
        for record in result.still_valid:
            lines.append(f"- serial `{record.serial_hex}` ({record.source}) is valid: new since the page was shown")
        if result.warning:
            lines.append(f"- {result.warning}")
        if result.crl_problem:
            lines.append(f"- the CRL could not be fetched to confirm: {result.crl_problem}")
        if result.confirmed:
            lines.append("\nThe CA's CRL now lists " + ("it." if len(result.outcomes) == 1 else "them all."))
        lines.append(
            "\n**Next:** a Mosquitto broker refuses it once it reads the new CRL, within 15 minutes; at once with "
            "`sudo systemctl start app-pki-crl-refresh` on the broker. EMQX reads the CRL itself; kick a site that "
            "is still connected on its dashboard."
        )
        if any(outcome.record.kind is Kind.SERVER for outcome in result.outcomes):
            lines.append("\n" + BROKER_NOTE)
        st.session_state["revoke_result"] = ("success" if result.confirmed else "warning", "\n".join(lines))
        st.rerun()
