"""Dashboard: the CA's health at a glance."""

import streamlit as st

from views import common

st.title("Dashboard")
client = common.ca()
problem = common.ca_problem(client.settings.ca_url, client)
if problem:
    st.metric("CA", "down")
    st.caption(f"Tried {client.settings.ca_url}: {problem}")
else:
    st.metric("CA", "ok")
    st.caption(f"step-ca at {client.settings.ca_url} answers.")
