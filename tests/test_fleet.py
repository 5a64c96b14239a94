"""The fleet end to end, on loopback: a site enrolled by token bridges through HAProxy (TCP
passthrough) to a broker with mutual TLS; wrong certificates are refused; a revoked site is cut off
once the broker's CRL is refreshed; renewal keeps the key and moves to a new serial.

The broker is Mosquitto standing in for EMQX, configured with the project's own generated broker
configuration (pki.bundle) and CRL refresh (scripts/refresh-crl.sh).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import OPERATOR, REPO, RunningCA, free_port, gui_fleet, started_ca, tool_env
from mqtt import HAProxy, Mosquitto, Subscriber, publish, require_tools
from pki.bundle import mosquitto_acl, mosquitto_broker_config
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.model import Kind

BROKER_CN = "mqtt.ak-sg.com"
ENROLL = REPO / "scripts" / "enroll-site.sh"
REFRESH = REPO / "scripts" / "refresh-crl.sh"


@dataclass
class BrokerSide:
    base: Path
    ca: RunningCA
    fleet: Fleet
    broker: Mosquitto
    haproxy: HAProxy
    monitor: Subscriber
    cert_dir: Path
    crl_file: Path

    def issue(self, cn: str, kind: Kind = Kind.CLIENT, sans: str = "") -> tuple[Path, Path]:
        issued = self.fleet.issue(OPERATOR, IssueRequest(cn, kind, sans, 30, "EC P-256"))
        return issued.record.path, issued.record.path.with_suffix(".key")

    def refresh_crl(self) -> subprocess.CompletedProcess[str]:
        """The broker's scheduled job: new CRL in place, then restart the broker (drops revoked clients)."""
        return subprocess.run(
            ["bash", str(REFRESH), "--url", self.ca.crl_url, "--ca-file", str(self.cert_dir / "ca.crt"),
             "--ca-file", str(self.cert_dir / f"{BROKER_CN}.crt"), "--out", str(self.crl_file),
             "--reload-cmd", f"kill -HUP $(cat {self.broker.pid_file})", "--restart-cmd", self.broker.restart_command],
            capture_output=True, text=True, timeout=60, env=tool_env(),
        )  # fmt: skip

    def wait_until_monitor_is_back(self) -> None:
        """After a broker restart: a valid client's message reaches the monitor again."""
        crt, key = self.issue(f"control-{free_port()}")
        cn = crt.stem
        tls = ("--cafile", str(self.cert_dir / "ca.crt"), "--cert", str(crt), "--key", str(key), "-i", cn)
        assert self.monitor.wait_for(
            f"sites/{cn}/ping up", publish=lambda: publish(self.haproxy.port, f"sites/{cn}/ping", "up", *tls)
        ), "the monitor did not come back after the broker restart"

    def enroll(self, site: str, *extra: str) -> Site:
        """A site host: enroll-site.sh with a token from the GUI's use-case, then its Mosquitto."""
        enrollment = self.fleet.enroll(OPERATOR, site, hours=2, broker=f"127.0.0.1:{self.haproxy.port}")
        prefix = self.base / site
        prefix.mkdir()
        restart = f"kill $(cat {Mosquitto.pid_file_of(prefix, 'site')})"
        done = subprocess.run(
            ["bash", str(ENROLL), "--site", site, "--ca-url", enrollment.ca_url, "--fingerprint",
             enrollment.fingerprint, "--broker", enrollment.broker, "--token", enrollment.token,
             "--prefix", str(prefix), "--reload-cmd", restart, *extra],
            capture_output=True, text=True, timeout=120, env=tool_env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return self.site_bridge(site, prefix)

    def enroll_by_bundle(self, site: str) -> Site:
        """A site host: the GUI's ZIP bundle (key encrypted) and its passphrase, enroll-site.sh --bundle."""
        record = self.fleet.issue(OPERATOR, IssueRequest(site, Kind.CLIENT, "", 30, "EC P-256")).record
        data, passphrase = self.fleet.bundle(OPERATOR, record.serial)
        prefix = self.base / site
        prefix.mkdir()
        (prefix / f"{site}.zip").write_bytes(data)
        done = subprocess.run(
            ["bash", str(ENROLL), "--bundle", str(prefix / f"{site}.zip"), "--passphrase-file", "-",
             "--broker", f"127.0.0.1:{self.haproxy.port}", "--prefix", str(prefix), "--schedule", "none",
             "--reload-cmd", f"kill $(cat {Mosquitto.pid_file_of(prefix, 'site')})"],
            input=passphrase + "\n", capture_output=True, text=True, timeout=120, env=tool_env(),
            start_new_session=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return self.site_bridge(site, prefix)

    @staticmethod
    def site_bridge(site: str, prefix: Path) -> Site:
        port = free_port()
        config = f"listener {port} 127.0.0.1\nallow_anonymous true\ninclude_dir {prefix}/etc/mosquitto/conf.d\n"
        return Site(site, prefix, Mosquitto(prefix, "site", config, port))


@dataclass
class Site:
    name: str
    prefix: Path
    mosquitto: Mosquitto

    @property
    def crt(self) -> Path:
        return self.prefix / "etc" / "mosquitto" / "certs" / f"{self.name}.crt"

    @property
    def key(self) -> Path:
        return self.prefix / "etc" / "mosquitto" / "certs" / f"{self.name}.key"

    def serial(self) -> int:
        return x509.load_pem_x509_certificates(self.crt.read_bytes())[0].serial_number

    def publish_local(self, topic: str, message: str) -> None:
        publish(self.mosquitto.port, topic, message)


@pytest.fixture(scope="module")
def fleet_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    """A CA of the fleet tests' own: its log (the ledger) holds only this fleet's certificates."""
    ca = started_ca(tmp_path_factory.mktemp("fleet-pki"))
    yield ca
    ca.stop()


@pytest.fixture(scope="module")
def broker_side(fleet_ca: RunningCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerSide]:
    require_tools()
    running_ca = fleet_ca
    base = tmp_path_factory.mktemp("fleet")
    fleet = gui_fleet(running_ca, base)
    settings = fleet.settings
    issued = fleet.issue(OPERATOR, IssueRequest(BROKER_CN, Kind.SERVER, "127.0.0.1", 90, "EC P-256"))
    cert_dir = base / "broker" / "certs"
    cert_dir.mkdir(parents=True)
    shutil.copy(settings.root, cert_dir / "ca.crt")
    shutil.copy(issued.record.path, cert_dir / f"{BROKER_CN}.crt")
    shutil.copy(issued.record.path.with_suffix(".key"), cert_dir / f"{BROKER_CN}.key")
    crl_file = base / "broker" / "crl.pem"
    acl_file = base / "broker" / "app-pki.acl"
    acl_file.write_text(mosquitto_acl(readers=("monitor",)))
    port = free_port()
    config = mosquitto_broker_config(
        BROKER_CN, cert_dir=str(cert_dir), crl_file=str(crl_file), acl_file=str(acl_file), bind="127.0.0.1", port=port
    )
    side = BrokerSide(base, running_ca, fleet, None, None, None, cert_dir, crl_file)  # type: ignore[arg-type]
    # Mosquitto refuses to start without its crlfile: fetch it first, without a broker to reload.
    fetched = subprocess.run(
        ["bash", str(REFRESH), "--url", running_ca.crl_url, "--ca-file", str(cert_dir / "ca.crt"),
         "--ca-file", str(cert_dir / f"{BROKER_CN}.crt"), "--out", str(crl_file)],
        capture_output=True, text=True, timeout=60, env=tool_env(),
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    side.broker = Mosquitto(base / "broker", "broker", config, port)
    side.haproxy = HAProxy(base, port)
    monitor_crt, monitor_key = side.issue("monitor")
    side.monitor = Subscriber(base, port, cert_dir / "ca.crt", monitor_crt, monitor_key, "sites/#")
    yield side
    side.monitor.stop()
    side.haproxy.stop()
    side.broker.stop()


@pytest.fixture
def site_factory(broker_side: BrokerSide) -> Iterator[list[Site]]:
    sites: list[Site] = []
    yield sites
    for site in sites:
        site.mosquitto.stop()


def test_site_enrolled_by_token_delivers_through_haproxy_and_stays_in_its_prefix(
    broker_side: BrokerSide, site_factory: list[Site]
) -> None:
    site = broker_side.enroll("site-601")
    site_factory.append(site)
    assert not any(p.name == f"{site.name}.key" for p in broker_side.base.glob("certs/*/*"))  # key stayed on site
    arrived = broker_side.monitor.wait_for(
        "sites/site-601/telemetry/temp 21.5", publish=lambda: site.publish_local("telemetry/temp", "21.5")
    )
    assert arrived, broker_side.broker.log_text()[-3000:]
    assert "New client connected" in broker_side.broker.log_text() and "site-601" in broker_side.broker.log_text()

    # With its own certificate straight at the broker, the site may write only under sites/site-601/.
    tls = ("--cafile", str(broker_side.cert_dir / "ca.crt"), "--cert", str(site.crt), "--key", str(site.key))
    assert publish(broker_side.haproxy.port, "sites/site-602/spoofed", "x", *tls, "-i", "probe-601").returncode == 0
    assert publish(broker_side.haproxy.port, "sites/site-601/own", "ok", *tls, "-i", "probe-601").returncode == 0
    assert broker_side.monitor.wait_for("sites/site-601/own ok")
    assert not any("spoofed" in line for line in broker_side.monitor.lines())
    # The ledger knows the site's certificate although its key never came here.
    broker_side.ca.wait_in_journal(site.serial())
    assert site.serial() in {r.serial for r in broker_side.fleet.inventory.of_identity("site-601")}


def test_site_installed_from_an_encrypted_bundle_delivers_through_haproxy(
    broker_side: BrokerSide, site_factory: list[Site]
) -> None:
    site = broker_side.enroll_by_bundle("site-607")
    site_factory.append(site)
    assert not site.key.read_bytes().startswith(b"-----BEGIN ENCRYPTED")  # Mosquitto reads it as it is
    arrived = broker_side.monitor.wait_for(
        "sites/site-607/telemetry/temp 19.0", publish=lambda: site.publish_local("telemetry/temp", "19.0")
    )
    assert arrived, broker_side.broker.log_text()[-3000:]


def rogue_client(base: Path) -> tuple[Path, Path]:
    """A client certificate for site-601 from a CA the broker never heard of."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site-601")])
    now = dt.datetime.now(dt.UTC)
    rogue = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rogue CA")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(rogue)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (base / "rogue.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (base / "rogue.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return base / "rogue.crt", base / "rogue.key"


def test_wrong_certificates_are_refused(broker_side: BrokerSide, tmp_path: Path) -> None:
    ca_file = str(broker_side.cert_dir / "ca.crt")
    port = broker_side.haproxy.port

    refused = publish(port, "sites/x/y", "m", "--cafile", ca_file)
    assert refused.returncode != 0, "a client with no certificate got in"

    rogue_crt, rogue_key = rogue_client(tmp_path)
    refused = publish(
        port, "sites/site-601/y", "m", "--cafile", ca_file, "--cert", str(rogue_crt), "--key", str(rogue_key)
    )
    assert refused.returncode != 0, "a certificate from another CA got in"

    server_crt, server_key = broker_side.issue("site-609-as-server", Kind.SERVER)
    refused = publish(port, "sites/x/y", "m", "--cafile", ca_file, "--cert", str(server_crt), "--key", str(server_key))
    assert refused.returncode != 0, "a serverAuth-only certificate was accepted as a client certificate"
    # Mosquitto logs only "certificate verify failed"; the reason is the purpose (EKU), as OpenSSL says:
    purpose = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", ca_file,
         "-untrusted", str(server_crt), str(server_crt)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "unsuitable certificate purpose" in purpose.stdout + purpose.stderr

    # A broker that presents a CLIENT certificate, with exactly the broker's names: only the EKU is wrong.
    fake_crt, fake_key = broker_side.issue("mqtt-fake", Kind.CLIENT, sans=f"{BROKER_CN}\n127.0.0.1")
    fake_dir = tmp_path / "fake-broker"
    fake_dir.mkdir()
    shutil.copy(ca_file, fake_dir / "ca.crt")
    shutil.copy(fake_crt, fake_dir / f"{BROKER_CN}.crt")
    shutil.copy(fake_key, fake_dir / f"{BROKER_CN}.key")
    (fake_dir / "acl").write_text(mosquitto_acl())
    fake_port = free_port()
    fake = Mosquitto(
        fake_dir, "fake", mosquitto_broker_config(
            BROKER_CN, cert_dir=str(fake_dir), crl_file=str(broker_side.crl_file), acl_file=str(fake_dir / "acl"),
            bind="127.0.0.1", port=fake_port,
        ), fake_port,
    )  # fmt: skip
    try:
        monitor_crt, monitor_key = broker_side.issue("monitor-2")
        refused = publish(
            fake_port, "sites/x/y", "m", "--cafile", ca_file, "--cert", str(monitor_crt), "--key", str(monitor_key)
        )
        assert refused.returncode != 0, "a broker with a clientAuth-only certificate was trusted"
    finally:
        fake.stop()


def test_revoked_site_delivers_nothing_more_and_cannot_reconnect(
    broker_side: BrokerSide, site_factory: list[Site]
) -> None:
    site = broker_side.enroll("site-603")
    site_factory.append(site)
    assert broker_side.monitor.wait_for("sites/site-603/t before", publish=lambda: site.publish_local("t", "before")), (
        broker_side.broker.log_text()[-3000:]
    )

    revoked = broker_side.fleet.revoke(OPERATOR, "site-603", reason_code=1, confirmation="site-603")
    assert revoked.serials == [site.serial()]
    refreshed = broker_side.refresh_crl()
    assert refreshed.returncode == 0, refreshed.stderr
    assert "Replaced" in refreshed.stdout
    broker_side.wait_until_monitor_is_back()

    for _ in range(12):  # six seconds of trying
        site.publish_local("t", "after")
        time.sleep(0.5)
    assert not any(line.endswith(" after") for line in broker_side.monitor.lines())
    # The bridge keeps trying and the broker refuses each handshake (Mosquitto just says "verify failed");
    # the reason is the CRL it loaded, as OpenSSL shows with the same files:
    log = broker_side.broker.log_text()
    assert log.count("certificate verify failed") >= 2, log[-3000:]
    reason = subprocess.run(
        ["openssl", "verify", "-crl_check", "-CRLfile", str(broker_side.crl_file),
         "-CAfile", str(broker_side.cert_dir / "ca.crt"), "-untrusted", str(site.crt), str(site.crt)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "certificate revoked" in reason.stdout + reason.stderr


def test_renewal_keeps_the_key_moves_the_serial_and_a_revoked_site_cannot_renew(
    broker_side: BrokerSide, site_factory: list[Site]
) -> None:
    # "Renew when less than a year and a day is left": due at once, so the timer's command renews now.
    site = broker_side.enroll("site-604", "--renew-before", "8784h")
    site_factory.append(site)
    assert broker_side.monitor.wait_for("sites/site-604/t v1", publish=lambda: site.publish_local("t", "v1"))
    unit = (site.prefix / "etc" / "systemd" / "system" / "app-pki-renew.service").read_text()
    exec_start = re.search(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    assert exec_start
    old_cert = x509.load_pem_x509_certificates(site.crt.read_bytes())[0]
    old_pid = site.mosquitto.current_pid()
    time.sleep(1.1)  # a later expiry needs a later second

    renewed = subprocess.run(["sh", "-c", exec_start[1]], capture_output=True, text=True, timeout=60, env=tool_env())
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    new_cert = x509.load_pem_x509_certificates(site.crt.read_bytes())[0]
    assert new_cert.not_valid_after_utc > old_cert.not_valid_after_utc
    assert new_cert.serial_number != old_cert.serial_number
    assert new_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == old_cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    # The renewal restarted the bridge (its reload command). The broker now sees the NEW serial: with
    # the old one revoked and on the broker's CRL, messages still arrive.
    deadline = time.monotonic() + 20
    while site.mosquitto.current_pid() in ("", old_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert site.mosquitto.current_pid() not in ("", old_pid), "the bridge was not reloaded after renewal"
    broker_side.fleet.ca.revoke(old_cert.serial_number, 4)
    assert broker_side.refresh_crl().returncode == 0
    broker_side.wait_until_monitor_is_back()
    assert broker_side.monitor.wait_for("sites/site-604/t v2", publish=lambda: site.publish_local("t", "v2")), (
        broker_side.broker.log_text()[-3000:]
    )

    broker_side.fleet.revoke(OPERATOR, "site-604", reason_code=5, confirmation="site-604")
    before = site.crt.read_bytes()
    refused = subprocess.run(["sh", "-c", exec_start[1]], capture_output=True, text=True, timeout=60, env=tool_env())
    assert refused.returncode != 0
    assert site.crt.read_bytes() == before
