"""What every page shares: settings, the CA client, cached CA state, the password gate, the banner.

Streamlit reruns a page on every click, so each thing that costs a process or a request is cached
here once: the CA's health and provisioners briefly, the CRL until a revoke, the inventory for the
life of the server (it refreshes itself incrementally). The checks every page makes use a short
timeout, so a CA that hangs slows a page by seconds, not by the full step timeout.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import streamlit as st

from pki.audit import AuditLog
from pki.auth import password_matches
from pki.bundle import make_bundle
from pki.ca import CertKind, CRLInfo, Provisioner, StepCA
from pki.inventory import CertRecord, Inventory
from pki.issuing import ActiveCertificateExists
from pki.ledger import Ledger
from pki.settings import Settings, SettingsError, audit_path, load_settings
from pki.step import StepError
from pki.validate import InvalidInput


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
def _inventory(certs_dir: str, ca_log: str, ledger_dir: str) -> Inventory:
    return Inventory(Path(certs_dir), Ledger(Path(ca_log), Path(ledger_dir)))


def inventory() -> Inventory:
    """certs/ and every certificate the CA's log reports (token enrolments, renewals)."""
    s = settings()
    return _inventory(str(s.certs_dir), str(s.ca_log), str(s.ledger_dir))


STATUS_TIMEOUT = 5.0  # seconds for the health and CRL checks of every page


@st.cache_data(ttl=10, show_spinner=False)
def _ca_problem(ca_url: str, _ca: StepCA) -> str | None:
    try:
        _ca.health(timeout=STATUS_TIMEOUT)
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
        return _ca.crl_info(timeout=STATUS_TIMEOUT), None
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


FAILED = (InvalidInput, StepError, OSError)
"""What an operation may raise that the page turns into a message (never a traceback)."""


def failure_message(exc: Exception, what: str) -> str:
    if isinstance(exc, InvalidInput):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{what} failed on the server's disk: {exc.strerror or exc} ({exc.filename or ''})."
    return f"{what} failed. {exc}"


def show_failure(exc: Exception, what: str) -> None:
    """An operation's failure as a message; a CN that is taken also gets the way to the Revoke page."""
    st.error(failure_message(exc, what), icon=":material/error:")
    if isinstance(exc, ActiveCertificateExists):
        st.page_link("views/revoke.py", label="Go to Revoke Certificate", icon=":material/block:")


@st.cache_data(ttl=300, show_spinner=False)
def _provisioners(ca_url: str, _ca: StepCA) -> tuple[list[Provisioner] | None, str | None]:
    try:
        return _ca.provisioners(), None
    except StepError as exc:
        return None, str(exc)


def provisioners() -> tuple[list[Provisioner] | None, str | None]:
    """The CA's provisioners (cached five minutes), or None and why they could not be listed."""
    client = ca()
    return _provisioners(client.settings.ca_url, client)


def max_days() -> dict[CertKind, int]:
    """The longest validity the CA allows per certificate type (from its provisioners)."""
    client = ca()
    s = client.settings
    limits = {CertKind.CLIENT: s.max_days, CertKind.SERVER: s.max_days}
    listed, _ = provisioners()
    by_name = {p.name: p for p in listed or []}
    for kind in CertKind:
        found = by_name.get(client.provisioner_for(kind))
        if found and found.max_days:
            limits[kind] = found.max_days
    return limits


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
        time.sleep(1)  # slows down guessing
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


def records() -> list[CertRecord]:
    """The fleet's certificates, with a warning when the CA's journal cannot be read."""
    fleet = inventory()
    found = fleet.records()
    if fleet.ledger_problem:
        st.warning(
            f"{fleet.ledger_problem} Certificates of sites enrolled by token and renewals are not shown, "
            "and revoking a site may miss some of its certificates.",
            icon=":material/warning:",
        )
    return found


def show_issued(record: CertRecord, archived_as: str | None, verb: str = "Issued") -> None:
    """What was just issued, and its ZIP bundle (the download of the private key is audited)."""
    s = settings()
    st.success(
        f"{verb} **{record.cn}** ({record.kind.value}), serial `{record.serial_hex}`, valid until "
        f"{record.not_after:%Y-%m-%d %H:%M} UTC. Saved in `certs/{record.folder}/`.",
        icon=":material/check_circle:",
    )
    if archived_as:
        st.info(f"The previous certificate of {record.cn} was kept in `certs/{archived_as}/`.")
    st.write("SANs: " + (", ".join(record.sans) or "none"))
    st.download_button(
        "Download ZIP bundle (contains the private key)",
        data=make_bundle(record, s.root.read_bytes(), s.broker_address, s.crl_url),
        file_name=f"{record.cn}.zip",
        mime="application/zip",
        icon=":material/download:",
        on_click=lambda: audit().record("download-key", cn=record.cn, serial=record.serial_hex),
    )
    st.caption("ca.crt, the certificate, its private key and a README with what to do with them.")
