"""Broker check: is revocation enforced at the broker? (pki.broker_check runs the six checks.)"""

import os

import streamlit as st

from pki.broker_check import BrokerCheck
from pki.roles import Role
from pki.settings import data_dir
from views import common
from views.tables import table_of

st.title("Broker check")
st.caption(
    "Six checks against the broker as the sites reach it (through HAProxy): its certificate, and that it "
    "refuses a client without a certificate, one of another CA, a revoked one and a server-only one, while "
    "a valid one gets in. The check issues its own short-lived canary certificates (never counted with the fleet)."
)
check = BrokerCheck(common.fleet(), data_dir(os.environ) / "broker-check")
address = st.text_input("Broker (HOST:PORT)", value=common.fleet().settings.broker_address)
if common.may(Role.OPERATOR) and st.button("Run the check", icon=":material/play_arrow:", type="primary"):
    with st.spinner("Checking the broker..."):
        try:
            check.run(common.actor(), address)
        except common.FAILED as exc:
            common.show_failure(exc, "The broker check")
last = check.last()
if last:
    st.subheader(f"Last run: {last['broker']} at {last['time']}")
    st.dataframe(table_of(last["results"], ["number", "outcome", "name", "detail", "fix"]), hide_index=True)  # type: ignore[arg-type]
    if all(r["outcome"] == "PASS" for r in last["results"]):  # type: ignore[attr-defined,union-attr]
        st.success("Every check passed: the broker enforces revocation.", icon=":material/check_circle:")
else:
    st.info("No check has run yet.", icon=":material/info:")
