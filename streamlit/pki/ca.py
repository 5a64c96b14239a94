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
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pki.minter import TokenMinter
from pki.model import REVOCATION_REASONS, Kind
from pki.settings import Settings
from pki.step import CANotReached, CARefused, CAUnreachable, StepError, StepTimeout, run_step
from pki.validate import InvalidInput

SIGN_TOKEN_SECONDS = 300
"""How long the token of one signing request lives (it is used at once)."""
PROVISIONER_LIST_SECONDS = 60.0
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
        self._listed: tuple[float, list[dict[str, Any]]] | None = None

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

        What `step ca sign` does, in this process: a one-time token of the kind's provisioner (five
        minutes, the request's names as its SANs, the CN when it has none) and a POST to /1.0/sign.
        `step` spent most of its time decrypting the provisioner's key for each certificate. The answer
        is read from the response, never from a file: once the CA has signed, nothing on this side's
        disks can make it go missing.
        """
        if days < 1:
            raise InvalidInput("The validity must be at least 1 day.")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
            cn = str(csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        except (ValueError, IndexError) as exc:
            raise InvalidInput(f"The signing request cannot be read: {exc}") from None
        try:
            names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [str(n.value) for n in names]
        except x509.ExtensionNotFound:
            sans = []
        url = f"{self.settings.ca_url}/1.0/sign"
        token = self._token(self.provisioner_for(kind), cn, sans or [cn], url, SIGN_TOKEN_SECONDS)
        body = {"csr": csr_pem.decode(), "ott": token, "notAfter": f"{days * 24}h"}
        answer = self._post_json(url, body)
        try:
            return str(answer["crt"]) + str(answer["ca"])
        except (KeyError, TypeError):
            raise StepError(f"The CA at {url} answered without a certificate.", ["POST", url], None, "") from None

    def _post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to the CA; its JSON answer, or the StepError that says what happened: CARefused
        when the CA answered no; CANotReached when the connection or its TLS handshake failed, so the
        request never left; StepTimeout or CAUnreachable when it may have reached the CA."""
        parts = urllib.parse.urlsplit(url)
        argv, wait = ["POST", url], self.settings.step_timeout
        context = ssl.create_default_context(cafile=str(self.settings.root))
        connection = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=wait, context=context)
        try:
            try:
                connection.connect()
            except (OSError, ssl.SSLError) as exc:
                why = f"{exc} (the request was not sent)"
                raise CANotReached(f"The CA at {url} cannot be reached: {why}", argv, None, why) from None
            try:
                connection.request("POST", parts.path, json.dumps(body), {"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
            except TimeoutError as exc:
                late = f"The CA at {url} did not answer within {wait:g} s."
                raise StepTimeout(late, argv, None, str(exc)) from None
            except (OSError, http.client.HTTPException) as exc:
                raise CAUnreachable(f"The CA at {url} did not answer: {exc}", argv, None, str(exc)) from None
        finally:
            connection.close()
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if response.status >= 400:
            why = (
                str(answer.get("message"))
                if isinstance(answer, dict) and answer.get("message")
                else (f"HTTP {response.status} {response.reason}")
            )
            if response.status < 500:
                raise CARefused(f"The CA refused the request: {why}", argv, response.status, why)
            raise StepError(f"The CA at {url} failed: {why}", argv, response.status, why)
        if not isinstance(answer, dict):
            raise StepError(f"The CA at {url} answered something else than a certificate.", argv, None, "")
        return answer

    def _token(self, provisioner: str, subject: str, sans: list[str], audience: str, seconds: int) -> str:
        """A one-time token of a JWK provisioner, signed here (pki.minter) with its key: the encrypted JWK
        from the CA's public provisioner list, decrypted once per process with the password file, in memory
        only."""
        listed = next(
            (p for p in self._provisioner_list() if p.get("name") == provisioner and p.get("encryptedKey")), None
        )
        if listed is None:
            raise StepError(f"The CA has no JWK provisioner {provisioner!r} to sign tokens with.", [], None, "")
        try:
            password = self.settings.password_file(provisioner).read_bytes().strip()
            key = MINTER.key(provisioner, listed["encryptedKey"], password)
        except (OSError, ValueError) as exc:
            raise StepError(f"A token of provisioner {provisioner} cannot be signed: {exc}", [], None, "") from None
        return MINTER.mint(
            key, subject=subject, sans=sans, audience=audience, root_sha=self.root_fingerprint(),
            lifetime_seconds=seconds,
        )  # fmt: skip

    def enrollment_token(self, subject: str, lifetime: dt.timedelta, sans: tuple[str, ...] = ()) -> str:
        """A one-time token for `subject` that lives `lifetime` (hours to days) and survives CA restarts.
        `sans`: names besides the subject the site's certificate carries (step takes the token's SANs).

        `step ca token` refuses more than an hour, but step-ca sets no limit of its own. The audience is
        the public CA URL the site will use; the `sha` claim lets the site check the root it bootstraps.
        """
        return self._token(
            self.settings.client_provisioner, subject, [subject, *(s for s in sans if s != subject)],
            f"{self.settings.public_ca_url}/1.0/sign",
            int(lifetime.total_seconds()),
        )  # fmt: skip

    def _provisioner_list(self) -> list[dict[str, Any]]:
        """The CA's public provisioner list, asked over HTTPS (no step process for each token), kept for
        a minute: a certificate in bulk would otherwise cost a request more."""
        now = time.monotonic()
        if self._listed and self._listed[0] > now:
            return self._listed[1]
        url = f"{self.settings.ca_url}/provisioners?limit=100"
        context = ssl.create_default_context(cafile=str(self.settings.root))
        try:
            # The URL is the configured https CA URL, never user input.
            with urllib.request.urlopen(url, timeout=self.settings.step_timeout, context=context) as resp:  # noqa: S310
                listed = json.loads(resp.read()).get("provisioners") or []
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError, ValueError) as exc:
            raise CAUnreachable(f"The CA at {url} cannot be reached: {exc}", ["GET", url], None, str(exc)) from None
        result = [p for p in listed if isinstance(p, dict)]
        self._listed = (now + PROVISIONER_LIST_SECONDS, result)
        return result

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
