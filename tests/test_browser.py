"""The whole flow in a real browser: Debian's Chromium, driven by Playwright, against `streamlit run`
and the real CA. Screenshots go to a temporary folder, or to SCREENSHOT_DIR (`make screenshots`).
"""

from __future__ import annotations

import io
import os
import re
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from checks import check_bundle
from conftest import GuiProcess, RunningCA, started_ca
from pki.accounts import UserStore
from pki.audit import AuditLog
from pki.bulk import BulkJobs
from pki.fleet import Fleet
from pki.inventory import Inventory
from pki.roles import SHELL, Role

pytestmark = pytest.mark.browser
ACCOUNTS = {"ada": Role.ADMIN, "otto": Role.OPERATOR, "vera": Role.VIEWER}


def password_of(name: str) -> str:
    return f"the password of {name}"


CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def browser_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    """A CA of this module's own: its journal (and so the GUI's ledger) holds only what the browser made."""
    ca = started_ca(tmp_path_factory.mktemp("browser-pki"))
    yield ca
    ca.stop()


@pytest.fixture(scope="module")
def gui_server(browser_ca: RunningCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The GUI started as make run starts it (python -m pki.serve) on a free loopback port; yields (url, certs)."""
    base = tmp_path_factory.mktemp("gui")
    accounts = UserStore(base / "data" / "users.json", AuditLog(base / "data" / "audit.log"))
    for name, role in ACCOUNTS.items():
        accounts.add(SHELL, name, role, password_of(name))
    gui = GuiProcess(browser_ca, base)
    yield gui.url, base / "certs"
    gui.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        yield launched
        launched.close()


def logged_in(browser: Browser, url: str, name: str = "ada") -> Page:
    """A new browser (own cookies, own session) logged in as `name`."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    new_page = context.new_page()
    new_page.goto(url)
    new_page.get_by_label("User name").fill(name)
    new_page.get_by_role("textbox", name="Password").fill(password_of(name))
    new_page.get_by_role("button", name="Log in").click()
    expect(new_page.get_by_role("heading", name="Dashboard")).to_be_visible(timeout=WAIT_MS)
    return new_page


@pytest.fixture
def page(browser: Browser, gui_server: tuple[str, Path]) -> Iterator[Page]:
    new_page = logged_in(browser, gui_server[0])
    yield new_page
    new_page.context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    target.mkdir(parents=True, exist_ok=True)
    return target


def go(page: Page, title: str) -> None:
    page.get_by_test_id("stSidebarNavItems").get_by_role("link", name=title, exact=True).click()
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=WAIT_MS)
    settled(page)


def settled(page: Page) -> None:
    """Wait until the page's script run is over: its heading comes first, the form it draws later."""
    expect(page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]')).to_be_attached(timeout=WAIT_MS)


def issue(page: Page, cn: str, server: bool = False, sans: str = "") -> None:
    go(page, "Issue Certificate")
    page.get_by_label("Common name (CN)").fill(cn)
    if server:
        page.get_by_text("Server (broker)").click()
    if sans:
        page.get_by_role("textbox", name="Subject alternative names").fill(sans)
    page.get_by_role("button", name="Issue certificate").click()
    expect(page.get_by_text(f"Issued {cn}")).to_be_visible(timeout=WAIT_MS)


