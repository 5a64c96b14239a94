"""What every page shares: the settings, the fleet facade, the password gate, the banner, messages.

Pages render; every decision comes from pki.fleet.Fleet. One Fleet per set of settings serves every
session of this server (it keeps the CA's state briefly and the inventory incrementally).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from pki.accounts import Gate, LoginRefused, UserStore, users_path
from pki.audit import AuditLog
from pki.fleet import Fleet, FleetTable
from pki.issuing import ActiveCertificateExists, FilingFailed, Issued, IssueUncertain, NotIssued
from pki.model import REVOCATION_REASONS
from pki.reconcile import Disagreement
from pki.roles import Actor, Role
from pki.settings import Settings, SettingsError, audit_path, data_dir, load_settings
from pki.sso import SsoConfig, SsoSessions, display_name, role_for, sso_config
from pki.step import StepError
from pki.throttle import LoginThrottle
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
    return Fleet(_settings, for_pages=True)


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


@st.cache_resource(show_spinner=False)
def _gate(users: str, audit: str, bootstrap: str | None, sso: bool) -> Gate:
    trail = AuditLog(Path(audit))
    throttle = LoginThrottle(Path(users).parent / "login-throttle.json")
    return Gate(UserStore(Path(users), trail), throttle, trail, bootstrap, sso=sso)


def gate() -> Gate:
    """Accounts, throttle and audit trail; known before the CA is set up, so that logins are recorded."""
    return _gate(
        str(users_path(os.environ)), str(audit_path(os.environ)), os.environ.get("PKI_PASSWORD"), sso() is not None
    )


def sso() -> SsoConfig | None:
    """The single sign-on settings (pki.serve refused to start if they are incomplete)."""
    try:
        return sso_config(os.environ)
    except InvalidInput:
        return None


@st.cache_resource(show_spinner=False)
def _sso_sessions(path: str, idle_seconds: float, max_age_seconds: float) -> SsoSessions:
    return SsoSessions(Path(path), idle_seconds, max_age_seconds)


def sso_sessions() -> SsoSessions:
    """Idle time and logouts of single sign-ons, shared by every tab and replica (pki.sso.SsoSessions)."""
    max_hours = float(os.environ.get("PKI_SSO_MAX_HOURS") or 12)
    return _sso_sessions(str(data_dir(os.environ) / "sso-sessions.json"), IDLE_MINUTES * 60, max_hours * 3600)


def _sso_actor(config: SsoConfig) -> Actor | None:
    """Whoever signed in through the provider, with the role their ID token gives; None if nobody did.
    Someone the allow-lists do not name is shown why, audited once, and stopped here."""
    if not st.user.is_logged_in:
        return None
    claims = st.user.to_dict()
    name = display_name(claims)
    role = role_for(claims, config)
    if role is not None:
        why = sso_sessions().use(claims)
        if why is None:
            return Actor(name, role, client_address(), "sso")
        # Logged out in another tab, idle, or too old: the cookie goes, and the provider is asked again.
        gate().audit.record("logout", "ended", account=name, via="sso", why=why, address=client_address() or None)
        st.session_state.clear()
        st.logout()
        st.stop()
    if st.session_state.get("sso-refused") != name:
        gate().audit.record("login", "refused", account=name, via="sso", address=client_address() or None)
        st.session_state["sso-refused"] = name
    st.title("app-pki")
    st.error(
        f"**{name}** signed in, but has no role in app-pki: ask an admin to add you (or your group) to "
        f"PKI_SSO_ADMINS, PKI_SSO_OPERATORS or PKI_SSO_VIEWERS.",
        icon=":material/lock:",
    )
    if st.button("Log out", icon=":material/logout:"):
        st.session_state.clear()
        st.logout()
    st.stop()
    raise RuntimeError  # not reached: st.stop() ends the run


def client_address() -> str:
    """The client's address as Streamlit saw it; X-Forwarded-For only when it came from a proxy listed in
    PKI_TRUSTED_PROXIES (anyone can send the header)."""
    address = st.context.ip_address
    # Streamlit says None for a client on this machine (127.0.0.1, ::1). The address is the TCP peer's;
    # its server takes X-Forwarded-For only from 127.0.0.1 (uvicorn's default).
    address = address if isinstance(address, str) else "localhost"
    trusted = {a.strip() for a in os.environ.get("PKI_TRUSTED_PROXIES", "").split(",") if a.strip()}
    forwarded = st.context.headers.get("X-Forwarded-For", "") if address in trusted else ""
    if isinstance(forwarded, str) and forwarded:
        return forwarded.split(",")[-1].strip()
    return address


IDLE_MINUTES = float(os.environ.get("PKI_SESSION_IDLE_MINUTES") or 30)
"""A logged-in session left alone this long must log in again before it acts."""


def _idle_too_long() -> bool:
    last = st.session_state.get("active-at")
    return isinstance(last, float) and time.monotonic() - last > IDLE_MINUTES * 60


def require_login() -> None:
    """Show nothing but a login form (and the single sign-on button) until someone logs in, unless the GUI
    is open (no account, no PKI_PASSWORD, no SSO). On every rerun the session's actor is checked again: a
    disabled account is out, and so is someone whose identity cookie is gone."""
    door = gate()
    config = sso()
    actor = st.session_state.get("actor")
    if not isinstance(actor, Actor):  # nothing, or a value a forged websocket message tried to plant
        actor = None
    if actor and actor.via == "sso":
        current = _sso_actor(config) if config else None
    elif actor:
        current = door.current(actor)
    else:
        current = (_sso_actor(config) if config else None) or door.open_actor(client_address())
        if current is not None and current.via == "sso":
            door.audit.record("login", actor=current)
    if current is not None and current.via != "open" and _idle_too_long():
        door.audit.record("logout", "idle", actor=current)
        st.session_state.clear()  # as a logout: the session's bundles and tokens go with it
        st.session_state["idle-out"] = True
        if current.via == "sso":
            sso_sessions().end(st.user.to_dict())
            st.logout()  # else the identity cookie would log the browser straight back in
            st.stop()
        st.rerun()
    if current is not None:
        st.session_state["actor"] = current
        st.session_state["active-at"] = time.monotonic()
        return
    if actor:
        st.session_state.clear()  # what the session showed (a bundle, a token) is not for whoever comes next
    # The page asked for (a bookmark of /revoke, a link): where the login will land. No page is named to a
    # client that has not logged in; only its own address is read.
    asked = (st.context.url or "").rstrip("/").rsplit("/", 1)[-1]
    if asked and "asked-page" not in st.session_state:
        st.session_state["asked-page"] = asked
    st.title("app-pki")
    if st.session_state.pop("idle-out", False):
        st.info(f"You were logged out after {IDLE_MINUTES:g} minutes without activity.", icon=":material/timer_off:")
    if config is not None and st.button(config.label, icon=":material/key:", type="primary"):
        st.login()
    if config is not None and not door.passwords_usable():
        st.stop()  # single sign-on only: no account has a password, and PKI_PASSWORD is not set
    with st.form("login"):
        name = st.text_input("User name")
        given = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in")
    if not door.users.any() and door.passwords_usable():
        st.caption(f"No account exists yet: log in as `{Gate.BOOTSTRAP_NAME}` with the GUI password (PKI_PASSWORD).")
    if submitted:
        try:
            st.session_state["actor"] = door.login(name, given, client_address())
        except LoginRefused as exc:
            st.error(str(exc), icon=":material/lock:")
        else:
            st.rerun()
    st.stop()


def land_where_asked(pages: list[StreamlitPage]) -> None:
    """Once logged in, go to the page whose address was asked for before the login, if this role has it."""
    asked = st.session_state.pop("asked-page", None)
    target = next((page for page in pages if asked and page.url_path == asked), None)
    if target is not None:
        st.switch_page(target)


def actor() -> Actor:
    """Who is using this session (require_login has run)."""
    found = st.session_state.get("actor")
    if not isinstance(found, Actor):
        st.error("Not logged in.", icon=":material/lock:")
        st.stop()
        raise RuntimeError  # not reached: st.stop() ends the run
    return found


def may(needed: Role) -> bool:
    """Whether this session's role allows `needed` (to show a form at all; the core checks again)."""
    return actor().role.allows(needed)


