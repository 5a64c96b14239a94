"""Enroll a Site: a one-time token and the exact command to paste on the site.

The site makes its own key with scripts/enroll-site.sh and gets its certificate with the token:
the private key never leaves the site.
"""

import streamlit as st

from pki.enrollment import MAX_TOKEN_HOURS
from pki.roles import Role
from views import common

st.title("Enroll a Site")
settings = common.settings()
fleet = common.fleet()
common.only(Role.OPERATOR, "make enrolment tokens")
st.caption(
    "Creates a one-time enrolment token for a site. On the site, enroll-site.sh makes the key, gets the "
    "certificate with the token, installs the Mosquitto bridge and daily renewal. The token works once, "
    "until it expires, also across CA restarts."
)

with st.form("enroll"):
    site = st.text_input("Site name (CN)", placeholder="site-001")
    hours = st.number_input(f"Token valid for (hours, 1 to {MAX_TOKEN_HOURS})", value=24, step=1)
    broker = st.text_input("Broker address the site dials", value=settings.broker_address)
    submitted = st.form_submit_button("Create enrolment token", type="primary")

if submitted:
    st.session_state.pop("enrollment", None)
    try:
        with st.spinner("Signing the token..."):
            st.session_state["enrollment"] = fleet.enroll(common.actor(), site, hours=hours, broker=broker)
    except common.FAILED as exc:
        common.show_failure(exc, "Making the token")

enrollment = st.session_state.get("enrollment")
if enrollment:
    st.success(
        f"Enrolment token for **{enrollment.site}**, usable once until {enrollment.expires:%Y-%m-%d %H:%M} UTC.",
        icon=":material/key:",
    )
    if enrollment.normalised_from:
        st.info(f"You typed `{enrollment.normalised_from}`: the site's name is `{enrollment.site}`.")
    for expires in enrollment.earlier_tokens:
        st.warning(
            f"An earlier token for {enrollment.site} can still be used until {expires:%Y-%m-%d %H:%M} UTC. "
            "If both are used the site gets two certificates: revoke the one it does not use.",
            icon=":material/warning:",
        )
    st.markdown(
        "1. Download `enroll-site.sh` (below) and copy it to the site.\n"
        "2. On the site, in the folder holding it, paste this whole command (the copy button is at the top "
        "right of the box). It runs the script with `bash`, so the download need not be executable, and "
        "passes the token on standard input, so it never shows in the process list:"
    )
    st.code(enrollment.command(), language="bash", wrap_lines=True)
    st.caption(
        "Check first with --dry-run added after enroll-site.sh: it changes nothing. The token is a secret "
        "until it is used; if it went astray, cancel it below."
    )
    if settings.enroll_script.is_file():
        st.download_button(
            "Download enroll-site.sh",
            data=settings.enroll_script.read_bytes(),
            file_name="enroll-site.sh",
            mime="text/x-shellscript",
            icon=":material/download:",
            on_click="ignore",
        )
