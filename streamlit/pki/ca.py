"""What app-pki asks of step-ca: step CLI calls (through pki.step) and the CRL over HTTPS.

Passwords reach step as files and tokens as the STEP_TOKEN variable, never as arguments (any local
user can read a process's arguments). Every call names the CA URL and root explicitly, so no call
depends on a context or defaults file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import ssl
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki.minter import TokenMinter
from pki.model import REVOCATION_REASONS, Kind
from pki.settings import Settings
from pki.step import CAUnreachable, StepError, run_step
from pki.validate import InvalidInput

MINTER = TokenMinter()
"""One per process: the client provisioner's key is decrypted once, for every token after."""


@dataclass(frozen=True)
class SpendOutcome:
    status: int
    """The CA's answer: 403 spent without a certificate, 401 refused (used already, or expired)."""
    serial: int | None
    """The certificate the CA signed anyway (never expected), to be revoked."""


@dataclass(frozen=True)
class CRLInfo:
    revoked: frozenset[int]
    last_update: dt.datetime
    next_update: dt.datetime | None
    der: bytes

    @classmethod
    def of(cls, crl: x509.CertificateRevocationList) -> CRLInfo:
        return cls(
            revoked=frozenset(entry.serial_number for entry in crl),
            last_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
            der=crl.public_bytes(serialization.Encoding.DER),
        )

    @property
    def pem(self) -> bytes:
        return x509.load_der_x509_crl(self.der).public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Provisioner:
    name: str
    type: str
    max_days: int | None
    default_days: int | None


def _duration_days(value: str | None) -> int | None:
    """Days in a Go duration such as '17520h0m0s' (whole days, rounded down)."""
    if not value or "h" not in value:
        return None
    return int(value.split("h", 1)[0]) // 24


