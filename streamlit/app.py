"""app-pki GUI entry: page set-up, the optional password gate, navigation over the pages."""

import streamlit as st

from views import common

st.set_page_config(page_title="app-pki", page_icon=":material/verified_user:", layout="wide")
common.require_login()

pages = st.navigation(
    [
        st.Page("views/dashboard.py", title="Dashboard", icon=":material/dashboard:", default=True),
        st.Page("views/issue.py", title="Issue Certificate", icon=":material/add_card:"),
        st.Page("views/certificates.py", title="View Certificates", icon=":material/list_alt:"),
        st.Page("views/revoke.py", title="Revoke Certificate", icon=":material/block:"),
        st.Page("views/enroll.py", title="Enroll a Site", icon=":material/router:"),
        st.Page("views/reconcile.py", title="Reconcile", icon=":material/rule:"),
        st.Page("views/ca_settings.py", title="CA Settings", icon=":material/settings:"),
    ]
)
common.ca_status()
pages.run()
