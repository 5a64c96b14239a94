"""The broker check against real Mosquitto brokers behind HAProxy (TCP passthrough): configured as our
generated configuration says, every check passes; each broken variant fails the checks it must (no client
certificate asked for; no crlfile; a stale CRL; another CA trusted).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from conftest import OPERATOR, REPO, RunningCA, free_port, gui_fleet, started_ca, tool_env
from mqtt import HAProxy, Mosquitto, require_tools
from pki.alerts import AlertConfig, Alerts
from pki.broker_check import BrokerCheck
from pki.bundle import mosquitto_acl, mosquitto_broker_config
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.metrics import render
from pki.model import Kind

REFRESH = REPO / "scripts" / "refresh-crl.sh"
BROKER_CN = "broker-check.example.test"


@pytest.fixture(scope="module")
def check_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    ca = started_ca(tmp_path_factory.mktemp("broker-check-pki"))
    yield ca
    ca.stop()


@pytest.fixture(scope="module")
def fleet_and_files(check_ca: RunningCA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Fleet, Path]:
    """The GUI's side and the broker's certificate folder (ca.crt, its certificate and key)."""
    require_tools()
    base = tmp_path_factory.mktemp("broker-check")
    fleet = gui_fleet(check_ca, base)
    issued = fleet.issue(OPERATOR, IssueRequest(BROKER_CN, Kind.SERVER, "localhost", 30, "EC P-256"))
    certs = base / "broker-certs"
    certs.mkdir()
    shutil.copy(fleet.settings.root, certs / "ca.crt")
    shutil.copy(issued.record.path, certs / f"{BROKER_CN}.crt")
    shutil.copy(issued.record.path.with_suffix(".key"), certs / f"{BROKER_CN}.key")
    return fleet, certs


def fetch_crl(ca: RunningCA, certs: Path, out: Path) -> None:
    done = subprocess.run(
        ["bash", str(REFRESH), "--url", ca.crl_url, "--ca-file", str(certs / "ca.crt"), "--ca-file",
         str(certs / f"{BROKER_CN}.crt"), "--out", str(out)],
        capture_output=True, text=True, timeout=60, env=tool_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def outcomes(
    ca: RunningCA, fleet: Fleet, certs: Path, base: Path, check_folder: Path, *, edit: str = "",
    crl_before_check: bool = False,
) -> dict[int, str]:  # fmt: skip
    """Start a broker from our generated configuration (changed by `edit`), run the check through HAProxy."""
    base.mkdir(parents=True)
    crl, acl = base / "crl.pem", base / "app-pki.acl"
    acl.write_text(mosquitto_acl())
    port = free_port()
    config = mosquitto_broker_config(
        BROKER_CN, cert_dir=str(certs), crl_file=str(crl), acl_file=str(acl), bind="127.0.0.1", port=port
    )
    for line in filter(None, edit.split("|")):
        old, _, new = line.partition("=>")
        config = config.replace(old, new)
    check = BrokerCheck(fleet, check_folder, crl_interval=0)
    if crl_before_check:
        shutil.copy(check_folder.parent / "stale-crl.pem", crl)  # fetched before the canary was revoked
    else:
        check._revoked()  # the revoked canary first, then the broker's CRL refresh has run
        fetch_crl(ca, certs, crl)
    broker = Mosquitto(base, "broker", config, port)
    haproxy = HAProxy(base, port)
    try:
        results = check.run(OPERATOR, f"localhost:{haproxy.port}")
    finally:
        haproxy.stop()
        broker.stop()
    return {r.number: r.outcome for r in results}


def test_a_broker_as_configured_passes_and_each_break_fails_its_check(
    check_ca: RunningCA, fleet_and_files: tuple[Fleet, Path], tmp_path: Path
) -> None:
    fleet, certs = fleet_and_files
    folder = tmp_path / "broker-check"
    # A CRL from before any canary was revoked: what a broker whose refresh stopped still holds.
    folder.mkdir()
    fetch_crl(check_ca, certs, folder.parent / "stale-crl.pem")
    BrokerCheck(fleet, folder)._foreign()  # the foreign CA exists before a broker is told to trust it

    assert outcomes(check_ca, fleet, certs, tmp_path / "good", folder) == dict.fromkeys(range(1, 7), "PASS")
    # No client certificate asked for, anonymous clients let in: nothing about certificates is enforced,
    # so a client without one gets in (2), and so do the foreign (3), revoked (5) and server-only (6) ones.
    open_door = (
        "require_certificate true=>require_certificate false|use_identity_as_username true=>allow_anonymous true"
    )
    assert outcomes(check_ca, fleet, certs, tmp_path / "no-require", folder, edit=open_door) == {
        1: "PASS", 2: "FAIL", 3: "FAIL", 4: "PASS", 5: "FAIL", 6: "FAIL",
    }  # fmt: skip
    assert outcomes(check_ca, fleet, certs, tmp_path / "no-crl", folder, edit="crlfile =>#crlfile ") == {
        1: "PASS", 2: "PASS", 3: "PASS", 4: "PASS", 5: "FAIL", 6: "PASS",
    }  # fmt: skip
    assert outcomes(check_ca, fleet, certs, tmp_path / "stale-crl", folder, crl_before_check=True) == {
        1: "PASS", 2: "PASS", 3: "PASS", 4: "PASS", 5: "FAIL", 6: "PASS",
    }  # fmt: skip
    both = tmp_path / "both-cas.pem"
    both.write_bytes((certs / "ca.crt").read_bytes() + (folder / "foreign-ca.crt").read_bytes())
    # Trusting another CA as well: with a CRL file Mosquitto still refuses that CA's certificates (it has
    # no CRL of theirs), so the variant that lets them in is another CA without a CRL: checks 3 and 5.
    another_ca = f"cafile {certs}/ca.crt=>cafile {both}|crlfile =>#crlfile "
    assert outcomes(check_ca, fleet, certs, tmp_path / "foreign-cafile", folder, edit=another_ca) == {
        1: "PASS", 2: "PASS", 3: "FAIL", 4: "PASS", 5: "FAIL", 6: "PASS",
    }  # fmt: skip
    # The canaries never count among the fleet's certificates.
    assert not any(r.identity.startswith("app-pki-canary-") for r in fleet.table().rows)
    assert '"action": "broker-check"' in fleet.settings.audit_log.read_text()
    # The last results feed the alerts (the last variant failed checks 3 and 5) and the metrics.
    failed = Alerts(fleet, AlertConfig(), folder.parent / "alerts-state.json")._broker_failures()
    assert sorted(e.key.rsplit(":", 1)[1] for e in failed) == ["3", "5"]
    text = render(fleet, {}, BrokerCheck(fleet, folder).last())
    assert text.count("app_pki_broker_check_passed{") == 6
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_replaced_canary_is_revoked(check_ca: RunningCA, fleet_and_files: tuple[Fleet, Path], tmp_path: Path) -> None:
    fleet, _ = fleet_and_files
    check = BrokerCheck(fleet, tmp_path / "broker-check", renew_within=dt.timedelta(days=2))  # one day < two
    first, _ = check._fresh("app-pki-canary-valid", Kind.CLIENT)
    old = x509.load_pem_x509_certificates(first.read_bytes())[0].serial_number
    second, _ = check._fresh("app-pki-canary-valid", Kind.CLIENT)
    new = x509.load_pem_x509_certificates(second.read_bytes())[0].serial_number
    fleet.forget_ca_state()
    revoked = fleet.crl().revoked or frozenset()
    assert new != old and old in revoked and new not in revoked
