"""Single sign-on end to end: Chromium, the GUI as make run starts it, and a real OpenID Connect provider
(the oidc-provider package from npm, tests/oidc_provider.mjs) on loopback. Its accounts: ada is in
pki-admins, olga in pki-operators, vic is named by e-mail in the viewers' allow-list, zed is in no group.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conftest import REPO, GuiProcess, RunningCA, free_port, started_ca
from pki.accounts import UserStore
from pki.audit import AuditLog
from pki.roles import SHELL, Role
from pki.sso import SsoConfig, SsoSessions, display_name, role_for

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000
CLIENT_ID, CLIENT_SECRET = "app-pki", "the client secret of app-pki"


@pytest.fixture(scope="module")
def sso_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    ca = started_ca(tmp_path_factory.mktemp("sso-pki"))
    yield ca
    ca.stop()


@pytest.fixture(scope="module")
def provider_and_gui(sso_ca: RunningCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, GuiProcess]]:
    """The provider on one free port, the GUI on another, each knowing the other; yields (issuer, gui)."""
    node = shutil.which("node")
    if node is None or not (REPO / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("node and the oidc-provider package are needed: run `make test` (it runs npm ci)")
    base = tmp_path_factory.mktemp("sso-gui")
    secret_file = base / "client-secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    accounts = UserStore(base / "data" / "users.json", AuditLog(base / "data" / "audit.log"))
    accounts.add(SHELL, "root", Role.ADMIN, "the password of root")
    accounts.add(SHELL, "pat", Role.OPERATOR, "the password of pat")
    oidc_port = free_port()
    issuer = f"http://127.0.0.1:{oidc_port}"
    gui_port = free_port()
    redirect = f"http://127.0.0.1:{gui_port}/oauth2callback"
    provider = subprocess.Popen(
        [node, str(REPO / "tests" / "oidc_provider.mjs")],
        env={"PATH": "/usr/bin:/bin", "OIDC_PORT": str(oidc_port), "OIDC_CLIENT_ID": CLIENT_ID,
             "OIDC_CLIENT_SECRET": CLIENT_SECRET, "OIDC_REDIRECT_URI": redirect},
        stdout=subprocess.PIPE, stderr=(base / "provider.log").open("wb"), text=True, cwd=REPO,
    )  # fmt: skip
    assert provider.stdout is not None
    ready = provider.stdout.readline()
    assert ready.startswith("ready "), (base / "provider.log").read_text()
    gui = GuiProcess(
        sso_ca,
        base,
        PKI_GUI_PORT=str(gui_port),
        PKI_SSO_ISSUER=issuer,
        PKI_SSO_CLIENT_ID=CLIENT_ID,
        PKI_SSO_CLIENT_SECRET_FILE=str(secret_file),
        PKI_SSO_REDIRECT_URI=redirect,
        PKI_SSO_SCOPES="openid profile email groups",
        PKI_SSO_ADMINS="pki-admins",
        PKI_SSO_OPERATORS="pki-operators",
        PKI_SSO_VIEWERS="vic@example.test",
    )
    yield issuer, gui
    gui.stop()
    provider.terminate()
    provider.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield launched
        launched.close()


def sign_in(browser: Browser, gui: GuiProcess, issuer: str, login: str) -> Page:
    """A new browser context that follows the GUI's SSO button to the provider and signs in as `login`."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(gui.url)
    button = page.get_by_role("button", name="Log in with single sign-on")
    try:
        button.wait_for(timeout=2 * WAIT_MS)
    except Exception as exc:  # say what the page showed instead (a busy machine, or a real fault)
        raise AssertionError(
            f"no SSO button at {page.url}:\n{page.inner_text('body')[:2000]}\n{gui.log()[-3000:]}"
        ) from exc
    button.click()
    page.wait_for_url(f"{issuer}/interaction/**", timeout=WAIT_MS)  # redirected to the provider
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password: the test provider takes it")
    page.get_by_role("button", name="Sign-in").click()
    page.wait_for_url(f"{gui.url}/**", timeout=WAIT_MS)  # the callback brought the browser back
    return page


def audit_lines(gui: GuiProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in (gui.base / "data" / "audit.log").read_text().splitlines()]


