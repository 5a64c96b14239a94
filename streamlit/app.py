"""app-pki GUI entry: page set-up, the optional password gate, navigation over the pages."""

import streamlit as st

from views import common

st.set_page_config(page_title="app-pki", page_icon=":material/verified_user:", layout="wide")

pages = st.navigation(
    [
        st.Page("views/dashboard.py", title="Dashboard", icon=":material/dashboard:", default=True),
    ]
)
common.sidebar_status()
pages.run()
