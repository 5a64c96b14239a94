"""pki.step and pki.ca against a real step-ca set up by scripts/init-ca.sh."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

import pki.step
from conftest import RunningCA, free_port
from pki.ca import StepCA
from pki.keys import new_private_key, private_key_pem, signing_request
from pki.model import Kind
from pki.step import CARefused, CAUnreachable, StepError, StepNotFound, StepTimeout, run_step

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH


def load_chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def crl_url_of(cert: x509.Certificate) -> str:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return points[0].full_name[0].value


def openssl_verify(ca: RunningCA, leaf: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca.gui_dir / "root_ca.crt"),
         "-untrusted", str(ca.gui_dir / "intermediate_ca.crt"), *extra, str(leaf)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def issue(
    step_ca: StepCA,
    tmp_path: Path,
    cn: str,
    kind: Kind,
    sans: list[str] | None = None,
    days: int = 30,
    key_type: str = "EC P-256",
) -> x509.Certificate:
    """A key made here, a request signed by the CA; tmp_path/{cn}.crt and .key for the checks."""
    key = new_private_key(key_type)
    chain = step_ca.sign(signing_request(cn, sans or [], key), kind, days=days)
    (tmp_path / f"{cn}.crt").write_text(chain)
    (tmp_path / f"{cn}.key").write_bytes(private_key_pem(key))
    return load_chain(tmp_path / f"{cn}.crt")[0]


def test_health_ok(step_ca: StepCA) -> None:
    step_ca.health()


def test_stopped_ca_is_unreachable_within_the_timeout(ca: RunningCA) -> None:
    # Nothing listens on this port: exactly what a stopped CA looks like to the GUI.
    down = StepCA(ca.settings(STEP_CA_URL=f"https://localhost:{free_port()}", PKI_STEP_TIMEOUT="10"))
    started = time.monotonic()
    with pytest.raises(CAUnreachable) as err:
        down.health()
    assert time.monotonic() - started < 10
    assert "cannot be reached" in str(err.value)
    assert "connection refused" in err.value.stderr


def test_stopped_session_ca_is_unreachable(ca: RunningCA) -> None:
    ca.stop()
    try:
        with pytest.raises(CAUnreachable):
            StepCA(ca.settings(PKI_STEP_TIMEOUT="10")).health()
    finally:
        ca.start()


def test_hung_ca_times_out_instead_of_hanging(ca: RunningCA) -> None:
    pid = ca.step_ca_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises((StepTimeout, CAUnreachable)) as err:
            StepCA(ca.settings(PKI_STEP_TIMEOUT="2")).health()
        assert time.monotonic() - started < 10
        assert ca.url in str(err.value)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_missing_step_binary_is_a_typed_error(ca: RunningCA) -> None:
    with pytest.raises(StepNotFound) as err:
        StepCA(ca.settings(PKI_STEP_BIN="/nonexistent/step")).health()
    assert "scripts/install-step.sh" in str(err.value)


def test_step_env_is_cleaned_of_step_variables(ca: RunningCA, monkeypatch: pytest.MonkeyPatch) -> None:
    # step reads every flag from STEP_<FLAG> too: a stray STEP_CA_URL would redirect calls that omit it.
    monkeypatch.setenv("STEP_CA_URL", f"https://localhost:{free_port()}")
    monkeypatch.setenv("STEP_PROVISIONER", "admin")
    monkeypatch.setenv("STEPDEBUG", "1")
    seen: list[dict[str, str]] = []
    real_run = subprocess.run

    def recording_run(*args, **kwargs):
        seen.append(kwargs["env"])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(pki.step.subprocess, "run", recording_run)
    StepCA(ca.settings()).health()
    assert seen, "run_step did not run step"
    step_vars = {k for k in seen[0] if k.startswith("STEP")}
    assert step_vars == {"STEPPATH"}
    assert seen[0]["STEPPATH"] == str(ca.base / "gui-step")


def test_cn_step_from_a_device_provisioner_cannot_use_the_admin_api(
    step_ca: StepCA, ca: RunningCA, tmp_path: Path
) -> None:
    # "step" is the super-admin's subject; a device certificate with that CN must still not be an admin.
    issue(step_ca, tmp_path, "step", Kind.CLIENT)
    settings = ca.settings()
    with pytest.raises(CARefused):
        run_step(
            ["ca", "admin", "list", "--admin-cert", str(tmp_path / "step.crt"),
             "--admin-key", str(tmp_path / "step.key"), "--ca-url", ca.url, "--root", str(settings.root)],
            step_path=tmp_path / "admin-step", timeout=20, step_bin=settings.step_bin,
        )  # fmt: skip


def test_client_certificate_has_client_auth_only(step_ca: StepCA, ca: RunningCA, tmp_path: Path) -> None:
    cert = issue(step_ca, tmp_path, "site-101", Kind.CLIENT, sans=["site-101", "10.0.60.7"], days=90)
    assert ekus(cert) == [CLIENT_AUTH]
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "site-101"
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert sans.get_values_for_type(x509.DNSName) == ["site-101"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.60.7")]
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=90) - dt.timedelta(minutes=5) < lifetime <= dt.timedelta(days=90, minutes=1)
    assert crl_url_of(cert) == ca.crl_url
    assert openssl_verify(ca, tmp_path / "site-101.crt").returncode == 0
    assert len(load_chain(tmp_path / "site-101.crt")) == 2  # leaf + intermediate


def test_a_request_without_sans_gets_its_cn_as_the_one_dns_san(step_ca: StepCA, tmp_path: Path) -> None:
    cert = issue(step_ca, tmp_path, "site-102", Kind.CLIENT)
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert sans.get_values_for_type(x509.DNSName) == ["site-102"]


def test_server_certificate_has_server_auth_only(step_ca: StepCA, ca: RunningCA, tmp_path: Path) -> None:
    cert = issue(
        step_ca, tmp_path, "mqtt.ak-sg.com", Kind.SERVER,
        sans=["mqtt.ak-sg.com", "10.0.80.50"], days=365, key_type="RSA 2048",
    )  # fmt: skip
    assert ekus(cert) == [SERVER_AUTH]
    sans = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert sans.get_values_for_type(x509.DNSName) == ["mqtt.ak-sg.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.80.50")]
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]
    assert openssl_verify(ca, tmp_path / "mqtt.ak-sg.com.crt").returncode == 0
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365, minutes=1)


def test_the_maximum_validity_is_allowed(step_ca: StepCA, tmp_path: Path) -> None:
    cert = issue(step_ca, tmp_path, "site-max", Kind.CLIENT, days=730)
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=729)


def test_validity_above_the_maximum_is_refused_with_the_ca_reason(step_ca: StepCA, tmp_path: Path) -> None:
    with pytest.raises(CARefused) as err:
        issue(step_ca, tmp_path, "site-too-long", Kind.CLIENT, days=731)
    assert "more than the authorized maximum" in str(err.value)
    assert not (tmp_path / "site-too-long.crt").exists()


def test_revoke_by_serial_lands_in_the_crl_at_the_certificates_url(
    step_ca: StepCA, ca: RunningCA, tmp_path: Path
) -> None:
    revoked = issue(step_ca, tmp_path, "site-revoked", Kind.CLIENT)
    server = issue(step_ca, tmp_path, "broker-revoked", Kind.SERVER, sans=["broker-revoked"])
    valid = issue(step_ca, tmp_path, "site-valid", Kind.CLIENT)

    step_ca.revoke(revoked.serial_number, 1, kind=Kind.CLIENT)
    step_ca.revoke(server.serial_number, 5, kind=Kind.SERVER)  # no clientAuth, no key needed

    url = crl_url_of(valid)
    assert url == ca.crl_url
    with urllib.request.urlopen(f"{url}?pem", timeout=10) as resp:  # noqa: S310 (loopback test CA)
        pem = resp.read()
    crl = x509.load_pem_x509_crl(pem)
    revoked_serials = {entry.serial_number for entry in crl}
    assert revoked.serial_number in revoked_serials
    assert server.serial_number in revoked_serials
    assert valid.serial_number not in revoked_serials
    assert (
        crl.get_revoked_certificate_by_serial_number(revoked.serial_number)
        .extensions.get_extension_for_class(x509.CRLReason)
        .value.reason
        == x509.ReasonFlags.key_compromise
    )
    idp = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    assert idp.full_name[0].value == url  # the CRL's scope is the URL in the certificates

    crl_file = tmp_path / "crl.pem"
    crl_file.write_bytes(pem)
    refused = openssl_verify(ca, tmp_path / "site-revoked.crt", "-crl_check", "-CRLfile", str(crl_file))
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl_verify(ca, tmp_path / "site-valid.crt", "-crl_check", "-CRLfile", str(crl_file))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

    # The same CRL through the CA's TLS API, as the GUI reads it.
    api_serials = {entry.serial_number for entry in step_ca.fetch_crl()}
    assert revoked.serial_number in api_serials


def test_revoking_twice_is_refused_with_a_reason(step_ca: StepCA, tmp_path: Path) -> None:
    cert = issue(step_ca, tmp_path, "site-twice", Kind.CLIENT)
    step_ca.revoke(cert.serial_number, 0)
    with pytest.raises(CARefused) as err:
        step_ca.revoke(cert.serial_number, 0)
    assert "already revoked" in str(err.value)


def test_one_time_token_works_once(step_ca: StepCA, ca: RunningCA, tmp_path: Path) -> None:
    token = step_ca.enrollment_token("site-token", dt.timedelta(hours=1))
    settings = ca.settings()

    def use_token() -> str:
        return run_step(
            ["ca", "certificate", "site-token", str(tmp_path / "t.crt"), str(tmp_path / "t.key"),
             "--token", token, "--force", "--ca-url", ca.url, "--root", str(settings.root)],
            step_path=tmp_path / "site-step", timeout=20, step_bin=settings.step_bin, ca_url=ca.url,
        )  # fmt: skip

    use_token()
    assert ekus(load_chain(tmp_path / "t.crt")[0]) == [CLIENT_AUTH]
    with pytest.raises(CARefused):
        use_token()


def test_token_minted_before_a_restart_still_works(step_ca: StepCA, ca: RunningCA, tmp_path: Path) -> None:
    token = step_ca.enrollment_token("site-restart", dt.timedelta(hours=1))
    ca.restart()
    settings = ca.settings()
    run_step(
        ["ca", "certificate", "site-restart", str(tmp_path / "r.crt"), str(tmp_path / "r.key"),
         "--token", token, "--force", "--ca-url", ca.url, "--root", str(settings.root)],
        step_path=tmp_path / "site-step", timeout=20, step_bin=settings.step_bin, ca_url=ca.url,
    )  # fmt: skip
    assert load_chain(tmp_path / "r.crt")[0].subject.rfc4514_string() == "CN=site-restart"


def test_gui_password_files_cannot_use_the_admin_api(ca: RunningCA, tmp_path: Path) -> None:
    settings = ca.settings()
    for provisioner in (settings.client_provisioner, settings.server_provisioner):
        with pytest.raises(StepError) as err:
            run_step(
                ["ca", "provisioner", "add", "intruder", "--type", "JWK", "--create",
                 "--password-file", str(settings.password_file(provisioner)),
                 "--admin-subject", "step", "--admin-provisioner", provisioner,
                 "--admin-password-file", str(settings.password_file(provisioner)),
                 "--ca-url", ca.url, "--root", str(settings.root)],
                step_path=tmp_path / "admin-step", timeout=20, step_bin=settings.step_bin,
            )  # fmt: skip
        # iot-devices: no admin is bound to it; iot-servers: its serverAuth-only certificate cannot even
        # authenticate. Either way the admin API answers 401.
        assert isinstance(err.value, CARefused)
        assert "adminHandler.authorizeToken" in err.value.stderr
    names = [p.name for p in StepCA(settings).provisioners()]
    assert "intruder" not in names


def test_provisioners_and_their_lifetimes(step_ca: StepCA) -> None:
    by_name = {p.name: p for p in step_ca.provisioners()}
    assert set(by_name) == {"admin", "iot-devices", "iot-servers"}
    for name in ("iot-devices", "iot-servers"):
        assert by_name[name].type == "JWK"
        assert by_name[name].max_days == 730
        assert by_name[name].default_days == 365


def test_root_fingerprint_matches_the_root_file(step_ca: StepCA, ca: RunningCA) -> None:
    from cryptography.hazmat.primitives import hashes

    root = x509.load_pem_x509_certificate((ca.gui_dir / "root_ca.crt").read_bytes())
    assert step_ca.root_fingerprint() == root.fingerprint(hashes.SHA256()).hex()


def test_gui_folder_holds_no_ca_key_or_admin_password(ca: RunningCA) -> None:
    names = sorted(p.name for p in ca.gui_dir.iterdir())
    assert names == [
        "ca-settings.env", "intermediate_ca.crt", "iot-devices.password", "iot-servers.password", "root_ca.crt",
    ]  # fmt: skip
    admin_password = (ca.steppath / "secrets" / "admin.password").read_bytes()
    ca_password = (ca.steppath / "secrets" / "password").read_bytes()
    for path in ca.gui_dir.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
        content = path.read_bytes()
        assert admin_password not in content and ca_password not in content
        if path.suffix == ".crt":
            with pytest.raises(ValueError):
                serialization.load_pem_private_key(content, password=None)
    assert os.stat(ca.steppath / "secrets" / "password").st_mode & 0o077 == 0