def revoke(page: Page, cn: str) -> None:
    go(page, "Revoke Certificate")
    page.get_by_role("combobox", name="Certificate").click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(cn)} \(")).click()
    page.get_by_label("Type the common name to confirm").fill(cn)
    page.get_by_role("button", name="Revoke certificate").click()
    expect(page.get_by_text("The CA's CRL now lists it.")).to_be_visible(timeout=WAIT_MS)


def download_bundle(page: Page, into: Path) -> tuple[str, Path]:
    """Make the bundle of the certificate just issued, read its passphrase off the page, download it."""
    page.get_by_role("button", name="Make ZIP bundle").click()
    expect(page.get_by_text("encrypted with this passphrase")).to_be_visible(timeout=WAIT_MS)
    passphrase = page.locator("[data-testid='stCode'] code").last.inner_text().strip()
    with page.expect_download() as download:
        page.get_by_role("button", name="Download ZIP bundle").click()
    zip_path = into / "bundle.zip"
    download.value.save_as(zip_path)
    return passphrase, zip_path


def crl_serials(url: str) -> set[int]:
    with urllib.request.urlopen(f"{url}?pem", timeout=10) as resp:  # noqa: S310 (loopback test CA)
        return {entry.serial_number for entry in x509.load_pem_x509_crl(resp.read())}


def test_client_certificate_from_issue_to_revocation(
    page: Page, gui_server: tuple[str, Path], browser_ca: RunningCA, screenshots: Path, tmp_path: Path
) -> None:
    certs = gui_server[1]
    issue(page, "site-e2e-001", sans="site-e2e-001\n10.0.60.31")
    page.screenshot(path=screenshots / "issue.png", full_page=True)

    passphrase, zip_path = download_bundle(page, tmp_path)
    check_bundle(zip_path.read_bytes(), "site-e2e-001", tmp_path / "unzipped", passphrase)

    go(page, "View Certificates")
    page.get_by_role("textbox", name="Search certificates").fill("site-e2e-001")
    page.get_by_role("textbox", name="Search certificates").press("Enter")
    expect(page.get_by_role("heading", name="site-e2e-001: active")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_role("main")).to_contain_text("SANs site-e2e-001, 10.0.60.31")

    revoke(page, "site-e2e-001")
    page.screenshot(path=screenshots / "revoke.png", full_page=True)
    assert (certs / "site-e2e-001.revoked").is_dir() and not (certs / "site-e2e-001").exists()

    go(page, "View Certificates")
    page.get_by_role("textbox", name="Search certificates").fill("site-e2e-001")
    page.get_by_role("textbox", name="Search certificates").press("Enter")
    expect(page.get_by_role("heading", name="site-e2e-001: revoked")).to_be_visible(timeout=WAIT_MS)
    record = Inventory(certs).records()[0]
    assert record.serial in crl_serials(browser_ca.crl_url)


def test_server_certificate_issue_and_revoke(
    page: Page, gui_server: tuple[str, Path], browser_ca: RunningCA, screenshots: Path
) -> None:
    certs = gui_server[1]
    issue(page, "mqtt-e2e.example", server=True, sans="127.0.0.1")
    record = next(r for r in Inventory(certs).records() if r.folder == "mqtt-e2e.example")
    assert record.kind.value == "server"
    assert record.sans == ("mqtt-e2e.example", "127.0.0.1")
    revoke(page, "mqtt-e2e.example")
    assert record.serial in crl_serials(browser_ca.crl_url)
    # something to show on the other pages' screenshots
    issue(page, "site-e2e-002")
    issue(page, "mqtt.ak-sg.com", server=True, sans="10.0.80.50")
    go(page, "View Certificates")
    total = len(Inventory(certs).records())
    expect(page.get_by_text(f"{total} of {total} certificates")).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=screenshots / "certificates.png", full_page=True)
    go(page, "Enroll a Site")
    page.get_by_label("Site name (CN)").fill("site-e2e-003")
    page.get_by_role("button", name="Create enrolment token").click()
    expect(page.get_by_text("Enrolment token for site-e2e-003")).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_role("main")).to_contain_text("sudo bash enroll-site.sh --site site-e2e-003")
    page.screenshot(path=screenshots / "enroll.png", full_page=True)
    go(page, "CA Settings")
    expect(page.get_by_text("step ca bootstrap")).to_be_visible(timeout=WAIT_MS)
    page.screenshot(path=screenshots / "ca_settings.png", full_page=True)
    go(page, "Dashboard")
    expect(page.get_by_text("revoked serial(s)")).to_be_visible(timeout=WAIT_MS)
    page.wait_for_timeout(1000)  # let the chart draw
    page.screenshot(path=screenshots / "dashboard.png", full_page=True)


