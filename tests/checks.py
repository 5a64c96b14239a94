"""Checks shared by the tests: what a downloaded bundle must be."""

from __future__ import annotations

import io
import subprocess
import zipfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def check_bundle(data: bytes, cn: str, into: Path) -> None:
    """The ZIP a GUI user downloads: four files, chain verifies against ca.crt, key matches."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert sorted(archive.namelist()) == sorted(["ca.crt", f"{cn}.crt", f"{cn}.key", "README.txt"])
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
    key = serialization.load_pem_private_key((into / f"{cn}.key").read_bytes(), password=None)
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == chain[0].public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
