"""HTTPS for the GUI (python -m pki.serve, as the container starts it): a certificate from our own CA for
its public names, checked against our root; renewed by itself, the old one revoked; kept across a
restart; the operator's own certificate instead; a CA that is down at start-up waited for.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from playwright.sync_api import expect, sync_playwright

from conftest import OPERATOR, REPO, GuiProcess, RunningCA, gui_fleet, started_ca
from pki.https import GuiCertificate
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.settings import tls_hosts
from pki.validate import InvalidInput


def hosts(name: str) -> str:
    """The GUI's names: its own first (the identity, one per test: they share one CA), then localhost."""
    return f"{name}.example.test,localhost"


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    ca = started_ca(tmp_path_factory.mktemp("https-pki"))
    yield ca
    ca.stop()


def served_certificate(port: int) -> x509.Certificate:
    """The certificate the GUI presents (not verified here: the callers check the chain themselves)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def health_over_https(port: int, root: Path) -> bytes:
    """The health answer over HTTPS to https://localhost, the chain and the name checked against our root."""
    context = ssl.create_default_context(cafile=str(root))
    with urllib.request.urlopen(f"https://localhost:{port}/_stcore/health", context=context, timeout=10) as answer:
        return answer.read()


def test_https_from_our_ca_verifies_against_our_root(tls_ca: RunningCA, tmp_path: Path) -> None:
    gui = GuiProcess(tls_ca, tmp_path, PKI_TLS="ca", PKI_TLS_HOSTS=hosts("gui"))
    try:
        root = tls_ca.gui_dir / "root_ca.crt"
        assert health_over_https(gui.port, root) == b"ok"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://localhost:{gui.port}/_stcore/health", timeout=10)  # system roots only
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP on the port
            urllib.request.urlopen(f"http://127.0.0.1:{gui.port}/_stcore/health", timeout=10)

        served = served_certificate(gui.port)
        names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "gui.example.test"}
        # An ordinary server certificate of the fleet: filed, shown, audited.
        fleet = gui_fleet(tls_ca, tmp_path, PKI_AUDIT_LOG=str(tmp_path / "data" / "audit.log"))
        row = next(r for r in fleet.table().rows if r.record.serial == served.serial_number)
        assert row.record.folder == "gui.example.test" and row.record.kind.value == "server" and row.valid
        assert '"user": "gui-https"' in (tmp_path / "data" / "audit.log").read_text()
        assert oct((tmp_path / "data" / "tls" / "gui.key").stat().st_mode & 0o777) == "0o600"

        with sync_playwright() as playwright:  # a page renders over it (the chain is checked above)
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(f"https://localhost:{gui.port}/")
            expect(page.get_by_role("heading", name="Dashboard")).to_be_visible(timeout=30_000)
            browser.close()
    finally:
        assert gui.stop() == 0

    # Started again, it serves the same certificate: nothing issued twice.
    again = GuiProcess(tls_ca, tmp_path, PKI_TLS="ca", PKI_TLS_HOSTS=hosts("gui"))
    try:
        assert served_certificate(again.port).serial_number == served.serial_number
    finally:
        again.stop()

    # Its data folder and certs/ lost, the CA still knows the valid certificate: the GUI waits, saying how
    # to replace it; once replaced it serves a new one.
    lost = tmp_path / "after-loss"
    gui = GuiProcess(tls_ca, lost, wait=False, PKI_TLS="ca", PKI_TLS_HOSTS=hosts("gui"))
    try:
        deadline = time.monotonic() + 60
        while "python -m pki.https --replace" not in gui.log():
            assert gui.process.poll() is None and time.monotonic() < deadline, gui.log()
            time.sleep(0.3)
        replaced = subprocess.run(
            [sys.executable, "-m", "pki.https", "--replace"], env=gui.env, capture_output=True, text=True, timeout=120
        )
        assert replaced.returncode == 0, replaced.stderr
        assert f"revoked {served.serial_number:X}" in replaced.stdout
        gui.wait_healthy()
        assert served_certificate(gui.port).serial_number != served.serial_number
        assert gui.log().count("already has an active certificate") == 1  # said once, not every retry
    finally:
        gui.stop()


