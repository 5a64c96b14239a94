"""Key pairs and signing requests for the certificates the GUI issues.

The key is made here, before the CA is asked, and written to disk first: a disk that cannot take
a key stops the issuance before the CA has signed anything, and once it has signed, the request's
public key identifies the certificate wherever it turns up (the CA's journal included).
"""

from __future__ import annotations

import hashlib
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

KEY_TYPES = ("EC P-256", "RSA 2048", "RSA 3072")
DEFAULT_KEY_TYPE = "EC P-256"


def new_private_key(key_type: str) -> CertificateIssuerPrivateKeyTypes:
    if key_type == "EC P-256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type in ("RSA 2048", "RSA 3072"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.split()[1]))
    raise ValueError(f"unknown key type {key_type!r}")


def private_key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """PKCS#8, unencrypted: what Mosquitto, EMQX and step read."""
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def signing_request(cn: str, sans: list[str], key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """A PEM CSR for `cn` with `sans` (DNS names or IP addresses, already validated).

    With no SANs the CA puts the CN in as the one DNS SAN, as `step ca certificate` does.
    """
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if sans:
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def key_id(public_key: PublicKeyTypes) -> str:
    """SHA-256 of the DER public key: equal for a certificate, its renewals and its private key."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def key_type_of(public_key: PublicKeyTypes) -> str:
    """'EC P-256', 'RSA 2048'... as the Issue page names key types."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"RSA {public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384"}.get(
            public_key.curve.name, f"EC {public_key.curve.name}"
        )
    return type(public_key).__name__
