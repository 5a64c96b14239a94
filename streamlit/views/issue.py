"""Issue Certificate: a form, the certificate filed under certs/{CN}/, and a ZIP bundle to hand over."""

import streamlit as st

from pki.enrollment import validate_broker
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

kind_label = st.radio("Type", list(KINDS), horizontal=True)
validity = st.radio(
    "Validity",
    [*presets, "Custom"],
    index=presets.index(default_preset) if default_preset in presets else 0,
    horizontal=True,
)
kind = KINDS[kind_label]
with st.form("issue"):
    cn = st.text_input("Common name (CN)", placeholder="site-001, or mqtt.ak-sg.com for a broker")
    custom_days = st.number_input(
        f"Custom validity in days (at most {longest})",
        value=settings.default_days,
        step=1,
        disabled=validity != "Custom",
        help="Choose Custom under Validity to set it.",
    )
    sans = st.text_area(
        "Subject alternative names",
        placeholder="Optional. One DNS name or IP address per line.",
        help="For a broker: every name and address the sites dial (the CN is added for you). For a site: usually none.",
    )
    key_type = st.selectbox("Key type", list(KEY_TYPES), index=list(KEY_TYPES).index(DEFAULT_KEY_TYPE))
    broker = ""
    if kind is Kind.CLIENT:
        broker = st.text_input(
            "Broker address the site dials",
            value=settings.broker_address,
            help="Goes into the bundle's bridge configuration; a name or address in the broker's certificate.",
        )
    st.caption("Names are lower-cased and lose a trailing dot: SITE-001 and site-001. are site-001.")
    submitted = st.form_submit_button("Issue certificate", type="primary")

if submitted:
    days = custom_days if validity == "Custom" else int(validity.split()[0])
    request = IssueRequest(cn=cn, kind=kind, sans=sans, days=days, key_type=key_type)
    st.session_state.pop("issued", None)
    try:
        if kind is Kind.CLIENT:
            broker = validate_broker(broker)  # a bad address changes nothing, like any bad input here
        with st.spinner("Issuing..."):
            issued = fleet.issue(common.actor(), request)
    except common.FAILED as exc:
        common.show_failure(exc, "Issuing")
    else:
        # This session's own serial: the result never shows what another session filed meanwhile.
        st.session_state["issued"] = (common.remember_issued(issued), broker or None)

if shown := st.session_state.get("issued"):
    issued_as, issued_broker = shown
    common.show_issued(*issued_as, broker=issued_broker)