def test_two_tabs_racing_on_one_cn_one_wins_and_neither_shows_the_others_key(
    browser: Browser, gui_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, certs = gui_server
    tabs = []
    for name in ("ada", "otto"):
        tab = logged_in(browser, url, name)
        go(tab, "Issue Certificate")
        tab.get_by_label("Common name (CN)").fill("site-e2e-race")
        tabs.append(tab)
    for tab in tabs:
        settled(tab)
    for tab in tabs:  # both presses reach the server before either issuance is done
        tab.get_by_role("button", name="Issue certificate").click(no_wait_after=True)

    outcome = re.compile(r"Issued site-e2e-race|already has an active certificate|being changed by another session")
    for tab in tabs:
        expect(tab.get_by_text(outcome).first).to_be_visible(timeout=WAIT_MS)
    won = [tab for tab in tabs if tab.get_by_text("Issued site-e2e-race").count()]
    lost = [tab for tab in tabs if tab not in won]
    assert len(won) == 1 and len(lost) == 1
    expect(lost[0].get_by_role("alert").filter(has_text="site-e2e-race")).to_contain_text(
        re.compile("already has an active certificate|being changed by another session")
    )
    assert lost[0].get_by_role("button", name="Make ZIP bundle").count() == 0

    live = next(r for r in Inventory(certs).records() if r.folder == "site-e2e-race")
    expect(won[0].get_by_role("main")).to_contain_text(f"serial {live.serial_hex}")
    passphrase, zip_path = download_bundle(won[0], tmp_path)
    check_bundle(zip_path.read_bytes(), "site-e2e-race", tmp_path / "race", passphrase)
    leaf = x509.load_pem_x509_certificates((tmp_path / "race" / "site-e2e-race.crt").read_bytes())[0]
    assert leaf.serial_number == live.serial  # the winner's own certificate and key
    for tab in tabs:
        tab.context.close()


def test_reconcile_shows_a_valid_certificate_filed_as_revoked_and_revokes_it(
    page: Page, gui_server: tuple[str, Path], browser_ca: RunningCA, screenshots: Path
) -> None:
    certs = gui_server[1]
    issue(page, "site-e2e-004")
    record = next(r for r in Inventory(certs).records() if r.folder == "site-e2e-004")
    (certs / "site-e2e-004").rename(certs / "site-e2e-004.revoked")  # what the old race left behind
    go(page, "Dashboard")
    expect(page.get_by_text("1 disagreement(s)")).to_be_visible(timeout=WAIT_MS)
    go(page, "Reconcile")
    expect(page.get_by_role("heading", name="site-e2e-004: archived-valid")).to_be_visible(timeout=WAIT_MS)
    page.get_by_label("Type the common name to confirm").fill("site-e2e-004")
    page.screenshot(path=screenshots / "reconcile.png", full_page=True)
    page.get_by_role("button", name=f"Revoke serial {record.serial_hex}").click()
    expect(page.get_by_text(f"serial {record.serial_hex} revoked; the CA's CRL lists it.")).to_be_visible(
        timeout=WAIT_MS
    )
    expect(page.get_by_text("nothing to reconcile")).to_be_visible(timeout=WAIT_MS)
    assert record.serial in crl_serials(browser_ca.crl_url)


def test_a_bundles_media_url_gives_a_stranger_nothing_usable(
    page: Page, gui_server: tuple[str, Path], tmp_path: Path
) -> None:
    issue(page, "site-e2e-005")
    page.get_by_role("button", name="Make ZIP bundle").click()
    expect(page.get_by_text("encrypted with this passphrase")).to_be_visible(timeout=WAIT_MS)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download ZIP bundle").click()
    media_url = download.value.url
    assert "/media/" in media_url
    # A client that never logged in, without a cookie, asks for the same URL.
    try:
        with urllib.request.urlopen(media_url, timeout=10) as resp:  # noqa: S310 (loopback test server)
            fetched = resp.read()
    except urllib.error.HTTPError:
        fetched = b""
    if fetched:
        key = zipfile.ZipFile(io.BytesIO(fetched)).read("site-e2e-005.key")
        assert key.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        with pytest.raises(TypeError, match="encrypted"):
            serialization.load_pem_private_key(key, password=None)
    assert b"PRIVATE KEY-----" not in fetched.replace(b"ENCRYPTED PRIVATE KEY-----", b"")


def test_each_role_in_the_browser_and_the_login_users_and_audit_pages(
    browser: Browser, gui_server: tuple[str, Path], screenshots: Path
) -> None:
    url = gui_server[0]
    stranger = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    stranger.goto(url)
    expect(stranger.get_by_role("button", name="Log in")).to_be_visible(timeout=WAIT_MS)
    stranger.screenshot(path=screenshots / "login.png", full_page=True)
    stranger.get_by_label("User name").fill("vera")
    stranger.get_by_role("textbox", name="Password").fill("a wrong password")
    stranger.get_by_role("button", name="Log in").click()
    expect(stranger.get_by_text("Wrong user name or password.")).to_be_visible(timeout=WAIT_MS)
    stranger.context.close()

    # A page's address asked for before the login is where the login lands (a bookmark, a link in an alert).
    deep = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    deep.goto(f"{url}/revoke")
    deep.get_by_label("User name").fill("otto")
    deep.get_by_role("textbox", name="Password").fill(password_of("otto"))
    deep.get_by_role("button", name="Log in").click()
    expect(deep.get_by_role("heading", name="Revoke Certificate")).to_be_visible(timeout=WAIT_MS)
    assert deep.url.endswith("/revoke")
    deep.context.close()

    vera = logged_in(browser, url, "vera")
    expect(vera.get_by_role("link", name="Users")).to_have_count(0)
    go(vera, "Issue Certificate")
    expect(vera.get_by_text("Your role (viewer) may not issue certificates")).to_be_visible(timeout=WAIT_MS)
    expect(vera.get_by_role("button", name="Issue certificate")).to_have_count(0)
    vera.context.close()

    ada = logged_in(browser, url, "ada")
    go(ada, "Users")
    expect(ada.get_by_role("heading", name="Add an account")).to_be_visible(timeout=WAIT_MS)
    expect(ada.get_by_role("button", name="Apply")).to_be_visible(timeout=WAIT_MS)  # the whole page drawn
    ada.wait_for_timeout(1500)  # the accounts table draws on a canvas after its frame appears
    ada.screenshot(path=screenshots / "users.png", full_page=True)
    go(ada, "Audit")
    expect(ada.get_by_text("The chain holds")).to_be_visible(timeout=WAIT_MS)
    ada.screenshot(path=screenshots / "audit.png", full_page=True)
    go(ada, "Alerts")
    expect(ada.get_by_text("Thresholds: sites 30/14/7/1 days")).to_be_visible(timeout=WAIT_MS)
    ada.screenshot(path=screenshots / "alerts.png", full_page=True)
    go(ada, "Broker check")
    expect(ada.get_by_role("button", name="Run the check")).to_be_visible(timeout=WAIT_MS)
    ada.screenshot(path=screenshots / "broker_check.png", full_page=True)
    ada.get_by_role("button", name="Log out").click()
    expect(ada.get_by_role("button", name="Log in")).to_be_visible(timeout=WAIT_MS)
    ada.context.close()


def page_text(page: Page) -> str:
    return str(page.evaluate("document.body.innerText"))


def wait_text(page: Page, pattern: str, timeout: float = WAIT_MS) -> re.Match[str]:
    """Until the page's text matches `pattern` (a regex); the match."""
    try:
        page.wait_for_function("p => new RegExp(p).test(document.body.innerText)", arg=pattern, timeout=timeout)
    except PlaywrightTimeout:
        pytest.fail(f"{pattern!r} never on the page, which reads:\n{page_text(page)}")
    found = re.search(pattern, page_text(page))
    assert found, pattern
    return found


def upload(page: Page, path: Path) -> None:
    """Give the file uploader `path` and wait until it shows the file as uploaded."""
    page.locator("input[type=file]").set_input_files(path)
    expect(page.get_by_role("button", name=f"Remove {path.name}")).to_be_visible(timeout=WAIT_MS)


def test_bulk_enrolment_goes_on_without_the_browser_and_resumes_after_the_ca_and_the_gui_stopped(
    browser: Browser, browser_ca: RunningCA, screenshots: Path, tmp_path: Path
) -> None:
    """1,000 sites as certificates: the CA stops mid-job, the browser closes, the GUI is stopped and started
    again; Resume finishes the job, every site has one valid certificate, and the bundles download."""
    base = tmp_path / "gui"
    accounts = UserStore(base / "data" / "users.json", AuditLog(base / "data" / "audit.log"))
    for name, role in ACCOUNTS.items():
        accounts.add(SHELL, name, role, password_of(name))
    names = [f"bulk-web-{i:04}" for i in range(1000)]
    sites_csv = tmp_path / "sites.csv"
    sites_csv.write_text("site,sans,note\n" + "".join(f"{n},,row {i}\n" for i, n in enumerate(names)) + "bad site,,\n")
    jobs = BulkJobs(base / "data" / "bulk")
    gui = GuiProcess(browser_ca, base)
    try:
        page = logged_in(browser, gui.url, "otto")
        go(page, "Bulk Enrollment")
        page.get_by_text("Certificates made here").click()
        upload(page, sites_csv)
        page.get_by_role("button", name="Check the list").click()
        expect(page.get_by_text("1000 to enrol")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text("1 wrong as written")).to_be_visible()
        page.screenshot(path=screenshots / "bulk.png", full_page=True)
        page.get_by_role("button", name="Enrol 1000 sites").click()
        deadline = time.monotonic() + 60
        while not jobs.job_ids() or len(jobs.results(jobs.job_ids()[0])) < 20:
            assert time.monotonic() < deadline, "the job started"
            time.sleep(0.01)
        browser_ca.stop()  # mid-job
        try:
            job = jobs.job_ids()[0]
            wait_text(page, rf"Job {job} .*: [0-9]+ done")
            wait_text(page, "waiting: The CA")
            page.context.close()  # the browser goes away while the job waits for the CA
            gui.stop()
        finally:
            browser_ca.start()
        stopped_at = len(jobs.results(job))
        assert 20 <= stopped_at < 1000
        gui = GuiProcess(browser_ca, base)
        page = logged_in(browser, gui.url, "otto")
        go(page, "Bulk Enrollment")
        wait_text(page, rf"Job {job} .*: {stopped_at} done, 0 skipped, 0 failed of 1000")
        wait_text(page, "interrupted")
        settled(page)
        page.get_by_role("button", name="Resume").click()
        wait_text(page, rf"Job {job} .*: 1000 done, 0 skipped, 0 failed of 1000", timeout=180_000)
        wait_text(page, "finished")
        settled(page)  # the job's end reruns the whole page: a click during that run may be lost
        page.get_by_role("button", name=re.compile("Prepare the bundles")).click()
        with page.expect_download(timeout=120_000) as download:
            page.get_by_role("button", name="Download 1000 bundles (ZIP)").click(timeout=120_000)
        bundles = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
        assert sorted(bundles.namelist()) == sorted(f"{n}.zip" for n in names)
        # The passphrases are on the page only; the ZIP's own URL, fetched without a session, holds no usable key.
        wait_text(page, r"site,serial,passphrase")
        phrases = re.findall(r"(bulk-web-[0-9]+),[0-9A-F]+,([A-Za-z0-9-]+)", page_text(page))
        assert len(dict(phrases)) == 1000, len(phrases)
        first = dict(phrases)["bulk-web-0000"]
        with urllib.request.urlopen(download.value.url) as stranger:  # noqa: S310 (the loopback GUI)
            fetched = zipfile.ZipFile(io.BytesIO(stranger.read()))
        inner = zipfile.ZipFile(io.BytesIO(fetched.read("bulk-web-0000.zip")))
        assert b"ENCRYPTED PRIVATE KEY" in inner.read("bulk-web-0000.key")
        assert serialization.load_pem_private_key(inner.read("bulk-web-0000.key"), first.encode())

        # The same file again: nothing left to do.
        upload(page, sites_csv)
        page.get_by_role("button", name="Check the list").click()
        expect(page.get_by_text("0 to enrol")).to_be_visible(timeout=WAIT_MS)
        expect(page.get_by_text(f"started before as job {job}")).to_be_visible()
        page.context.close()
    finally:
        gui.stop()
    settings = browser_ca.settings(PKI_CERTS_DIR=str(base / "certs"), PKI_DATA_DIR=str(base / "data"),
                                   PKI_AUDIT_LOG=str(base / "data" / "audit.log"),
                                   PKI_LEDGER_DIR=str(base / "data" / "ledger"))  # fmt: skip
    rows = Fleet(settings).table().rows
    valid = {
        (r.record.identity, r.record.serial) for r in rows if r.valid and r.record.identity.startswith("bulk-web-")
    }
    assert sorted(identity for identity, _ in valid) == names, "one valid certificate per site, by the CA's journal"
