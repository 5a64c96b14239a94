"""What every page shares: settings, the CA client, and the CA status banner."""

from __future__ import annotations

import streamlit as st

from pki.ca import StepCA
from pki.settings import Settings, SettingsError, load_settings
from pki.step import StepError


def settings() -> Settings:
    """The settings, or a clear message and a stop when the CA was never set up."""
    try:
        return load_settings()
    except SettingsError as exc:
        st.error(f"app-pki is not configured: {exc}")
        st.stop()
        raise  # st.stop() does not return; this keeps type checkers right


def ca() -> StepCA:
    return StepCA(settings())


@st.cache_data(ttl=10, show_spinner=False)
def ca_problem(ca_url: str, _ca: StepCA) -> str | None:
    """None when the CA answers 'ok', else what went wrong (cached briefly: every rerun asks)."""
    try:
        _ca.health()
    except StepError as exc:
        return str(exc)
    return None


def sidebar_status() -> None:
    client = ca()
    problem = ca_problem(client.settings.ca_url, client)
    if problem:
        st.sidebar.error("CA unreachable", icon=":material/error:")
        st.error(f"**The certificate authority is not available.** {problem}", icon=":material/error:")
    else:
        st.sidebar.success("CA online", icon=":material/check_circle:")
