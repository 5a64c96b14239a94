"""app-pki GUI entry: page set-up, the login gate, navigation over the pages the session's role may see."""

import streamlit as st

from pki.roles import Role
from views import common

st.set_page_config(page_title="app-pki", page_icon=":material/verified_user:", layout="wide")

pages = [
    st.Page("views/dashboard.py", title="Dashboard", icon=":material/dashboard:", default=True),
    # A site's key made on the site, never travelling: the first way the pages offer.
    st.Page("views/enroll.py", title="Enroll a Site", icon=":material/router:"),
    st.Page("views/bulk.py", title="Bulk Enrollment", icon=":material/playlist_add:"),
    st.Page("views/issue.py", title="Issue Certificate", icon=":material/add_card:"),
    st.Page("views/certificates.py", title="View Certificates", icon=":material/list_alt:"),
    st.Page("views/revoke.py", title="Revoke Certificate", icon=":material/block:"),
    st.Page("views/reconcile.py", title="Reconcile", icon=":material/rule:"),
    st.Page("views/audit.py", title="Audit", icon=":material/history:"),
    st.Page("views/alerts.py", title="Alerts", icon=":material/notifications:"),
    st.Page("views/broker_check.py", title="Broker check", icon=":material/verified:"),
    st.Page("views/ca_settings.py", title="CA Settings", icon=":material/settings:"),
]
common.require_login()
if common.may(Role.ADMIN):
    pages.append(st.Page("views/users.py", title="Users", icon=":material/group:"))
navigation = st.navigation(pages)
common.land_where_asked(pages)
common.session_panel()
common.ca_status()
navigation.run()