def test_each_role_from_the_provider_and_logout(provider_and_gui: tuple[str, GuiProcess], browser: Browser) -> None:
    issuer, gui = provider_and_gui
    admin = sign_in(browser, gui, issuer, "ada")
    expect(admin.get_by_role("heading", name="Dashboard")).to_be_visible(timeout=WAIT_MS)
    expect(admin.get_by_text("ada@example.test (admin)")).to_be_visible()
    expect(admin.get_by_role("link", name="Users")).to_be_visible()

    operator = sign_in(browser, gui, issuer, "olga")
    expect(operator.get_by_text("olga@example.test (operator)")).to_be_visible(timeout=WAIT_MS)
    expect(operator.get_by_role("link", name="Users")).to_have_count(0)
    operator.get_by_role("link", name="Issue Certificate").click()
    expect(operator.get_by_role("button", name="Issue Certificate")).to_be_visible(timeout=WAIT_MS)

    viewer = sign_in(browser, gui, issuer, "vic")
    expect(viewer.get_by_text("vic@example.test (viewer)")).to_be_visible(timeout=WAIT_MS)
    viewer.get_by_role("link", name="Issue Certificate").click()
    expect(viewer.get_by_text("Your role (viewer) may not issue")).to_be_visible(timeout=WAIT_MS)

    # Logging out ends the GUI session and the provider's: the next SSO login asks for a name again.
    admin.get_by_role("button", name="Log out").click()
    expect(admin.get_by_role("button", name="Log in with single sign-on")).to_be_visible(timeout=WAIT_MS)
    admin.reload()
    expect(admin.get_by_role("button", name="Log in with single sign-on")).to_be_visible(timeout=WAIT_MS)
    expect(admin.get_by_role("heading", name="Dashboard")).to_have_count(0)
    admin.get_by_role("button", name="Log in with single sign-on").click()
    admin.wait_for_url(f"{issuer}/interaction/**", timeout=WAIT_MS)
    expect(admin.get_by_role("button", name="Sign-in")).to_be_visible()

    trail = audit_lines(gui)
    logins = [
        (e["user"], e.get("role"), e.get("via")) for e in trail if e["action"] == "login" and e["outcome"] == "ok"
    ]
    assert ("ada@example.test", "admin", "sso") in logins
    assert ("olga@example.test", "operator", "sso") in logins
    assert ("vic@example.test", "viewer", "sso") in logins
    assert any(e["action"] == "logout" and e["user"] == "ada@example.test" for e in trail)
    for page in (admin, operator, viewer):
        page.context.close()
    # The client secret and the cookie secret are in the 0600 secrets file, and nowhere else.
    cookie_secret = (gui.base / "data" / "sso-cookie-secret").read_text().strip()
    for text in (gui.log(), (gui.base / "data" / "audit.log").read_text()):
        assert CLIENT_SECRET not in text and cookie_secret not in text
    for name in ("streamlit-secrets.toml", "sso-cookie-secret"):
        assert (gui.base / "data" / name).stat().st_mode & 0o777 == 0o600


def test_someone_without_a_role_is_refused(provider_and_gui: tuple[str, GuiProcess], browser: Browser) -> None:
    issuer, gui = provider_and_gui
    page = sign_in(browser, gui, issuer, "zed")
    expect(page.get_by_text("has no role in app-pki")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_role("link", name="Dashboard")).to_have_count(0)
    page.reload()  # the identity cookie stays, the refusal too
    expect(page.get_by_text("has no role in app-pki")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_role("link", name="Issue Certificate")).to_have_count(0)
    refused = [e for e in audit_lines(gui) if e["action"] == "login" and e["outcome"] == "refused"]
    assert refused and {e["account"] for e in refused} == {"zed@example.test"}  # once per browser session
    page.context.close()


def test_password_accounts_still_work_next_to_sso(provider_and_gui: tuple[str, GuiProcess], browser: Browser) -> None:
    _, gui = provider_and_gui
    page = browser.new_context().new_page()
    page.goto(gui.url)
    page.get_by_label("User name").fill("pat")
    page.get_by_role("textbox", name="Password").fill("the password of pat")
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_text("pat (operator)")).to_be_visible(timeout=WAIT_MS)
    page.context.close()


