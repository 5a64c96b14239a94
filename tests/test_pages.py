"""Every page through Streamlit's AppTest, against the real CA."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import streamlit as st
from cryptography import x509
from streamlit.testing.v1 import AppTest

from certfactory import write_certificate
from checks import enrol_with_token
from conftest import OPERATOR, REPO, RunningCA, free_port
from pki.accounts import UserStore
from pki.audit import AuditLog
from pki.ca import StepCA
from pki.fleet import Fleet
from pki.issuing import Issued, IssueRequest
from pki.model import Kind
from pki.roles import SHELL, Role
from pki.settings import load_settings
from pki.step import CARefused
from pki.throttle import Attempt, LoginThrottle, Refused
from views.tables import table_of

APP = REPO / "streamlit" / "app.py"
PAGES = [
    "views/dashboard.py",
    "views/issue.py",
    "views/certificates.py",
    "views/revoke.py",
    "views/enroll.py",
    "views/bulk.py",
    "views/reconcile.py",
    "views/audit.py",
    "views/alerts.py",
    "views/broker_check.py",
    "views/ca_settings.py",
]
TIMEOUT = 60  # longer than any step call's own timeout


@pytest.fixture
def gui(ca: RunningCA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The environment a GUI process gets, pointing at the session's CA; returns its certs/ folder."""
    certs = tmp_path / "certs"
    env = {
        "STEP_CA_URL": ca.url,
        "PKI_GUI_DIR": str(ca.gui_dir),
        "PKI_CERTS_DIR": str(certs),
        "PKI_DATA_DIR": str(tmp_path / "data"),
        "PKI_STEPPATH": str(tmp_path / "gui-step"),
        "PKI_STEP_BIN": ca.settings().step_bin,
        "PKI_STEP_TIMEOUT": "20",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PKI_PASSWORD", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield certs
    st.cache_data.clear()
    st.cache_resource.clear()


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    return at


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def issue_here(cn: str, kind: Kind = Kind.CLIENT, days: int = 30) -> Issued:
    """Issue as the GUI under test would (same settings: its certs/, ledger and audit trail)."""
    return Fleet(load_settings()).issue(OPERATOR, IssueRequest(cn, kind, "", days, "EC P-256"))


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != ".locks")


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_exception(gui: Path, page: str) -> None:
    at = open_page(page)
    assert not at.exception, at.exception
    assert at.title[0].value
    assert "not available" not in texts(at.error)


