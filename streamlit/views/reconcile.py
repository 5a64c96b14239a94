"""Reconcile: every place where certs/, the ledger and the CA's CRL disagree, with the fitting action.

The CA's records are the truth; folder names are only what was written down. Each action is audited.
"""

import streamlit as st

from pki.reconcile import Action
from pki.roles import Role
from views import common
from views.tables import table_of

st.title("Reconcile")
fleet = common.fleet()

common.show_outcome("reconcile_result")

found = common.disagreements(common.table())
if found is None:
    st.stop()
if not found:
    st.success("certs/, the CA's records and its CRL agree: nothing to reconcile.", icon=":material/check_circle:")
    st.stop()

st.caption(f"{len(found)} disagreement(s). Select a row for what can be done about it.")
event = st.dataframe(
    table_of(
        {
            "Problem": d.problem.value,
            "Identity": d.identity,
            "Serial": d.serial_hex,
            "Where": f"certs/{d.folder}" if d.folder else d.record.source if d.record else "",
            "Details": d.detail,
        }
        for d in found
    ),
    key="reconcile_table",
    on_select="rerun",
    selection_mode="single-row",
    hide_index=True,
)
selected = event.selection.rows if event else []
chosen = found[selected[0]] if selected and selected[0] < len(found) else (found[0] if len(found) == 1 else None)
if chosen is None:
    st.stop()

st.subheader(f"{chosen.identity}: {chosen.problem.value}")
st.write(chosen.detail)
common.only(Role.OPERATOR, "resolve disagreements")


def finish(level: str, message: str) -> None:
    st.session_state["reconcile_result"] = (level, message)
    st.rerun()


for action, label in ((Action.FILE, "File it"), (Action.MARK_FOREIGN, "Mark as foreign")):
    if action in chosen.actions and st.button(label, key=f"{action}-{chosen.folder}"):
        try:
            message = fleet.resolve(common.actor(), chosen, action)
        except common.FAILED as exc:
            common.show_failure(exc, label)
        else:
            finish("success", f"**{chosen.identity}**: {message}")

if Action.REVOKE in chosen.actions and chosen.record is not None:
    # Keyed by the serial: a press meant for a row that another session resolved meanwhile does nothing.
    with st.form(f"reconcile_revoke_{chosen.serial_hex}"):
        reason_code = common.reason_select(default=4)  # superseded: most of these are left-overs
        confirmation = st.text_input("Type the common name to confirm", placeholder=chosen.identity)
        submitted = st.form_submit_button(f"Revoke serial {chosen.serial_hex}", type="primary")
    if submitted:
        try:
            result = fleet.revoke(
                common.actor(),
                chosen.identity,
                reason_code=reason_code,
                confirmation=confirmation,
                serials={chosen.record.serial},
            )
        except common.FAILED as exc:
            common.show_failure(exc, "Revoking")
        else:
            outcome = result.outcomes[0]
            crl_note = "the CA's CRL lists it" if outcome.on_crl else "the CRL does not list it yet"
            finish(
                "success" if result.confirmed else "warning",
                f"**{chosen.identity}**: serial `{chosen.serial_hex}` {outcome.answer}; {crl_note}.",
            )
