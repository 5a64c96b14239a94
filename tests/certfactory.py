"""Certificates made with cryptography, for tests and benchmarks that need many of them fast.

Only parsing and layout are tested with these; everything the CA does is tested against step-ca.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_KEY = ec.generate_private_key(ec.SECP256R1())  # one key for all: parsing cost does not depend on it


def make_certificate(
    cn: str,
    *,
    not_after: dt.datetime,
    not_before: dt.datetime | None = None,
    server: bool = False,
    serial: int | None = None,
) -> bytes:
    """A PEM leaf for `cn`, self-issued by a fake 'Test CA' (not the real CA)."""
    not_before = not_before or min(dt.datetime.now(dt.UTC), not_after) - dt.timedelta(days=1)
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(_KEY.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .sign(_KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def write_certificate(certs_dir: Path, folder: str, cn: str, **kwargs: object) -> Path:
    """certs_dir/folder/cn.crt (+ a placeholder .key), as the GUI files them."""
    target = certs_dir / folder
    target.mkdir(parents=True, exist_ok=True)
    crt = target / f"{cn}.crt"
    crt.write_bytes(make_certificate(cn, **kwargs))  # type: ignore[arg-type]
    (target / f"{cn}.key").write_text("not a real key\n")
    return crt


def request_line(cn: str, path: str = "/sign", status: int = 201, **fields: object) -> bytes:
    """A step-ca JSON request-log line for a signed certificate."""
    pem = make_certificate(cn, not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=9))
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    entry = {"path": path, "status": status, "certificate": base64.b64encode(der).decode(), "subject": cn}
    return json.dumps(entry | fields).encode() + b"\n"
