"""What every page shares: the settings, the fleet facade, the password gate, the banner, messages.

Pages render; every decision comes from pki.fleet.Fleet. One Fleet per set of settings serves every
session of this server (it keeps the CA's state briefly and the inventory incrementally).
"""

from __future__ import annotations

import os
import time

import streamlit as st

from pki.audit import AuditLog
from pki.auth import password_matches
from pki.fleet import Fleet, FleetTable
from pki.issuing import ActiveCertificateExists, FilingFailed, Issued, IssueUncertain, NotIssued
from pki.model import REVOCATION_REASONS
from pki.reconcile import Disagreement
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


@st.cache_resource(show_spinner=False)
def _fleet(key: str, _settings: Settings) -> Fleet:
    return Fleet(_settings)


def fleet() -> Fleet:
    s = settings()
    return _fleet(repr(s), s)


FAILED = (InvalidInput, StepError, OSError, FilingFailed, NotIssued, IssueUncertain)
"""What an operation may raise that the page turns into a message (never a traceback)."""


def failure_message(exc: Exception, what: str) -> str:
    if isinstance(exc, InvalidInput | FilingFailed | NotIssued | IssueUncertain):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{what} failed on the server's disk: {exc.strerror or exc} ({exc.filename or ''})."
    return f"{what} failed. {exc}"


def show_failure(exc: Exception, what: str) -> None:
    """An operation's failure as a message, with the way to the page that resolves it."""
    st.error(failure_message(exc, what), icon=":material/error:")
    if isinstance(exc, ActiveCertificateExists):
        st.page_link("views/revoke.py", label="Go to Revoke Certificate", icon=":material/block:")
    if isinstance(exc, FilingFailed | IssueUncertain):
        st.page_link("views/reconcile.py", label="Go to Reconcile", icon=":material/rule:")


def remember_issued(issued: Issued) -> tuple[int, tuple[str, ...], str | None, tuple[str, ...]]:
    """What a page keeps of an issuance to show it again: this session's serial, never a folder name
    (another session may file the same name meanwhile)."""
    return (issued.record.serial, issued.archived_as, issued.normalised_from, issued.warnings)


def show_outcome(key: str) -> None:
    """The message a change left in the session before its page reran."""
    done = st.session_state.pop(key, None)
    if done:
        level, message = done
        (st.success if level == "success" else st.warning)(message, icon=":material/check_circle:")


def reason_select(default: int = 0) -> int:
    """The RFC 5280 reason a revocation gives."""
    codes = list(REVOCATION_REASONS)
    return st.selectbox(  # type: ignore[no-any-return]
        "Reason (RFC 5280)", codes, index=codes.index(default), format_func=lambda c: f"{REVOCATION_REASONS[c]} ({c})"
    )


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
    problem = fleet().ca_problem()
    if problem:
        st.sidebar.error("CA unreachable", icon=":material/error:")
        st.error(
            f"**The certificate authority is not available.** {problem}  \n"
            "Certificates on disk can still be viewed; issuing and revoking need the CA.",
            icon=":material/error:",
        )
    else:
        st.sidebar.success("CA online", icon=":material/check_circle:")


def disagreements(found: FleetTable) -> list[Disagreement] | None:
    """Reconcile's list, or a message and None when it cannot be made."""
    try:
        return fleet().reconcile(found)
    except FAILED as exc:
        st.error(failure_message(exc, "Comparing certs/ with the CA's records"), icon=":material/error:")
        return None


def table() -> FleetTable:
    """The fleet's certificates with their statuses, warning when a source of truth is missing."""
    try:
        found = fleet().table()
    except FAILED as exc:
        st.error(failure_message(exc, "Reading the certificates"), icon=":material/error:")
        st.stop()
        raise  # not reached: st.stop() ends the run
    if found.ledger_problem:
        st.warning(
            f"{found.ledger_problem} Certificates of sites enrolled by token and renewals are not shown, "
            "and revoking a site may miss some of its certificates.",
            icon=":material/warning:",
        )
    crl = found.crl
    if crl.problem and crl.info:
        st.warning(
            f"The CA's CRL cannot be fetched now ({crl.problem}). Statuses are as of the CRL it issued "
            f"{crl.info.last_update:%Y-%m-%d %H:%M} UTC: later revocations are not shown.",
            icon=":material/warning:",
        )
    elif crl.problem:
        st.warning(
            f"The CA's CRL cannot be fetched ({crl.problem}) and none was kept: no certificate can be shown "
            "as revoked until the CA answers.",
            icon=":material/warning:",
        )
    return found


def show_issued(
    serial: int,
    archived_as: tuple[str, ...],
    normalised_from: str | None,
    warnings: tuple[str, ...] = (),
    verb: str = "Issued",
) -> None:
    """What was just issued, and its ZIP bundle (the download of the private key is audited)."""
    current = fleet()
    record = current.record(serial)
    if record is None or not record.folder:
        st.warning(f"Certificate {serial:X} is no longer filed under certs/.", icon=":material/warning:")
        return
    st.success(
        f"{verb} **{record.cn}** ({record.kind.value}), serial `{record.serial_hex}`, valid until "
        f"{record.not_after:%Y-%m-%d %H:%M} UTC. Saved in `certs/{record.folder}/`.",
        icon=":material/check_circle:",
    )
    if normalised_from:
        st.info(f"You typed `{normalised_from}`: a name's case and trailing dot do not count, so it is `{record.cn}`.")
    for name in archived_as:
        st.info(f"The previous certificate of {record.cn} was kept in `certs/{name}/`.")
    for warning in warnings:
        st.warning(warning, icon=":material/warning:")
    st.write("SANs: " + (", ".join(record.sans) or "none"))
    try:
        data = current.bundle(serial)
    except FAILED as exc:
        show_failure(exc, "The bundle")
        return
    st.download_button(
        "Download ZIP bundle (contains the private key)",
        data=data,
        file_name=f"{record.cn}.zip",
        mime="application/zip",
        icon=":material/download:",
        on_click=lambda: current.key_downloaded(serial),
    )
    st.caption("ca.crt, the certificate, its private key and a README with what to do with them.")
