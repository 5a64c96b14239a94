"""What every page shares: settings, the CA client, cached CA state, the password gate, the banner.

Streamlit reruns a page on every click, so each thing that costs a process or a request is cached
here once: the CA's health and provisioners briefly, the CRL until a revoke, the inventory for the
life of the server (it refreshes itself incrementally).
"""

from __future__ import annotations

import datetime as dt
import os

import streamlit as st

from pki.audit import AuditLog
from pki.auth import password_matches
from pki.ca import CertKind, CRLInfo, StepCA
from pki.inventory import Inventory
from pki.settings import Settings, SettingsError, audit_path, load_settings
from pki.step import StepError


def settings() -> Settings:
    """The settings, or a clear message and a stop when the CA was never set up."""
    try:
        return load_settings()
    except SettingsError as exc:
        st.error(f"app-pki is not configured: {exc}", icon=":material/error:")
        st.stop()
        raise  # not reached: st.stop() ends the run


def ca() -> StepCA:
    return StepCA(settings())


def audit() -> AuditLog:
    return AuditLog(settings().audit_log)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@st.cache_resource(show_spinner=False)
def _inventory(certs_dir: str) -> Inventory:
    from pathlib import Path

    return Inventory(Path(certs_dir))


def inventory() -> Inventory:
    return _inventory(str(settings().certs_dir))


@st.cache_data(ttl=10, show_spinner=False)
def _ca_problem(ca_url: str, _ca: StepCA) -> str | None:
    try:
        _ca.health()
    except StepError as exc:
        return str(exc)
    return None


def ca_problem() -> str | None:
    """None when the CA answers 'ok', else what went wrong."""
    client = ca()
    return _ca_problem(client.settings.ca_url, client)


@st.cache_data(ttl=60, show_spinner=False)
def _crl(ca_url: str, _ca: StepCA) -> tuple[CRLInfo | None, str | None]:
    try:
        return _ca.crl_info(), None
    except StepError as exc:
        return None, str(exc)


def crl() -> tuple[CRLInfo | None, str | None]:
    """The CA's current CRL, or None and why it could not be read."""
    client = ca()
    return _crl(client.settings.ca_url, client)


def revoked_serials() -> frozenset[int] | None:
    info, _ = crl()
    return info.revoked if info else None


def forget_ca_state() -> None:
    """After a revoke or an issue: read the CRL and health again on the next call."""
    _crl.clear()
    _ca_problem.clear()


@st.cache_data(ttl=300, show_spinner=False)
def _max_days(ca_url: str, _ca: StepCA) -> dict[CertKind, int]:
    s = _ca.settings
    limits = {CertKind.CLIENT: s.max_days, CertKind.SERVER: s.max_days}
    try:
        by_name = {p.name: p for p in _ca.provisioners()}
    except StepError:
        return limits
    for kind in CertKind:
        found = by_name.get(_ca.provisioner_for(kind))
        if found and found.max_days:
            limits[kind] = found.max_days
    return limits


def max_days() -> dict[CertKind, int]:
    """The longest validity the CA allows per certificate type (from its provisioners)."""
    client = ca()
    return _max_days(client.settings.ca_url, client)


def require_login() -> None:
    """If PKI_PASSWORD is set, show nothing but a login form until it is given."""
    expected = os.environ.get("PKI_PASSWORD")
    if not expected or st.session_state.get("authenticated"):
        return
    st.title("app-pki")
    with st.form("login"):
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if submitted:
        log = AuditLog(audit_path(os.environ))
        if password_matches(expected, given):
            st.session_state["authenticated"] = True
            log.record("login")
            st.rerun()
        log.record("login", "failed")
        st.error("Wrong password.", icon=":material/lock:")
    st.stop()


def ca_status() -> None:
    """Sidebar light and, when the CA is down, a banner at the top of the page."""
    problem = ca_problem()
    if problem:
        st.sidebar.error("CA unreachable", icon=":material/error:")
        st.error(
            f"**The certificate authority is not available.** {problem}  \n"
            "Certificates on disk can still be viewed; issuing and revoking need the CA.",
            icon=":material/error:",
        )
    else:
        st.sidebar.success("CA online", icon=":material/check_circle:")


def day(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d")
