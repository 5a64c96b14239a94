"""The backup and restore drill on a running make-run style CA (scripts/backup.sh, scripts/restore.sh):
issue, revoke, back up while the CA runs, issue more, destroy everything, restore, and check what the
restored CA and GUI know against what they knew at the backup.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from conftest import OPERATOR, REPO, TOOLS, RunningCA, gui_fleet, started_ca
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.model import Kind

BACKUP, RESTORE = REPO / "scripts" / "backup.sh", REPO / "scripts" / "restore.sh"


def age_key(path: Path) -> str:
    """A new age identity in `path`; returns its public key."""
    subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, check=True)
    return subprocess.run(["age-keygen", "-y", str(path)], capture_output=True, text=True, check=True).stdout.strip()


def crl_number(fleet: Fleet) -> int:
    fleet.forget_ca_state()
    info = fleet.crl().info
    assert info is not None
    crl = x509.load_der_x509_crl(info.der)
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def revoked(fleet: Fleet) -> frozenset[int]:
    fleet.forget_ca_state()
    return fleet.crl().revoked or frozenset()


def wait_healthy(fleet: Fleet) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            fleet.ca.health(timeout=2)
            return
        except Exception:
            assert time.monotonic() < deadline, "the CA did not come back after the backup"
            time.sleep(0.2)


def issue(fleet: Fleet, cn: str) -> int:
    return fleet.issue(OPERATOR, IssueRequest(cn, Kind.CLIENT, "", 30, "EC P-256")).record.serial


def test_backup_restore_drill(tmp_path: Path) -> None:
    if shutil.which("age") is None:
        pytest.fail("age is missing: apt-get install age (scripts/test-packages.sh installs it)")
    data, certs = tmp_path / "data", tmp_path / "certs"
    ca = started_ca(data)  # STEPPATH data/ca, exported files data/gui, journal data/issued.log: make run's layout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEP", "PKI_"))}
    env.update(PATH=f"{TOOLS}{os.pathsep}{env['PATH']}", PKI_DATA_DIR=str(data), PKI_CERTS_DIR=str(certs))
    own = {"PKI_CERTS_DIR": str(certs)}
    try:
        fleet = gui_fleet(ca, data / "gui-data", **own)
        site_a, site_b = issue(fleet, "drill-a"), issue(fleet, "drill-b")
        fleet.revoke(OPERATOR, "drill-b", reason_code=1, confirmation="drill-b")
        assert site_b in revoked(fleet)
        number_at_backup = crl_number(fleet)
        inventory_at_backup = {r.record.serial for r in fleet.table().rows}
        root = (data / "gui" / "root_ca.crt").read_bytes()

        public = age_key(tmp_path / "backup.key")
        made = subprocess.run(
            ["bash", str(BACKUP), "--recipient", public, "--out", str(tmp_path / "pki.backup")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert (tmp_path / "pki.backup").stat().st_mode & 0o777 == 0o600
        assert b"BEGIN" not in (tmp_path / "pki.backup").read_bytes()  # no key or certificate in clear
        assert not (data / "ca" / ".paused").exists()
        wait_healthy(fleet)  # the CA was paused for the copy and starts again by itself
        site_c = issue(fleet, "drill-c")  # one the backup never saw
        ca.wait_in_journal(site_c)
    finally:
        ca.stop()

    shutil.rmtree(data)
    shutil.rmtree(certs)
    restore = ["bash", str(RESTORE), "--identity", str(tmp_path / "backup.key"), str(tmp_path / "pki.backup")]
    wrong = tmp_path / "other.key"
    age_key(wrong)
    refused = subprocess.run([*restore[:3], str(wrong), restore[4]], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "cannot decrypt" in refused.stderr and not data.exists()
    done = subprocess.run(restore, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    again = subprocess.run(restore, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "holds a CA: give --force" in again.stderr  # a live CA is not overwritten

    ca.start()
    try:
        fleet = gui_fleet(ca, data / "gui-data", **own)
        assert (data / "gui" / "root_ca.crt").read_bytes() == root
        verified = subprocess.run(
            [str(TOOLS / "step"), "certificate", "verify", str(certs / "drill-a" / "drill-a.crt"),
             "--roots", str(data / "gui" / "root_ca.crt")], capture_output=True, text=True,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stderr
        assert site_b in revoked(fleet) and site_a not in revoked(fleet)
        assert {r.record.serial for r in fleet.table().rows} == inventory_at_backup  # the GUI shows the same
        site_d = issue(fleet, "drill-d")
        assert site_d not in {site_a, site_b, site_c}
        by_serial = subprocess.run(
            [sys.executable, "-m", "pki.revoke", f"{site_c:X}"],
            env=env | {"PYTHONPATH": str(REPO / "streamlit")} | ca_settings_env(ca, data / "gui-data", certs),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert by_serial.returncode == 0, by_serial.stderr
        assert "unknown here): revoked" in by_serial.stdout
        assert site_c in revoked(fleet)  # a certificate the restored CA never saw, revoked by its serial
        assert crl_number(fleet) > number_at_backup
    finally:
        ca.stop()


def ca_settings_env(ca: RunningCA, base: Path, certs: Path) -> dict[str, str]:
    """What the GUI's environment would hold (as gui_fleet configures its Fleet)."""
    return {
        "STEP_CA_URL": ca.url,
        "PKI_GUI_DIR": str(ca.gui_dir),
        "PKI_CERTS_DIR": str(certs),
        "PKI_AUDIT_LOG": str(base / "audit.log"),
        "PKI_LEDGER_DIR": str(base / "ledger"),
        "PKI_STEPPATH": str(base / "gui-step"),
        "PKI_STEP_BIN": str(TOOLS / "step"),
        "PKI_CA_LOG": str(ca.journal),
    }