def only(needed: Role, what: str) -> None:
    """Stop the page here, saying why, unless this session's role allows `needed` (the core checks again)."""
    if not may(needed):
        st.info(f"Your role ({actor().role}) may not {what}: that needs {needed}.", icon=":material/lock:")
        st.stop()


def session_panel() -> None:
    """Who is logged in, with which role, and the way out."""
    who = actor()
    if who.via == "open":
        st.sidebar.warning(
            "**No accounts**: whoever reaches this page acts as admin. Create one: `scripts/users.sh add NAME "
            "--role admin`.",
            icon=":material/lock_open:",
        )
        return
    st.sidebar.caption(f"Logged in as **{who.name}** ({who.role})")
    if st.sidebar.button("Log out", icon=":material/logout:"):
        gate().audit.record("logout", actor=who)
        st.session_state.clear()  # the session's bundles and tokens go with it
        if who.via == "sso":
            # Every tab of this sign-in is out; the browser is sent on to clear the identity cookie (and
            # the provider's session, when it offers end_session); a rerun now could drop that redirect.
            sso_sessions().end(st.user.to_dict())
            st.logout()
            st.stop()
        st.rerun()


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
    broker: str | None = None,
) -> None:
    """What was just issued, and its ZIP bundle (the download of the private key is audited)."""
    record = fleet().record(serial)
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
    bundle_controls(serial, record.cn, broker)


def bundle_controls(serial: int, cn: str, broker: str | None = None) -> None:
    """Make the ZIP bundle of `serial` (key encrypted with a passphrase shown once) and download it.
    Operators only; making it and downloading it are both audited."""
    if not may(Role.OPERATOR):
        return
    current = fleet()
    key = f"bundle-{serial}"
    if key not in st.session_state:
        if st.button("Make ZIP bundle (the private key, encrypted)", icon=":material/lock:", key=f"make-{key}"):
            try:
                st.session_state[key] = current.bundle(actor(), serial, broker=broker)
            except FAILED as exc:
                show_failure(exc, "The bundle")
                return
            st.rerun()
        st.caption("For a site, prefer Enroll a Site: its key is made on the site and never travels.")
        return
    data, passphrase = st.session_state[key]
    st.warning(
        "The key in the bundle is encrypted with this passphrase. It is shown only here and now: pass it on "
        "by another way than the ZIP (enroll-site.sh --bundle and openssl pkey ask for it).",
        icon=":material/key:",
    )
    st.code(passphrase, language=None)
    st.download_button(
        "Download ZIP bundle",
        data=data,
        file_name=f"{cn}.zip",
        mime="application/zip",
        icon=":material/download:",
        on_click=lambda: current.key_downloaded(actor(), serial),
    )
    st.caption(
        "ca.crt, the certificate, its encrypted private key, a README.txt with the commands that install "
        "them, and the script that does it (enroll-site.sh for a site; refresh-crl.sh and the Mosquitto files "
        "for a broker)."
    )
