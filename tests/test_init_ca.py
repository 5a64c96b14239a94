"""scripts/init-ca.sh: one idempotent set-up, refusing to half-apply other settings."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import time
from pathlib import Path

from conftest import INIT_CA, RunningCA
from pki.ca import StepCA
from pki.step import run_step


def snapshot(ca: RunningCA) -> dict[str, tuple[str, int]]:
    """Content hash and mode of every file of the CA and the GUI folder (the live database aside)."""
    files = {}
    for top in (ca.steppath, ca.gui_dir):
        for path in sorted(top.rglob("*")):
            if path.is_file() and "db" not in path.relative_to(top).parts:
                files[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return files


def test_second_run_changes_nothing_and_says_so(ca: RunningCA) -> None:
    before = snapshot(ca)
    provisioners_before = StepCA(ca.settings()).provisioners()
    done = ca.run_init()
    assert done.returncode == 0, done.stderr
    assert "already set up with these settings. Nothing changed." in done.stdout
    assert snapshot(ca) == before
    assert StepCA(ca.settings()).provisioners() == provisioners_before


def test_other_settings_are_reported_and_not_applied(ca: RunningCA) -> None:
    before = snapshot(ca)
    done = ca.run_init(PKI_PUBLIC_HOSTS="pki.example.net", PKI_CERT_MAX_DAYS="900")
    assert done.returncode == 3
    assert "+CA_DNS_NAMES=localhost,step-ca,pki.example.net" in done.stderr
    assert "-CERT_MAX_DAYS=730" in done.stderr and "+CERT_MAX_DAYS=900" in done.stderr
    assert "Nothing was changed" in done.stderr
    assert snapshot(ca) == before


def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path, ca: RunningCA) -> None:
    fresh = RunningCA(tmp_path)
    cases = {
        "PKI_CA_ADDRESS": ("nope", "has no port"),
        "PKI_CRL_ADDRESS": (":99999", "no valid port"),
        "PKI_CERT_DEFAULT_DAYS": ("0", "not a positive whole number"),
        "PKI_PUBLIC_CA_URL": ("https://elsewhere.example:9000", "not one of the CA's DNS names"),
        "PKI_CRL_URL": ("https://pki.example/crl", "not like http://"),
    }
    for name, (value, message) in cases.items():
        done = fresh.run_init(**{name: value})
        assert done.returncode == 1, name
        assert message in done.stderr, (name, done.stderr)
    assert not fresh.steppath.exists()


def test_missing_gui_file_is_restored_from_the_ca(ca: RunningCA) -> None:
    root_copy = ca.gui_dir / "root_ca.crt"
    content = root_copy.read_bytes()
    root_copy.unlink()
    done = ca.run_init()
    assert done.returncode == 0, done.stderr
    assert "Restored 1 missing GUI file" in done.stdout
    assert root_copy.read_bytes() == content


def test_first_provisioner_is_the_super_admin_and_its_password_stays_with_the_ca(ca: RunningCA, tmp_path: Path) -> None:
    settings = ca.settings()
    admin_password = ca.steppath / "secrets" / "admin.password"
    out = run_step(
        ["ca", "admin", "list", "--admin-subject", "step", "--admin-provisioner", "admin",
         "--admin-password-file", str(admin_password), "--ca-url", ca.url, "--root", str(settings.root)],
        step_path=tmp_path / "admin-step", timeout=20, step_bin=settings.step_bin,
    )  # fmt: skip
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert rows == [["step", "admin", "(JWK)", "SUPER_ADMIN"]]
    assert admin_password.stat().st_mode & 0o077 == 0


def test_ca_json_has_the_crl_and_the_issued_at_check_off(ca: RunningCA) -> None:
    config = json.loads((ca.steppath / "config" / "ca.json").read_text())
    assert config["authority"]["disableIssuedAtCheck"] is True
    assert config["authority"]["enableAdmin"] is True
    assert config["crl"]["enabled"] is True and config["crl"]["generateOnRevoke"] is True
    assert config["crl"]["idpURL"] == ca.crl_url
    assert config["insecureAddress"] == f"127.0.0.1:{ca.crl_port}"
    assert config["dnsNames"][0] == "localhost"


def test_address_without_colon_is_refused(tmp_path: Path) -> None:
    done = RunningCA(tmp_path).run_init(PKI_CRL_ADDRESS="9080")
    assert done.returncode == 1 and "has no port" in done.stderr
    assert not (tmp_path / "ca").exists()


def test_default_crl_url_and_a_stopped_first_run_leaves_nothing(tmp_path: Path) -> None:
    fresh = RunningCA(tmp_path)
    env = fresh.init_env()
    del env["PKI_CRL_URL"]
    env["PKI_PUBLIC_HOSTS"] = "pki.example.net"
    # Stopped while it sets up: nothing half-made may remain (a later run would refuse it).
    process = subprocess.Popen(
        ["bash", str(INIT_CA)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (fresh.steppath / "config" / "ca.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "removed the partial CA" in stderr
    assert not (fresh.steppath / "config").exists()

    done = subprocess.run(["bash", str(INIT_CA)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = (fresh.gui_dir / "ca-settings.env").read_text()
    assert f"CRL_URL=http://pki.example.net:{fresh.crl_port}/1.0/crl" in record
    assert f"PUBLIC_CA_URL=https://pki.example.net:{fresh.port}" in record
    config = json.loads((fresh.steppath / "config" / "ca.json").read_text())
    assert config["crl"]["idpURL"] == f"http://pki.example.net:{fresh.crl_port}/1.0/crl"
    assert config["dnsNames"] == ["localhost", "step-ca", "pki.example.net"]
