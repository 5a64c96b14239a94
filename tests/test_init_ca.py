"""scripts/init-ca.sh: one idempotent set-up, refusing to half-apply other settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conftest import RunningCA
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
        "PKI_CA_ADDRESS": ("nope", "no valid port"),
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