def test_renewed_by_itself_and_the_old_one_revoked(tls_ca: RunningCA, tmp_path: Path) -> None:
    # A one-day certificate due for renewal after 0.01 % of its life (9 s), looked at every second.
    gui = GuiProcess(
        tls_ca, tmp_path, PKI_TLS="ca", PKI_TLS_HOSTS=hosts("renewing"), PKI_TLS_DAYS="1",
        PKI_TLS_RENEW_AFTER="0.0001", PKI_TLS_CHECK_SECONDS="1",
    )  # fmt: skip
    try:
        # On a loaded machine the first renewal may come before this look, and restart the GUI under it.
        deadline = time.monotonic() + 60
        while True:
            gui.wait_healthy()
            try:
                first = served_certificate(gui.port).serial_number
                break
            except OSError:
                assert time.monotonic() < deadline, gui.log()
        deadline = time.monotonic() + 120
        while True:
            try:
                now = served_certificate(gui.port).serial_number
            except OSError:
                now = first  # restarting
            if now != first:
                break
            assert time.monotonic() < deadline, gui.log()
            time.sleep(0.5)
        # The new certificate is due again 9 s later: a further restart may fall between the two looks.
        deadline = time.monotonic() + 60
        while True:
            gui.wait_healthy()
            try:
                answer = health_over_https(gui.port, tls_ca.gui_dir / "root_ca.crt")
                break
            except OSError:
                assert time.monotonic() < deadline, gui.log()
        assert answer == b"ok"
        fleet = gui_fleet(tls_ca, tmp_path)
        deadline = time.monotonic() + 60
        while first not in (fleet.crl().revoked or frozenset()):  # revoked once the new one is served
            assert time.monotonic() < deadline, gui.log()
            fleet.forget_ca_state()
            time.sleep(0.5)
    finally:
        gui.stop()
    assert "restarting the GUI" in gui.log()


def test_the_operators_own_certificate(tls_ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(tls_ca, tmp_path / "elsewhere")
    issued = fleet.issue(OPERATOR, IssueRequest("own.example.test", Kind.SERVER, "localhost", 30, "EC P-256"))
    folder = issued.record.path.parent
    gui = GuiProcess(
        tls_ca, tmp_path, PKI_TLS_CERT_FILE=str(issued.record.path),
        PKI_TLS_KEY_FILE=str(folder / "own.example.test.key"),
    )  # fmt: skip
    try:
        assert served_certificate(gui.port).serial_number == issued.record.serial
        assert health_over_https(gui.port, tls_ca.gui_dir / "root_ca.crt") == b"ok"
        assert not list((tmp_path / "certs").iterdir())  # nothing issued for the GUI
    finally:
        gui.stop()


def test_a_ca_that_is_down_at_start_is_waited_for(tls_ca: RunningCA, tmp_path: Path) -> None:
    tls_ca.stop()
    try:
        gui = GuiProcess(tls_ca, tmp_path, wait=False, PKI_TLS="ca", PKI_TLS_HOSTS=hosts("waiting"))
        deadline = time.monotonic() + 60
        while "cannot be issued or renewed now" not in gui.log():
            assert gui.process.poll() is None and time.monotonic() < deadline, gui.log()
            time.sleep(0.3)
    finally:
        tls_ca.start()
    try:
        gui.wait_healthy()
        assert health_over_https(gui.port, tls_ca.gui_dir / "root_ca.crt") == b"ok"
    finally:
        gui.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PKI_TLS": "yes"}, "PKI_TLS is 'yes'"),
        ({"PKI_TLS": "ca"}, "needs the GUI's host names"),
        ({"PKI_TLS_CERT_FILE": "/nonexistent"}, "set both PKI_TLS_CERT_FILE and PKI_TLS_KEY_FILE"),
    ],
)
def test_wrong_https_settings_stop_with_a_message(tmp_path: Path, env: dict[str, str], message: str) -> None:
    run_env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "streamlit"), "PKI_DATA_DIR": str(tmp_path), **env}
    done = subprocess.run([sys.executable, "-m", "pki.serve"], env=run_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr


def test_serve_refuses_a_certs_folder_it_cannot_write(tls_ca: RunningCA, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    certs.chmod(0o555)
    if os.access(certs, os.W_OK):  # root writes anyway: make it a file's child instead
        certs = tmp_path / "a-file" / "certs"
        (tmp_path / "a-file").write_text("")
    gui = GuiProcess(tls_ca, tmp_path, wait=False, PKI_CERTS_DIR=str(certs))
    assert gui.process.wait(timeout=60) == 2
    assert "is not writable" in gui.log() and "chown" in gui.log()


def test_serve_refuses_to_see_the_cas_secrets(tls_ca: RunningCA, tmp_path: Path) -> None:
    # What an engine that ignores volume.subpath shows the GUI: the whole CA volume at /app/ca-log.
    gui = GuiProcess(tls_ca, tmp_path, wait=False, PKI_CA_LOG=str(tls_ca.steppath / "issued.log"))
    assert gui.process.wait(timeout=60) == 2
    assert "can see the CA's secrets" in gui.log() and "Docker Engine" in gui.log()


def test_the_guis_key_stays_and_mixed_case_names_are_one_certificate(tls_ca: RunningCA, tmp_path: Path) -> None:
    env = {"PKI_TLS": "ca", "PKI_TLS_HOSTS": "GUI-M.Example.test.,LocalHost"}
    fleet = gui_fleet(tls_ca, tmp_path, **env)
    certificate = GuiCertificate(fleet, tls_hosts(env), tmp_path / "tls", days=30)
    first = certificate.ensure()
    assert certificate.ensure().serial == first.serial  # the names as the certificate holds them: no re-issue
    assert certificate.identity == "gui-m.example.test"
    with pytest.raises(InvalidInput, match="GUI's own HTTPS certificate"):
        fleet.bundle(OPERATOR, first.serial or 0)  # an operator cannot take the key and pose as the GUI
    assert certificate.stale(dt.timedelta(0)) == []
