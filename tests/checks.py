"""Checks and fixtures shared by the tests: what a downloaded bundle must be, expired certificates."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import time
import zipfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import RunningCA
from pki.settings import Settings
from pki.step import run_step


def check_bundle(data: bytes, cn: str, into: Path, passphrase: str) -> None:
    """The ZIP a GUI user downloads: the certificate files and README.txt, with enroll-site.sh for a site or
    the broker's Mosquitto files and refresh-crl.sh for a broker; the chain verifies against ca.crt, the key
    is encrypted (the ZIP alone gives nothing usable) and, with the passphrase, matches the certificate."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    files = ["ca.crt", f"{cn}.crt", f"{cn}.key", "README.txt"]
    server = "app-pki.conf" in archive.namelist()
    files += ["app-pki.conf", "app-pki.acl", "refresh-crl.sh", "install-broker.sh"] if server else ["enroll-site.sh"]
    assert sorted(archive.namelist()) == sorted(files)
    for script in ("refresh-crl.sh", "install-broker.sh", "enroll-site.sh"):
        if script in files:
            assert (archive.getinfo(script).external_attr >> 16) & 0o777 == 0o755
    assert (archive.getinfo(f"{cn}.key").external_attr >> 16) & 0o777 == 0o600
    into.mkdir(parents=True, exist_ok=True)
    archive.extractall(into)
    chain = x509.load_pem_x509_certificates((into / f"{cn}.crt").read_bytes())
    (into / "intermediate.pem").write_bytes(chain[1].public_bytes(serialization.Encoding.PEM))
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(into / "ca.crt"), "-untrusted", str(into / "intermediate.pem"),
         str(into / f"{cn}.crt")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    encrypted = (into / f"{cn}.key").read_bytes()
    assert encrypted.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    try:
        serialization.load_pem_private_key(encrypted, password=None)
        raise AssertionError("the key in the bundle opens without its passphrase")
    except TypeError:
        pass  # "Password was not given but private key is encrypted"
    key = serialization.load_pem_private_key(encrypted, password=passphrase.encode())
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == chain[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def expired_certificates(ca: RunningCA, places: list[tuple[Path, str]]) -> list[x509.Certificate]:
    """For each (certs_dir, identity): a certificate of the real CA, filed as certs_dir/identity/ with its
    key, that has expired. They are issued with the CA's shortest lifetime, then waited out together."""
    settings = ca.settings()
    issued = []
    for certs_dir, identity in places:
        folder = certs_dir / identity
        folder.mkdir(parents=True, mode=0o700)
        crt, key = folder / f"{identity}.crt", folder / f"{identity}.key"
        run_step(
            ["ca", "certificate", identity, str(crt), str(key), "--provisioner", settings.client_provisioner,
             "--provisioner-password-file", str(settings.password_file(settings.client_provisioner)),
             "--not-after", "11s", "--force", "--ca-url", settings.ca_url, "--root", str(settings.root)],
            step_path=settings.step_path, timeout=20, step_bin=settings.step_bin,
        )  # fmt: skip
        issued.append(x509.load_pem_x509_certificates(crt.read_bytes())[0])
    while any(cert.not_valid_after_utc >= dt.datetime.now(dt.UTC) for cert in issued):
        time.sleep(0.5)
    return issued


def expired_certificate(ca: RunningCA, certs_dir: Path, identity: str) -> x509.Certificate:
    return expired_certificates(ca, [(certs_dir, identity)])[0]


def enrol_with_token(settings: Settings, device: Path, token: str, cn: str) -> int:
    """What a site does with its token: its own key in `device`, its certificate (the token in
    STEP_TOKEN, never an argument); returns the certificate's serial."""
    device.mkdir()
    run_step(
        ["ca", "certificate", cn, str(device / "c.crt"), str(device / "c.key"),
         "--ca-url", settings.public_ca_url, "--root", str(settings.root)],
        step_path=device / "step", timeout=20, step_bin=settings.step_bin, extra_env={"STEP_TOKEN": token},
    )  # fmt: skip
    return x509.load_pem_x509_certificates((device / "c.crt").read_bytes())[0].serial_number