class StepCA:
    """The CA as the GUI sees it: a URL, a root, and the device provisioners' password files."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _run(self, args: list[str], timeout: float | None = None, env: dict[str, str] | None = None) -> str:
        s = self.settings
        return run_step(
            args,
            step_path=s.step_path,
            timeout=timeout or s.step_timeout,
            step_bin=s.step_bin,
            ca_url=s.ca_url,
            extra_env=env,
        )

    def _ca_flags(self) -> list[str]:
        return ["--ca-url", self.settings.ca_url, "--root", str(self.settings.root)]

    def provisioner_for(self, kind: Kind) -> str:
        s = self.settings
        return s.server_provisioner if kind is Kind.SERVER else s.client_provisioner

    def _provisioner_flags(self, kind: Kind) -> list[str]:
        name = self.provisioner_for(kind)
        return ["--provisioner", name, "--provisioner-password-file", str(self.settings.password_file(name))]

    def health(self, timeout: float | None = None) -> None:
        """Return if step-ca answers 'ok'; raise a StepError that says why not."""
        out = self._run(["ca", "health", *self._ca_flags()], timeout=timeout).strip()
        if out != "ok":
            raise CAUnreachable(
                f"The CA at {self.settings.ca_url} is not healthy: {out}", ["step", "ca", "health"], 0, out
            )

    def sign(self, csr_pem: bytes, kind: Kind, *, days: int) -> str:
        """Have the CA sign a request (PEM); returns the leaf and the intermediate, PEM.

        step writes the certificate to its stdout, not to a file: once the CA has signed, nothing
        on this side's disks can make the answer go missing.
        """
        if days < 1:
            raise InvalidInput("The validity must be at least 1 day.")
        with tempfile.TemporaryDirectory(prefix="csr-") as tmp:
            csr_file = Path(tmp, "request.csr")
            csr_file.write_bytes(csr_pem)
            return self._run(
                [
                    "ca", "sign", str(csr_file), "/dev/stdout",
                    *self._provisioner_flags(kind),
                    "--not-after", f"{days * 24}h", "--force", *self._ca_flags(),
                ]
            )  # fmt: skip

    def enrollment_token(self, subject: str, lifetime: dt.timedelta) -> str:
        """A one-time token for `subject` that lives `lifetime` (hours to days) and survives CA restarts.

        `step ca token` refuses more than an hour, but step-ca sets no limit of its own. The token is
        signed here (pki.minter) with the client provisioner's key: its encrypted JWK comes from the CA's
        public provisioner list and is decrypted once per process with the password file, in memory
        only. The audience is the public CA URL the site will use; the `sha` claim lets the site check
        the root it bootstraps.
        """
        name = self.settings.client_provisioner
        provisioner = next(
            (p for p in self._provisioner_list() if p.get("name") == name and p.get("encryptedKey")), None
        )
        if provisioner is None:
            raise StepError(f"The CA has no JWK provisioner {name!r} to sign enrolment tokens.", [], None, "")
        try:
            password = self.settings.password_file(name).read_bytes().strip()
            key = MINTER.key(name, provisioner["encryptedKey"], password)
        except (OSError, ValueError) as exc:
            raise StepError(f"The enrolment token cannot be signed: {exc}", [], None, "") from None
        return MINTER.mint(
            key, subject=subject, audience=f"{self.settings.public_ca_url}/1.0/sign", root_sha=self.root_fingerprint(),
            lifetime_seconds=int(lifetime.total_seconds()),
        )  # fmt: skip

    def _provisioner_list(self) -> list[dict[str, Any]]:
        """The CA's public provisioner list, asked over HTTPS (no step process for each token)."""
        url = f"{self.settings.ca_url}/provisioners?limit=100"
        context = ssl.create_default_context(cafile=str(self.settings.root))
        try:
            # The URL is the configured https CA URL, never user input.
            with urllib.request.urlopen(url, timeout=self.settings.step_timeout, context=context) as resp:  # noqa: S310
                listed = json.loads(resp.read()).get("provisioners") or []
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError, ValueError) as exc:
            raise CAUnreachable(f"The CA at {url} cannot be reached: {exc}", ["GET", url], None, str(exc)) from None
        return [p for p in listed if isinstance(p, dict)]

    def spend_token(self, token: str, timeout: float | None = None) -> SpendOutcome:
        """Use an enrolment token at the CA in a request it refuses to sign: a CSR for another name than
        the token's. step-ca marks a token used before it checks the request, so from then on it refuses
        the token, and (answer 403) no certificate came of it. The token goes in the request body only."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app-pki-cancelled-token")])
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
        body = json.dumps({"csr": csr.public_bytes(serialization.Encoding.PEM).decode(), "ott": token}).encode()
        url = f"{self.settings.ca_url}/1.0/sign"
        # The URL is the configured https CA URL, never user input.
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
        context = ssl.create_default_context(cafile=str(self.settings.root))
        wait = timeout or self.settings.step_timeout
        try:
            with urllib.request.urlopen(request, timeout=wait, context=context) as resp:  # noqa: S310
                signed = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return SpendOutcome(exc.code, None)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
            raise CAUnreachable(f"The CA at {url} cannot be reached: {exc}", ["POST", url], None, str(exc)) from None
        try:  # signed after all: the caller revokes it
            return SpendOutcome(201, x509.load_pem_x509_certificate(signed["crt"].encode()).serial_number)
        except (KeyError, ValueError, TypeError, AttributeError):
            return SpendOutcome(201, None)

    def revoke(self, serial: int, reason_code: int, *, kind: Kind = Kind.CLIENT) -> None:
        """Revoke by serial with a revoke token: works for server certificates and for keys not held here.

        The token goes to `step ca revoke` in STEP_TOKEN, never on its command line.
        """
        if reason_code not in REVOCATION_REASONS:
            raise InvalidInput(f"Unknown revocation reason code {reason_code}.")
        token = self._run(
            ["ca", "token", str(serial), "--revoke", *self._provisioner_flags(kind), *self._ca_flags()]
        ).strip()
        self._run(
            ["ca", "revoke", str(serial), "--reasonCode", str(reason_code), *self._ca_flags()],
            env={"STEP_TOKEN": token},
        )

    def root_fingerprint(self) -> str:
        """SHA-256 of the root certificate (DER), as `step ca bootstrap --fingerprint` wants it."""
        try:
            root = x509.load_pem_x509_certificate(self.settings.root.read_bytes())
        except (OSError, ValueError) as exc:
            raise StepError(f"The root certificate {self.settings.root} cannot be read: {exc}", [], None, "") from None
        return hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest()

    def provisioners(self) -> list[Provisioner]:
        """The CA's provisioners with their certificate lifetimes (a public endpoint)."""
        raw = json.loads(self._run(["ca", "provisioner", "list", *self._ca_flags()]))
        result = []
        for item in raw:
            claims = item.get("claims") or {}
            result.append(
                Provisioner(
                    name=item.get("name", "?"),
                    type=item.get("type", "?"),
                    max_days=_duration_days(claims.get("maxTLSCertDuration")),
                    default_days=_duration_days(claims.get("defaultTLSCertDuration")),
                )
            )
        return result

    def crl_info(self, timeout: float | None = None) -> CRLInfo:
        """The revoked serials and dates of the CA's current CRL."""
        return CRLInfo.of(self.fetch_crl(timeout))

    def fetch_crl(self, timeout: float | None = None) -> x509.CertificateRevocationList:
        """The CA's current CRL, fetched over its TLS API (the same CRL its plain-HTTP port serves)."""
        url = f"{self.settings.ca_url}/1.0/crl"
        try:
            context = ssl.create_default_context(cafile=str(self.settings.root))
            # The URL is the configured https CA URL, never user input.
            with urllib.request.urlopen(url, timeout=timeout or self.settings.step_timeout, context=context) as resp:  # noqa: S310
                data = resp.read()
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
            raise CAUnreachable(f"The CRL at {url} cannot be fetched: {exc}", ["GET", url], None, str(exc)) from None
        try:
            return x509.load_der_x509_crl(data)
        except ValueError as exc:
            raise StepError(
                f"The CA at {url} sent something that is not a CRL: {exc}", ["GET", url], None, ""
            ) from None
