"""Issue Certificate: a form, the certificate filed under certs/{CN}/, and a ZIP bundle to hand over."""

import streamlit as st

from pki.issuing import IssueRequest
from pki.keys import DEFAULT_KEY_TYPE, KEY_TYPES
from pki.model import Kind
from pki.roles import Role
from views import common

PRESETS = (30, 90, 365, 730)
KINDS = {"Client (site)": Kind.CLIENT, "Server (broker)": Kind.SERVER}

st.title("Issue Certificate")
settings = common.settings()
fleet = common.fleet()
common.only(Role.OPERATOR, "issue certificates")
st.caption(
    "For a site, **Enroll a Site** is the better way: its key is made on the site and never travels. Here the "
    "key is made on this server and handed over in an encrypted bundle (brokers, or sites without the step CLI)."
)
longest = max(fleet.limits().values())
presets = [f"{days} days" for days in PRESETS if days <= longest]
default_preset = f"{settings.default_days} days"

with st.form("issue"):
    cn = st.text_input("Common name (CN)", placeholder="site-001, or mqtt.ak-sg.com for a broker")
    kind_label = st.radio("Type", list(KINDS), horizontal=True)
    validity = st.radio(
        "Validity",
        [*presets, "Custom"],
        index=presets.index(default_preset) if default_preset in presets else 0,
        horizontal=True,
    )
    custom_days = st.number_input(
        f"Custom validity in days (used when Validity is Custom; at most {longest})",
        value=settings.default_days,
        step=1,
    )
    sans = st.text_area(
        "Subject alternative names",
        placeholder="mqtt.ak-sg.com\n10.0.80.50",
        help="One DNS name or IP address per line. For a server certificate the CN is added as a SAN.",
    )
    key_type = st.selectbox("Key type", list(KEY_TYPES), index=list(KEY_TYPES).index(DEFAULT_KEY_TYPE))
    st.caption("Names are lower-cased and lose a trailing dot: SITE-001 and site-001. are site-001.")
    submitted = st.form_submit_button("Issue certificate", type="primary")

if submitted:
    days = custom_days if validity == "Custom" else int(validity.split()[0])
    request = IssueRequest(cn=cn, kind=KINDS[kind_label], sans=sans, days=days, key_type=key_type)
    st.session_state.pop("issued", None)
    try:
        with st.spinner("Issuing..."):
            issued = fleet.issue(common.actor(), request)
    except common.FAILED as exc:
        common.show_failure(exc, "Issuing")
    else:
        # This session's own serial: the result never shows what another session filed meanwhile.
        st.session_state["issued"] = common.remember_issued(issued)

if shown := st.session_state.get("issued"):
    common.show_issued(*shown)
