"""Alerts against a real CA, a real SMTP server (aiosmtpd on loopback: STARTTLS with a certificate from our
own CA, and a login) and a real HTTP receiver: the right mails and posts arrive, nothing twice, a failed
channel gets its events on the next run, renewal-overdue fires for a site whose renewal stopped and not
for one that renewed.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509

from conftest import OPERATOR, RunningCA, free_port, gui_fleet, module_env, started_ca
from pki.alerts import AlertConfig, Alerts, alert_config, find_events
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.step import run_step

USER, PASSWORD = "alerts", "the smtp password of alerts"


@pytest.fixture(scope="module")
def alert_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    ca = started_ca(tmp_path_factory.mktemp("alerts-pki"))
    yield ca
    ca.stop()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default).get_content())
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == USER.encode() and data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


class Receiver(BaseHTTPRequestHandler):
    posts: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.posts.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def short_site_certificate(fleet: Fleet, folder: Path, cn: str) -> x509.Certificate:
    """A site certificate as a site holds it (the GUI knows it from the CA's journal only), living 40 s."""
    s = fleet.settings
    folder.mkdir(parents=True, exist_ok=True)
    run_step(
        ["ca", "certificate", cn, str(folder / f"{cn}.crt"), str(folder / f"{cn}.key"), "--provisioner",
         s.client_provisioner, "--provisioner-password-file", str(s.password_file(s.client_provisioner)),
         "--not-after", "40s", "--force", "--ca-url", s.ca_url, "--root", str(s.root)],
        step_path=s.step_path, timeout=20, step_bin=s.step_bin,
    )  # fmt: skip
    return x509.load_pem_x509_certificates((folder / f"{cn}.crt").read_bytes())[0]


def test_alerts_by_mail_and_webhook(alert_ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(alert_ca, tmp_path)
    fleet.issue(OPERATOR, IssueRequest("alert-site-soon", Kind.CLIENT, "", 5, "EC P-256"))
    fleet.issue(OPERATOR, IssueRequest("alert-site-fine", Kind.CLIENT, "", 300, "EC P-256"))
    broker = fleet.issue(OPERATOR, IssueRequest("alert-broker.example.test", Kind.SERVER, "", 20, "EC P-256"))
    stuck = short_site_certificate(fleet, tmp_path / "sites", "alert-site-stuck")
    old = short_site_certificate(fleet, tmp_path / "sites", "alert-site-renewed")
    time.sleep(8)
    s = fleet.settings  # the site's renewal timer works: step ca renew, the same key, a newer certificate
    crt = tmp_path / "sites" / "alert-site-renewed.crt"
    run_step(
        ["ca", "renew", str(crt), str(crt.with_suffix(".key")), "--force", "--ca-url", s.ca_url, "--root", str(s.root)],
        step_path=s.step_path, timeout=20, step_bin=s.step_bin,
    )  # fmt: skip
    renewed = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    assert renewed.serial_number != old.serial_number
    for cert in (stuck, old, renewed):
        alert_ca.wait_in_journal(cert.serial_number)

    # The SMTP server: STARTTLS with a certificate of our own CA, and a login.
    mail_cert = fleet.issue(OPERATOR, IssueRequest("localhost", Kind.SERVER, "", 30, "EC P-256")).record.path
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(mail_cert, mail_cert.with_suffix(".key"))
    mailbox = Mailbox()
    smtp = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(), tls_context=context, require_starttls=True,
        authenticator=authenticate, auth_require_tls=True,
    )  # fmt: skip
    smtp.start()
    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Receiver.posts.clear()
    config = AlertConfig(
        smtp_host="localhost", smtp_port=smtp.port, smtp_user=USER, smtp_password=PASSWORD,
        smtp_cafile=str(fleet.settings.root), mail_from="pki@example.test", mail_to=("ops@example.test",),
        webhook_url=f"http://127.0.0.1:{receiver.server_address[1]}/hook",
    )  # fmt: skip
    state = tmp_path / "data" / "alerts-state.json"
    try:
        while time.time() < stuck.not_valid_before_utc.timestamp() + 0.76 * 100:  # 75 % of its 100 s (backdated)
            time.sleep(0.5)
        first = Alerts(fleet, config, state).run()
        assert first.failed == {} and first.sent["email"] == first.sent["webhook"]
        [mail] = mailbox.messages
        text = mail
        assert "alert-site-soon expires in 4 day(s)" in text or "alert-site-soon expires in 5 day(s)" in text
        assert f"broker {broker.record.cn} expires in" in text
        assert "site alert-site-stuck has not renewed" in text
        assert "alert-site-renewed has not renewed" not in text and "alert-site-fine" not in text
        [post] = Receiver.posts
        assert post["text"].split() == text.split()  # the same digest (the mail has CRLF line ends)
        assert {e["kind"] for e in post["events"]} >= {"expiry", "renewal"}

        again = Alerts(fleet, config, state).run()  # a new process, the same state: nothing new
        assert again.sent == {} and len(mailbox.messages) == 1 and len(Receiver.posts) == 1

        receiver.shutdown()
        receiver.server_close()
        fleet.issue(OPERATOR, IssueRequest("alert-site-later", Kind.CLIENT, "", 3, "EC P-256"))
        failing = Alerts(fleet, config, state).run()
        assert "webhook" in failing.failed and failing.sent == {"email": 1}
        assert "alert-site-later" in mailbox.messages[-1]
        receiver = ThreadingHTTPServer(("127.0.0.1", receiver.server_address[1]), Receiver)
        threading.Thread(target=receiver.serve_forever, daemon=True).start()
        retried = Alerts(fleet, config, state).run()
        assert retried.sent == {"webhook": 1} and "alert-site-later" in Receiver.posts[-1]["text"]
        assert len(mailbox.messages) == 2  # the mail was not sent twice

        assert Alerts(fleet, config, state).test() == {"email": "ok", "webhook": "ok"}
        assert "Test alert" in mailbox.messages[-1]
        shown = Alerts(fleet, config, state).state()
        assert shown["last_run"]["sent"] == {"webhook": 1} and len(shown["history"]) == 4
        assert state.stat().st_mode & 0o777 == 0o600

        wrong = AlertConfig(**{**config.__dict__, "smtp_password": "not it", "webhook_url": ""})
        assert "535" in Alerts(fleet, wrong, tmp_path / "other-state.json").test()["email"]  # login refused
    finally:
        smtp.stop()
        receiver.shutdown()


def test_the_command_runs_once_and_says_what_it_sent(alert_ca: RunningCA, tmp_path: Path) -> None:
    env = module_env(alert_ca, tmp_path)
    done = subprocess.run([sys.executable, "-m", "pki.alerts", "run"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "no channel" in done.stderr and "condition(s), sent nothing new" in done.stdout


def test_a_broker_reissued_for_fewer_days_is_the_one_watched(alert_ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(alert_ca, tmp_path)
    first = fleet.issue(OPERATOR, IssueRequest("alert-broker-2.example.test", Kind.SERVER, "", 300, "EC P-256"))
    new = fleet.reissue(OPERATOR, first.record.serial, days=5).record  # the old one stays valid, in .replaced
    events = find_events(fleet, AlertConfig(), None, [])
    assert [e.serial for e in events if e.kind == "expiry" and "alert-broker-2" in e.subject] == [new.serial_hex]


def test_secrets_stay_out_of_messages_and_bad_settings_are_named(alert_ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(alert_ca, tmp_path)
    config = AlertConfig(webhook_url=f"http://127.0.0.1:{free_port()}/services/T0/B0/the-token-itself")
    answer = Alerts(fleet, config, tmp_path / "state.json").test()["webhook"]
    assert "Connection refused" in answer and "the-token-itself" not in answer
    url_file = tmp_path / "url"
    url_file.write_text("hooks.example.test/services/the-token-itself")
    with pytest.raises(ValueError, match="must be an http") as refused:
        alert_config({"PKI_ALERT_WEBHOOK_URL_FILE": str(url_file)})
    assert "the-token-itself" not in str(refused.value)
    with pytest.raises(ValueError, match="PKI_ALERT_SMTP_SECURITY"):
        alert_config({"PKI_ALERT_SMTP_SECURITY": "ssl"})
    state = tmp_path / "damaged.json"
    state.write_text('{"sent": {"webh')  # a write cut short
    assert Alerts(fleet, AlertConfig(), state).state() == {}
    assert list(tmp_path.glob("damaged.damaged-*"))  # kept aside, not lost


def test_ca_down_crl_and_lockout_events(alert_ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(alert_ca, tmp_path)
    config = AlertConfig(ca_down_minutes=15, crl_hours=24 * 365)  # any CRL "runs out soon"
    recent, long_ago = time.time() - 60, time.time() - 16 * 60
    kinds = {e.kind for e in find_events(fleet, config, recent, ["192.0.2.9 at 2026-12-01T10:00:00+00:00"])}
    assert "crl" in kinds and "lockout" in kinds and "ca-down" not in kinds  # down for a minute only
    events = find_events(fleet, config, long_ago, [])
    [down] = [e for e in events if e.kind == "ca-down"]
    assert down.key == f"ca-down:{int(long_ago)}"  # one alert per outage, however many runs see it
    alerts = Alerts(fleet, config, tmp_path / "alerts-state.json")
    fleet.audit.record("login-lockout", locked=["192.0.2.7"], address="192.0.2.7")
    assert any(
        "192.0.2.7" in e.subject + e.detail for e in find_events(fleet, config, None, alerts._lockouts(time.time()))
    )