def test_role_from_claim_values_or_e_mail() -> None:
    config = SsoConfig(
        "http://idp", "id", "secret", "http://gui/oauth2callback", "openid", "groups",
        {Role.ADMIN: frozenset({"pki-admins"}), Role.OPERATOR: frozenset({"ops", "olga@x.test"}),
         Role.VIEWER: frozenset({"all"})},
        "SSO",
    )  # fmt: skip
    assert role_for({"groups": ["all", "Pki-Admins"]}, config) is Role.ADMIN  # the highest, case folded
    assert role_for({"groups": "ops"}, config) is Role.OPERATOR  # one string, not a list
    assert role_for({"email": "OLGA@x.test", "email_verified": True}, config) is Role.OPERATOR
    for unverified in (False, "false", 0, None):  # anyone may have typed that address
        assert role_for({"email": "olga@x.test", "email_verified": unverified}, config) is None
    assert role_for({"email": "olga@x.test"}, config) is None
    assert display_name({"email": "ada@x.test", "sub": "123"}) == "sso:123"  # unverified: not a name
    assert display_name({"email": "Ada@x.test", "email_verified": True, "sub": "123"}) == "ada@x.test"
    assert role_for({"groups": ["elsewhere"]}, config) is None
    assert role_for({}, config) is None


def test_serve_refuses_incomplete_sso_settings(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "streamlit"), "PKI_DATA_DIR": str(tmp_path),
           "PKI_SSO_ISSUER": "http://127.0.0.1:1", "PKI_SSO_CLIENT_ID": "x"}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "pki.serve"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "PKI_SSO_CLIENT_SECRET_FILE" in done.stderr and "PKI_SSO_REDIRECT_URI" in done.stderr
    assert not list(tmp_path.iterdir())


def test_a_sign_in_is_one_session_for_every_tab_and_replica(tmp_path: Path) -> None:
    """The identity cookie lives 30 days and every tab reads it: idle time, logout and age are kept
    beside it, in one file every GUI replica shares."""
    claims = {"iss": "http://idp", "sub": "ada", "iat": 1_000_000}
    here = SsoSessions(tmp_path / "sso-sessions.json", idle_seconds=1800, max_age_seconds=12 * 3600)
    there = SsoSessions(tmp_path / "sso-sessions.json", idle_seconds=1800, max_age_seconds=12 * 3600)
    assert here.use(claims, now=1_000_100) is None
    assert there.use(claims, now=1_001_000) is None  # another tab or replica, same sign-in
    assert "idle" in (here.use(claims, now=1_001_000 + 1801) or "")
    assert "logged out" in (there.use(claims, now=1_003_000) or "")  # once out, out everywhere
    fresh = {**claims, "iat": 1_010_000}  # a new sign-in at the provider
    assert here.use(fresh, now=1_010_010) is None
    there.end(fresh)
    assert "logged out" in (here.use(fresh, now=1_010_020) or "")
    assert "older than 12 hours" in (here.use({**claims, "iat": 1}, now=1_000_000) or "")
    assert "no sign-in time" in (here.use({"sub": "x"}) or "")
    assert (tmp_path / "sso-sessions.json").stat().st_mode & 0o777 == 0o600


def test_logging_out_in_one_tab_ends_the_other(provider_and_gui: tuple[str, GuiProcess], browser: Browser) -> None:
    issuer, gui = provider_and_gui
    first = sign_in(browser, gui, issuer, "olga")
    expect(first.get_by_text("olga@example.test (operator)")).to_be_visible(timeout=WAIT_MS)
    second = first.context.new_page()  # same browser, same identity cookie
    second.goto(gui.url)
    expect(second.get_by_text("olga@example.test (operator)")).to_be_visible(timeout=WAIT_MS)
    first.get_by_role("button", name="Log out").click()
    expect(first.get_by_role("button", name="Log in with single sign-on")).to_be_visible(timeout=WAIT_MS)
    second.get_by_role("link", name="Issue Certificate").click()  # the other tab's next click
    expect(second.get_by_role("button", name="Log in with single sign-on")).to_be_visible(timeout=WAIT_MS)
    expect(second.get_by_text("olga@example.test (operator)")).to_have_count(0)
    first.context.close()
