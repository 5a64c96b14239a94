"""Enrolment tokens signed in this process with the client provisioner's key.

step-ca publishes each JWK provisioner's private key encrypted (a JWE: PBES2-HS256+A128KW, 600,000
PBKDF2 rounds, A256GCM). `step crypto jwt sign` decrypts it again for every token, about 0.1 s each. Here
it is decrypted once per process and kept in memory only: never written to disk, a log or a command
line. The token is what step would sign: ES256, the provisioner's key id, and the claims step-ca checks.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class ProvisionerKey:
    name: str
    kid: str
    key: ec.EllipticCurvePrivateKey


def decrypt_provisioner_key(name: str, encrypted: str, password: bytes) -> ProvisionerKey:
    """The provisioner's P-256 signing key from the JWE step-ca publishes. Raises ValueError when the
    password does not open it or it is not such a key."""
    try:
        protected, wrapped, iv, ciphertext, tag = encrypted.split(".")
        header = json.loads(_b64decode(protected))
        if header.get("alg") != "PBES2-HS256+A128KW" or header.get("enc") != "A256GCM":
            raise ValueError(f"the key of provisioner {name} is encrypted with {header.get('alg')}/{header.get('enc')}")
        salt = header["alg"].encode() + b"\0" + _b64decode(header["p2s"])
        kek = PBKDF2HMAC(hashes.SHA256(), 16, salt, int(header["p2c"])).derive(password)
        cek = aes_key_unwrap(kek, _b64decode(wrapped))
        jwk = json.loads(
            AESGCM(cek).decrypt(_b64decode(iv), _b64decode(ciphertext) + _b64decode(tag), protected.encode())
        )
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise ValueError(f"the key of provisioner {name} is not a P-256 key")
        key = ec.derive_private_key(int.from_bytes(_b64decode(jwk["d"]), "big"), ec.SECP256R1())
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the key of provisioner {name} cannot be opened: {exc}") from None
    except Exception as exc:  # InvalidTag, InvalidUnwrap: a wrong password
        raise ValueError(f"the password of provisioner {name} does not open its key ({type(exc).__name__})") from None
    public = key.public_key().public_numbers()
    if _b64decode(jwk["x"]) != public.x.to_bytes(32, "big") or _b64decode(jwk["y"]) != public.y.to_bytes(32, "big"):
        raise ValueError(f"the key of provisioner {name} does not match its public half")
    return ProvisionerKey(name, str(jwk.get("kid", "")), key)


def sign_token(key: ProvisionerKey, claims: dict[str, object]) -> str:
    """A compact JWS (ES256) of `claims`, as `step crypto jwt sign` makes it."""
    header = {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    # Compact, as step writes it: enroll-site.sh reads the claims with sed.
    parts = (json.dumps(part, separators=(",", ":")).encode() for part in (header, claims))
    signing_input = ".".join(_b64encode(part) for part in parts)
    r, s = decode_dss_signature(key.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64encode(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


class TokenMinter:
    """Tokens of the device provisioners, each key decrypted at its first token and kept (in memory)
    while the encrypted key and the password it was opened with stay the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened: dict[str, tuple[str, bytes, ProvisionerKey]] = {}
        self.decryptions = 0
        """How often a key was decrypted (once per provisioner and process, unless its key changes)."""

    def key(self, name: str, encrypted: str, password: bytes) -> ProvisionerKey:
        with self._lock:
            opened = self._opened.get(name)
            if opened and opened[0] == encrypted and opened[1] == password:
                return opened[2]
            key = decrypt_provisioner_key(name, encrypted, password)
            self.decryptions += 1
            self._opened[name] = (encrypted, password, key)
            return key

    @staticmethod
    def mint(
        key: ProvisionerKey,
        *,
        subject: str,
        audience: str,
        root_sha: str,
        lifetime_seconds: int,
        sans: list[str] | None = None,
        now: int | None = None,
    ) -> str:
        issued = int(time.time()) if now is None else now
        claims: dict[str, object] = {
            "aud": audience,
            "exp": issued + lifetime_seconds,
            "iat": issued,
            "iss": key.name,
            "jti": secrets.token_hex(32),
            "nbf": issued,
            "sans": sans or [subject],
            "sha": root_sha,
            "sub": subject,
        }
        return sign_token(key, claims)
