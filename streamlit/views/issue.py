"""Issue Certificate: a form, the certificate filed under certs/{CN}/, and a ZIP bundle to hand over."""

import streamlit as st

from pki.ca import DEFAULT_KEY_TYPE, KEY_TYPES, CertKind
from pki.issuing import IssueRequest, issue_certificate
from views import common

PRESETS = (30, 90, 365, 730)
KINDS = {"Client (site)": CertKind.CLIENT, "Server (broker)": CertKind.SERVER}

st.title("Issue Certificate")
settings = common.settings()
limits = common.max_days()
longest = max(limits.values())
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
    submitted = st.form_submit_button("Issue certificate", type="primary")

if submitted:
    kind = KINDS[kind_label]
    days = custom_days if validity == "Custom" else int(validity.split()[0])
    request = IssueRequest(cn=cn, kind=kind, sans=sans, days=days, key_type=key_type)
    st.session_state.pop("issued_folder", None)
    try:
        with st.spinner("Issuing..."):
            issued = issue_certificate(
                common.ca(),
                common.inventory(),
                request,
                max_days=limits[kind],
                revoked_serials=common.revoked_serials(),
                audit=common.audit(),
            )
    except common.FAILED as exc:
        common.show_failure(exc, "Issuing")
    else:
        common.forget_ca_state()
        st.session_state["issued_folder"] = issued.record.folder
        st.session_state["issued_archived_as"] = issued.archived_as

folder = st.session_state.get("issued_folder")
record = common.inventory().current(folder) if folder else None
if record:
    common.show_issued(record, st.session_state.get("issued_archived_as"))
