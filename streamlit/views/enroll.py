"""Enroll a Site: a one-time token and the exact command to paste on the site.

The site makes its own key with scripts/enroll-site.sh and gets its certificate with the token:
the private key never leaves the site.
"""

import streamlit as st

from pki.enrollment import MAX_TOKEN_HOURS
from pki.roles import Role
from pki.tokens import TokenState
from views import common
from views.tables import table_of

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
            f"An earlier token for {enrollment.site} has not been used, and can be until {expires:%Y-%m-%d %H:%M} "
            "UTC. If both are used the site gets two certificates: cancel the one you do not need (below).",
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

st.subheader("Tokens")
common.show_outcome("token_cancelled")
try:
    statuses = fleet.tokens(common.actor())
except common.FAILED as exc:
    common.show_failure(exc, "Listing the tokens")
    statuses = []
if not statuses:
    st.caption("No enrolment token was made here yet.")
else:
    st.caption(
        "Every token made here. Used, cancelled: as the CA's own journal shows (a token is spent by its first "
        "use). Cancel an unused token that went astray: the CA spends it without a certificate and refuses it "
        "from then on."
    )
    st.dataframe(
        table_of(
            {
                "Site": s.made.site,
                "Made": f"{s.made.made:%Y-%m-%d %H:%M}",
                "By": s.made.made_by,
                "Expires": f"{s.made.expires:%Y-%m-%d %H:%M}",
                "State": s.state.value,
                "Certificate": s.serial,
            }
            for s in statuses
        ),
        hide_index=True,
    )
    unused = {s.made.token_ref: s for s in statuses if s.state is TokenState.UNUSED and s.made.token_ref}
    if unused:
        chosen = st.selectbox(
            "Unused token to cancel",
            list(unused),
            index=None,
            format_func=lambda i: (
                f"{unused[i].made.site}, made {unused[i].made.made:%Y-%m-%d %H:%M} by "
                f"{unused[i].made.made_by}, valid until {unused[i].made.expires:%Y-%m-%d %H:%M} UTC"
            ),
        )
        if st.button("Cancel token", icon=":material/block:", disabled=chosen is None) and chosen:
            try:
                with st.spinner("Spending the token at the CA..."):
                    message = fleet.cancel_token(common.actor(), chosen)
            except common.FAILED as exc:
                common.show_failure(exc, "Cancelling the token")
            else:
                st.session_state["token_cancelled"] = ("success", message)
                st.rerun()