def test_no_page_imports_pandas(gui: Path) -> None:
    """Importing pandas costs the first page after a start most of a second: the pages make their tables as
    Arrow (views/tables.py). Checked in a fresh interpreter, as a GUI process starts, with rows to show."""
    issue_here("site-304", days=5)  # expires within PKI_EXPIRING_DAYS (7)
    issue_here("mqtt-304.example", Kind.SERVER, days=5)
    script = f"""
import sys
sys.path[:0] = [{str(REPO / "streamlit")!r}]
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({str(APP)!r}, default_timeout={TIMEOUT}).run()
tables = len(at.dataframe)
for page in {PAGES!r}:
    at.switch_page(page).run()
    assert not at.exception, (page, at.exception)
    assert "pandas" not in sys.modules, page
print(tables)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "2", "the Dashboard shows its two tables: by type, and what expires soon"


def test_a_table_made_without_pandas_holds_what_it_was_given() -> None:
    rows = [
        {"Text": "site-1", "Whole": 3, "Yes": True, "Part": 1.5, "Nothing": None},
        {"Text": None, "Whole": None, "Yes": False, "Part": 2, "Extra": "é ✓"},
        {"Text": "", "Whole": 2**70, "Yes": None, "Part": None},
    ]
    table = table_of(rows)
    table.validate(full=True)
    assert table.column_names == ["Text", "Whole", "Yes", "Part", "Nothing", "Extra"]
    assert [str(t) for t in table.schema.types] == ["string", "string", "bool", "double", "string", "string"]
    assert table.to_pylist() == [
        {"Text": "site-1", "Whole": "3", "Yes": True, "Part": 1.5, "Nothing": None, "Extra": None},
        {"Text": None, "Whole": None, "Yes": False, "Part": 2.0, "Nothing": None, "Extra": "é ✓"},
        {"Text": "", "Whole": str(2**70), "Yes": None, "Part": None, "Nothing": None, "Extra": None},
    ]  # a whole number beyond 64 bits makes its column text
    nested = table_of([{"Sent": {"mail": 1}, "To": ["ops", "é"]}, {"Sent": {}, "To": None}])
    assert nested.to_pylist() == [{"Sent": '{"mail": 1}', "To": '["ops", "é"]'}, {"Sent": "{}", "To": None}]
    assert table_of(rows, ["Part", "Missing"]).to_pylist() == [
        {"Part": 1.5, "Missing": None}, {"Part": 2.0, "Missing": None}, {"Part": None, "Missing": None}
    ]  # fmt: skip
    many = table_of({"n": i if i % 3 else None, "on": i % 2 == 0} for i in range(10_001))
    many.validate(full=True)
    assert many.to_pylist() == [{"n": i if i % 3 else None, "on": i % 2 == 0} for i in range(10_001)]
    assert str(many.schema.field("n").type) == "int64" and table_of([]).num_columns == 0


def test_issue_page_issues_and_offers_the_bundle(gui: Path) -> None:
    at = open_page("views/issue.py")
    at.text_input[0].input("site-301")
    at.text_area[0].input("site-301\n10.0.60.21")
    validity = next(r for r in at.radio if r.label == "Validity")
    validity.set_value("90 days")
    at.button[0].click().run()
    assert not at.exception
    assert "Issued **site-301** (client)" in texts(at.success)
    assert (gui / "site-301" / "site-301.crt").exists()
    assert (gui / "site-301" / "site-301.key").stat().st_mode & 0o777 == 0o600
    assert not at.get("download_button"), "no key leaves before it is asked for"
    next(b for b in at.button if b.label.startswith("Make ZIP bundle")).click().run()
    assert at.get("download_button"), "the ZIP bundle is offered"
    passphrase = at.code[-1].value
    assert len(passphrase) >= 20 and passphrase not in (gui.parent / "data" / "audit.log").read_text()
    assert '"action": "bundle"' in (gui.parent / "data" / "audit.log").read_text()


def test_issue_page_refuses_an_active_cn_and_points_to_revoke(ca: RunningCA, gui: Path) -> None:
    issue_here("site-302")
    at = open_page("views/issue.py")
    at.text_input[0].input("site-302")
    at.button[0].click().run()
    assert "already has an active certificate" in texts(at.error)
    assert "Revoke" in texts(at.error)
    assert names(gui) == ["site-302"]


BAD_INPUTS = [
    ("", {}, "empty"),
    (".", {}, "is empty"),
    ("..", {}, "may hold only"),
    ("../x", {}, "may hold only"),
    ("a/b", {}, "may hold only"),
    ("-rf", {}, "may hold only"),
    ("site;rm -rf /", {}, "may hold only"),
    ("$(reboot)", {}, "may hold only"),
    ("x" * 65, {}, "at most 64"),
    ("site-ok", {"sans": "1.2.3.999"}, "not a valid IP address"),
    ("site-ok", {"sans": "my host"}, "contains spaces"),
    ("site-ok", {"days": 0}, "at least 1 day"),
    ("site-ok", {"days": -3}, "at least 1 day"),
    ("site-ok", {"days": 731}, "above the CA's maximum"),
]


@pytest.mark.parametrize(("cn", "extra", "message"), BAD_INPUTS, ids=[repr(b[0])[:20] + str(b[1]) for b in BAD_INPUTS])
def test_bad_input_shows_a_message_creates_nothing_and_starts_nothing(
    gui: Path, step_calls: list[list[str]], cn: str, extra: dict[str, object], message: str
) -> None:
    at = open_page("views/issue.py")
    if "days" in extra:
        next(r for r in at.radio if r.label == "Validity").set_value("Custom").run()
        at.number_input[0].set_value(extra["days"])
    at.text_input[0].input(cn)
    if "sans" in extra:
        at.text_area[0].input(str(extra["sans"]))
    step_calls.clear()
    at.button[0].click().run()
    assert not at.exception
    assert message in texts(at.error)
    assert not gui.exists() or list(gui.iterdir()) == []
    started = [argv for argv in step_calls if "health" not in argv and "crl" not in argv]
    assert started == [], started


def test_view_page_lists_searches_and_shows_details(ca: RunningCA, gui: Path) -> None:
    issue_here("site-303")
    issue_here("mqtt-303.example", Kind.SERVER)
    at = open_page("views/certificates.py")
    table = at.dataframe[0].value
    assert set(table["CN"]) == {"site-303", "mqtt-303.example"}
    assert dict(zip(table["CN"], table["Type"], strict=True)) == {"site-303": "client", "mqtt-303.example": "server"}
    assert set(table["Status"]) == {"active"}

    at.text_input[0].input("mqtt-303").run()
    assert list(at.dataframe[0].value["CN"]) == ["mqtt-303.example"]
    assert "mqtt-303.example: active" in texts(at.subheader)
    assert "BEGIN CERTIFICATE" in at.code[0].value

    at.text_input[0].input("").run()
    at.multiselect[0].set_value(["revoked"]).run()
    assert at.dataframe[0].value.empty


def test_view_page_row_selection_shows_details(ca: RunningCA, gui: Path) -> None:
    issue_here("site-304")
    issue_here("site-305")
    at = open_page("views/certificates.py")
    at.session_state["certificate_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    assert "site-305: active" in texts(at.subheader)


def test_a_large_fleet_is_shown_a_page_at_a_time_and_a_selection_stays_on_its_page(ca: RunningCA, gui: Path) -> None:
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    for i in range(1003):  # another CA's certificates (foreign): enough to fill more than a page
        write_certificate(gui, f"fleet-{i:04}", f"fleet-{i:04}", not_after=expires)
    at = open_page("views/certificates.py")
    assert list(at.dataframe[0].value["CN"]) == [f"fleet-{i:04}" for i in range(1000)]
    assert "1003 of 1003 certificates, rows 1 to 1000 shown" in texts(at.caption)
    at.session_state["certificate_table"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert "fleet-0002: foreign" in texts(at.subheader)

    next(field for field in at.number_input if field.label == "Page (of 2)").set_value(2).run()
    assert list(at.dataframe[0].value["CN"]) == ["fleet-1000", "fleet-1001", "fleet-1002"]
    assert "rows 1001 to 1003 shown" in texts(at.caption)
    assert "fleet-1002" not in texts(at.subheader), "row 2 of page 1 is not row 2 of page 2"

    at.text_input[0].input("fleet-100").run()  # fleet-1000 to fleet-1002: one page
    assert list(at.dataframe[0].value["CN"]) == ["fleet-1000", "fleet-1001", "fleet-1002"]
    assert not [field for field in at.number_input if field.label.startswith("Page")], "one page: no page number"


def test_view_status_follows_the_crl_not_only_folder_names(ca: RunningCA, gui: Path) -> None:
    record = issue_here("site-306").record
    StepCA(ca.settings()).revoke(record.serial, 0)  # revoked with the CLI: the folder keeps its name
    at = open_page("views/certificates.py")
    table = at.dataframe[0].value
    assert table.loc[table["CN"] == "site-306", "Status"].item() == "revoked"


def test_revoke_page_revokes_renames_and_confirms_the_crl(ca: RunningCA, gui: Path) -> None:
    issue_here("site-307")
    at = open_page("views/revoke.py")
    assert not at.button, "no revoke button before a certificate is chosen"
    at.selectbox[0].set_value("site-307").run()
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert "type the common name exactly" in texts(at.error)
    assert (gui / "site-307").exists()

    at.text_input[0].input("site-307")
    at.button[0].click().run()
    assert not at.exception
    message = texts(at.success)
    assert "site-307" in message and "certs/site-307.revoked/" in message and "CRL now lists" in message
    assert names(gui) == ["site-307.revoked"]
    assert "No active certificate" in texts(at.info)
    assert "sudo systemctl start app-pki-crl-refresh" in message, "the next step: the broker's CRL"


def test_revoke_page_ticks_only_what_a_broker_re_issue_replaced(ca: RunningCA, gui: Path) -> None:
    old = issue_here("mqtt-308.example", Kind.SERVER).record
    new = Fleet(load_settings()).reissue(OPERATOR, old.serial).record
    site = issue_here("site-308").record
    at = open_page("views/revoke.py")
    at.selectbox[0].set_value("mqtt-308.example").run()
    assert len(at.multiselect[0].options) == 2 and new.serial_hex in " ".join(at.multiselect[0].options)
    assert at.multiselect[0].value == [old.serial], "the broker's current certificate is not ticked"
    assert "changes nothing at the sites" in texts(at.info)
    at.selectbox[0].set_value("site-308").run()
    assert at.multiselect[0].value == [site.serial]
    assert "changes nothing at the sites" not in texts(at.info)


def test_view_page_makes_a_bundle_again_for_operators_only(ca: RunningCA, gui: Path) -> None:
    issue_here("site-309")
    at = open_page("views/certificates.py")
    at.text_input[0].input("site-309").run()
    assert at.text_input[1].value == load_settings().broker_address
    at.text_input[1].input("10.0.60.2:8884")
    next(b for b in at.button if b.label.startswith("Make ZIP bundle")).click().run()
    assert not at.exception, at.exception
    assert at.get("download_button")[-1].proto.label == "Download ZIP bundle"
    audit = (gui.parent / "data" / "audit.log").read_text()
    assert '"action": "bundle"' in audit and '"broker": "10.0.60.2:8884"' in audit


def test_ca_settings_page_shows_the_bootstrap_command(ca: RunningCA, gui: Path) -> None:
    at = open_page("views/ca_settings.py")
    fingerprint = StepCA(ca.settings()).root_fingerprint()
    assert at.code[0].value == f"step ca bootstrap --ca-url {ca.settings().public_ca_url} --fingerprint {fingerprint}"
    provisioners = at.dataframe[0].value
    assert set(provisioners["Name"]) == {"admin", "iot-devices", "iot-servers"}
    labels = [button.proto.label for button in at.get("download_button")]
    assert labels == ["Root certificate", "Intermediate certificate", "CRL (PEM)", "enroll-site.sh", "refresh-crl.sh"]


def log_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input[0].input(name)
    at.text_input[1].input(password)
    return at.button[0].click().run()


def test_the_gui_password_logs_in_the_bootstrap_admin_until_an_account_exists(
    gui: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PKI_PASSWORD", "s3cret-Pass")
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert [t.value for t in at.title] == ["app-pki"]
    assert not at.metric and not at.dataframe  # nothing of the CA is shown
    for _ in range(4):
        log_in(at, "admin", "wrong")
        assert "Wrong user name or password." in texts(at.error)
    assert not at.metric and not at.dataframe
    log_in(at, "admin", "s3cret-Pass")  # the fifth try of this address in a minute: let in, and the limit
    assert "Dashboard" in [t.value for t in at.title]
    assert "locked out" not in texts(at.warning)  # the good login's own try took back the lock-out it caused
    log = (gui.parent / "data" / "audit.log").read_text()
    assert (
        '"action": "login", "outcome": "failed"' in log
        and '"user": "admin", "role": "admin", "via": "bootstrap"' in log
    )

    accounts = UserStore(gui.parent / "data" / "users.json", AuditLog(gui.parent / "data" / "audit.log"))
    accounts.add(SHELL, "ada", Role.ADMIN, "a long admin password")
    at.run()  # the bootstrap session ends once an account exists
    assert [t.value for t in at.title] == ["app-pki"]
    log_in(at, "admin", "s3cret-Pass")
    assert "Wrong user name or password." in texts(at.error)
    log_in(at, "ada", "a long admin password")
    assert "Dashboard" in [t.value for t in at.title]


def test_each_role_sees_only_what_it_may_do(gui: Path) -> None:
    accounts = UserStore(gui.parent / "data" / "users.json", AuditLog(gui.parent / "data" / "audit.log"))
    for name, role in (("ada", Role.ADMIN), ("otto", Role.OPERATOR), ("vera", Role.VIEWER)):
        accounts.add(SHELL, name, role, f"password of {name} 123")
    pages = {}
    for name in ("ada", "otto", "vera"):
        at = log_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run(), name, f"password of {name} 123")
        assert not at.exception
        pages[name] = at
        at.switch_page("views/issue.py").run()
        assert not at.exception
    assert "may not issue certificates" in texts(pages["vera"].info)
    assert [b.label for b in pages["vera"].button] == ["Log out"]
    assert "may not issue" not in texts(pages["otto"].info)
    assert "Issue certificate" in [b.label for b in pages["otto"].button]
    vera = pages["vera"]
    vera.switch_page("views/revoke.py").run()
    assert "may not revoke certificates" in texts(vera.info)
    vera.switch_page("views/enroll.py").run()
    assert "may not make enrolment tokens" in texts(vera.info)
    with pytest.raises(Exception, match="users"):
        vera.switch_page("views/users.py").run()  # not in a viewer's navigation at all
    ada = pages["ada"]
    ada.switch_page("views/users.py").run()
    assert set(ada.dataframe[0].value["User"]) == {"ada", "otto", "vera"}
    accounts.update(SHELL, "otto", disabled=True)
    otto = pages["otto"]
    otto.run()  # a disabled account is out at its next click
    assert [t.value for t in otto.title] == ["app-pki"]


@pytest.mark.parametrize("page", PAGES)
def test_ca_down_banner_on_every_page(gui: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> None:
    monkeypatch.setenv("STEP_CA_URL", f"https://localhost:{free_port()}")
    at = open_page(page)
    assert not at.exception, at.exception
    assert "The certificate authority is not available" in texts(at.error)


@pytest.mark.parametrize("page", PAGES)
def test_missing_step_cli_banner(gui: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> None:
    monkeypatch.setenv("PKI_STEP_BIN", "/nonexistent/step")
    at = open_page(page)
    assert not at.exception, at.exception
    assert "step CLI was not found" in texts(at.error)


def test_enroll_page_mints_a_token_and_shows_the_command(
    ca: RunningCA, gui: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CA's journal, where a cancelled token must show up spent before the page says so.
    monkeypatch.setenv("PKI_CA_LOG", str(ca.journal))
    at = open_page("views/enroll.py")
    at.text_input[0].input("site-801")
    at.number_input[0].set_value(12)
    at.button[0].click().run()
    assert not at.exception
    assert "Enrolment token for **site-801**" in texts(at.success)
    command = at.code[0].value
    assert command.startswith("sudo bash enroll-site.sh --site site-801 --ca-url ")
    assert "--token-file - <<'TOKEN'\neyJ" in command and "--broker mqtt.ak-sg.com:8883" in command
    assert at.get("download_button"), "enroll-site.sh is offered for download"
    audit = (gui.parent / "data" / "audit.log").read_text()
    assert '"action": "token"' in audit and "eyJ" not in audit

    # The token is listed, unused, and can be cancelled: then the CA refuses it.
    tokens = at.dataframe[0].value
    assert list(tokens["Site"]) == ["site-801"] and list(tokens["State"]) == ["unused"]
    token = command.split("\n")[1]
    at.selectbox[0].select_index(0).run()
    next(b for b in at.button if b.label == "Cancel token").click().run()
    assert not at.exception, at.exception
    assert "The token for site-801 is cancelled" in texts(at.success)
    assert list(at.dataframe[0].value["State"]) == ["cancelled"]
    with pytest.raises(CARefused):
        enrol_with_token(load_settings(), gui.parent / "device-801", token, "site-801")


@pytest.mark.parametrize(
    ("site", "hours", "message"), [("../x", 24, "may hold only"), ("site-802", 0, "from 1 to 168")]
)
def test_enroll_page_refuses_bad_input(
    gui: Path, step_calls: list[list[str]], site: str, hours: int, message: str
) -> None:
    at = open_page("views/enroll.py")
    at.text_input[0].input(site)
    at.number_input[0].set_value(hours)
    step_calls.clear()
    at.button[0].click().run()
    assert message in texts(at.error)
    assert not at.code
    assert [argv for argv in step_calls if "jwt" in argv] == []


def test_view_page_reissues_a_broker_certificate(ca: RunningCA, gui: Path) -> None:
    issue_here("mqtt-803.example", Kind.SERVER)
    at = open_page("views/certificates.py")
    at.text_input[0].input("mqtt-803").run()
    reissue = next(b for b in at.button if b.label == "Re-issue this broker certificate")
    assert reissue.disabled, "re-issue asks to be confirmed first"
    at.checkbox[0].check().run()
    old_serial = at.dataframe[0].value["Serial"].item()
    next(b for b in at.button if b.label == "Re-issue this broker certificate").click().run()
    assert not at.exception
    assert "Re-issued **mqtt-803.example**" in texts(at.success)
    assert names(gui) == ["mqtt-803.example", "mqtt-803.example.replaced"]
    # The details show the new certificate at once, not the one it replaced.
    new_crt = next(r for r in (gui / "mqtt-803.example").iterdir() if r.suffix == ".crt")
    new_hex = f"{x509.load_pem_x509_certificate(new_crt.read_bytes()).serial_number:X}"
    assert new_hex != old_serial
    assert f"**Serial** `{new_hex}`" in " ".join(m.value for m in at.markdown)
    assert set(at.dataframe[0].value["Serial"]) == {old_serial, new_hex}


def test_dashboard_counts_sites_and_brokers_and_a_new_broker_certificate_does_not_warn(gui: Path) -> None:
    """(report.server_expiry_warnings is tested with backdated certificates; the CA cannot make one.)"""
    old = issue_here("mqtt-805.example", Kind.SERVER, days=20).record
    Fleet(load_settings()).reissue(OPERATOR, old.serial)  # two certificates, one broker
    issue_here("site-804", days=20)
    at = open_page("views/dashboard.py")
    warnings = texts(at.warning)
    assert "site-804" not in warnings and "mqtt-805.example" not in warnings
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Sites": "1", "Brokers": "1", "Expiring": "0", "Revoked": "0"}


def test_a_site_known_only_from_the_ca_journal_is_shown_and_revoked(
    ca: RunningCA, gui: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = ca.settings()
    step_ca = StepCA(settings)
    token = step_ca.enrollment_token("site-805", dt.timedelta(hours=1))
    site = tmp_path / "site-host"
    ca.wait_in_journal(enrol_with_token(settings, site, token, "site-805"))
    monkeypatch.setenv("PKI_CA_LOG", str(ca.journal))
    monkeypatch.setenv("PKI_LEDGER_DIR", str(tmp_path / "ledger"))

    at = open_page("views/certificates.py")
    at.text_input[0].input("site-805").run()
    table = at.dataframe[0].value
    assert list(table["Source"]) == ["CA journal"] and list(table["Status"]) == ["active"]
    assert not any("issuance journal" in w for w in texts(at.warning).splitlines())

    at.switch_page("views/revoke.py").run()
    at.selectbox[0].set_value("site-805").run()
    at.text_input[0].input("site-805")
    at.button[0].click().run()
    assert "CRL now lists it" in texts(at.success)
    assert x509.load_pem_x509_certificate((site / "c.crt").read_bytes()).serial_number in step_ca.crl_info().revoked


def test_a_missing_ca_journal_is_a_warning(gui: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PKI_CA_LOG", str(tmp_path / "no-such-journal.log"))
    for page in ("views/dashboard.py", "views/certificates.py"):
        at = open_page(page)
        assert "issuance journal" in texts(at.warning) and "does not exist" in texts(at.warning)


def test_issue_page_says_what_it_normalised(gui: Path) -> None:
    at = open_page("views/issue.py")
    at.text_input[0].input("SITE-806.")
    at.button[0].click().run()
    assert "Issued **site-806** (client)" in texts(at.success)
    assert "You typed `SITE-806.`" in texts(at.info) and "so it is `site-806`" in texts(at.info)
    assert names(gui) == ["site-806"]


def test_reconcile_page_lists_a_valid_certificate_filed_as_revoked_and_revokes_it(ca: RunningCA, gui: Path) -> None:
    record = issue_here("site-807").record
    (gui / "site-807").rename(gui / "site-807.revoked")  # valid at the CA, filed as if revoked
    at = open_page("views/dashboard.py")
    assert "**1 disagreement(s)**" in texts(at.warning)
    at.switch_page("views/reconcile.py").run()
    table = at.dataframe[0].value
    assert list(zip(table["Problem"], table["Serial"], table["Where"], strict=True)) == [
        ("archived-valid", record.serial_hex, "certs/site-807.revoked")
    ]
    at.text_input[0].input("site-807")
    at.button[0].click().run()
    assert not at.exception
    assert f"serial `{record.serial_hex}` revoked; the CA's CRL lists it." in texts(at.success)
    assert "nothing to reconcile" in texts(at.success)
    assert record.serial in StepCA(ca.settings()).crl_info().revoked
    audit = (gui.parent / "data" / "audit.log").read_text()
    assert '"action": "revoke"' in audit and record.serial_hex in audit


def test_the_dashboard_warns_of_addresses_locked_out(gui: Path) -> None:
    throttle = LoginThrottle(gui.parent / "data" / "login-throttle.json")
    for _ in range(5):
        assert isinstance(throttle.attempt("192.0.2.44"), Attempt)
    assert isinstance(throttle.attempt("192.0.2.44"), Refused)
    at = open_page("views/dashboard.py")
    assert "**1 locked out** after failed logins: address 192.0.2.44" in texts(at.warning)


def test_logging_out_leaves_nothing_for_the_next_user_of_the_browser(gui: Path) -> None:
    accounts = UserStore(gui.parent / "data" / "users.json", AuditLog(gui.parent / "data" / "audit.log"))
    accounts.add(SHELL, "ada", Role.ADMIN, "password of ada 123")
    accounts.add(SHELL, "otto", Role.OPERATOR, "password of otto 123")
    at = log_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run(), "otto", "password of otto 123")
    at.switch_page("views/issue.py").run()
    next(t for t in at.text_input if t.label == "Common name (CN)").input("site-931")
    next(b for b in at.button if b.label == "Issue certificate").click().run()
    next(b for b in at.button if b.label.startswith("Make ZIP bundle")).click().run()
    passphrase = at.code[-1].value
    next(b for b in at.button if b.label == "Log out").click().run()
    assert [t.value for t in at.title] == ["app-pki"]
    log_in(at, "ada", "password of ada 123")
    at.switch_page("views/issue.py").run()
    assert not at.get("download_button") and passphrase not in [c.value for c in at.code]
    assert "site-931" not in texts(at.success)


def test_a_session_left_idle_must_log_in_again(gui: Path) -> None:
    accounts = UserStore(gui.parent / "data" / "users.json", AuditLog(gui.parent / "data" / "audit.log"))
    accounts.add(SHELL, "ada", Role.ADMIN, "password of ada 123")
    at = log_in(AppTest.from_file(str(APP), default_timeout=TIMEOUT).run(), "ada", "password of ada 123")
    assert "Dashboard" in [t.value for t in at.title]
    at.session_state["active-at"] = at.session_state["active-at"] - 31 * 60  # 31 minutes ago
    at.switch_page("views/issue.py").run()
    assert [t.value for t in at.title] == ["app-pki"]
    assert "without activity" in texts(at.info)
    assert not any(b.label == "Issue certificate" for b in at.button)
    log_in(at, "ada", "password of ada 123")
    assert [t.value for t in at.title] == ["Issue Certificate"]  # back where the session was
    assert '"action": "logout", "outcome": "idle"' in (gui.parent / "data" / "audit.log").read_text()


def test_the_alerts_page_shows_runs_and_sends_a_test_alert(gui: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url_file = gui.parent / "webhook-url"
    url_file.write_text(f"http://127.0.0.1:{server.server_address[1]}/hook\n")
    monkeypatch.setenv("PKI_ALERT_WEBHOOK_URL_FILE", str(url_file))
    try:
        at = open_page("views/alerts.py")
        assert "No alert run yet." in texts(at.info)
        next(b for b in at.button if b.label == "Send a test alert").click().run()
        assert "webhook: ok" in texts(at.success)
        assert b"Test alert" in received[0]
        assert '"action": "alert-test"' in (gui.parent / "data" / "audit.log").read_text()
        # The webhook's URL (it holds its secret) is not shown.
        assert f"127.0.0.1:{server.server_address[1]}" not in " ".join(str(t.value) for t in at.table)
    finally:
        server.shutdown()


def test_bulk_page_checks_every_row_then_runs_the_job(ca: RunningCA, gui: Path) -> None:
    issue_here("site-bulk-1")
    at = open_page("views/bulk.py")
    assert not at.dataframe, "nothing to preview before a list is given"
    next(b for b in at.button if b.label == "Check the list").click().run()
    assert "Choose a CSV file or paste site names" in texts(at.warning)
    at.text_area[0].input("site-bulk-1\nsite-bulk-2\nSITE-BULK-2\nbad name\nsite-bulk-3\n")
    next(b for b in at.button if b.label == "Check the list").click().run()
    assert not at.exception, at.exception
    assert "**2** to enrol (tokens), **1** need nothing, **2** wrong as written" in texts(at.markdown)
    table = at.dataframe[0].value
    assert list(table["Check"]) == ["skip", "to enrol", "WRONG", "WRONG", "to enrol"]
    assert not list(gui.parent.glob("data/bulk/*")), "a check starts nothing"
    next(b for b in at.button if b.label == "Enrol 2 sites").click().run()
    fleet = Fleet(load_settings())
    job = fleet.bulk.job_ids()[0]
    fleet.bulk.wait(job, timeout=60)
    deadline = time.monotonic() + 30
    while not fleet.bulk.status(job).finished:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    at.run()
    assert f"Job {job}" in texts(at.markdown) and "2 done, 0 skipped, 0 failed of 2" in texts(at.markdown)
    assert any(b.label.startswith("Show the commands") for b in at.button)
