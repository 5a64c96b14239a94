"""Is revocation enforced at the broker? Six checks against a broker address, reached as the sites reach
it (through HAProxy): `python -m pki.broker_check HOST:PORT` (scripts/check-broker.sh) and the Broker
check page.

1. the broker's certificate chains to our root, names the host, has serverAuth; how long it has left
2. a TLS client without a certificate is refused
3. a client certificate from a foreign CA is refused
4. a valid canary client certificate gets an MQTT CONNACK
5. a revoked canary is refused (once the broker's CRL refresh has had time to run)
6. a server-only (serverAuth) certificate presented as a client is refused

The canaries are certificates the check issues for itself (CN `app-pki-canary-*`, one day long, kept in
the data folder's broker-check/, left out of every count and page of the fleet); one replaced while still
valid is revoked. The revoked one is kept, so that a later run can see whether the broker's CRL has
caught up.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import socket
import ssl
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.fleet import Fleet
from pki.keys import DEFAULT_KEY_TYPE, new_private_key, private_key_pem, signing_request
from pki.model import CANARY_PREFIX, Kind
from pki.roles import Actor, Role, require
from pki.settings import SettingsError, data_dir, load_settings
from pki.step import StepError
from pki.validate import InvalidInput

CESSATION = 5  # RFC 5280 reason cessationOfOperation: a canary that exists to be revoked
SUPERSEDED = 4  # a canary replaced by the next one


@dataclass(frozen=True)
class CheckResult:
    number: int
    name: str
    outcome: str
    """PASS, FAIL or WAIT (the revoked canary is younger than the broker's CRL refresh interval)."""
    detail: str
    fix: str = ""


def _connect(host: str, port: int, root: Path, cert: Path | None, key: Path | None) -> tuple[int | None, bytes | None]:
    """An MQTT 3.1.1 CONNECT over TLS; returns (the CONNACK's return code or None when refused or closed,
    the broker's certificate DER when the handshake got that far)."""
    context = ssl.create_default_context(cafile=str(root))
    if cert and key:
        context.load_cert_chain(cert, key)
    peer = None
    try:
        with (
            socket.create_connection((host, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            peer = tls.getpeercert(binary_form=True)
            client_id = b"app-pki-broker-check"
            body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
            tls.sendall(bytes([0x10, len(body)]) + body)
            answer = tls.recv(4)
    except (OSError, ssl.SSLError):
        return None, peer
    if len(answer) == 4 and answer[0] == 0x20:
        return answer[3], peer
    return None, peer


class BrokerCheck:
    def __init__(
        self, fleet: Fleet, folder: Path, crl_interval: float = 900, renew_within: dt.timedelta = dt.timedelta(hours=12)
    ) -> None:
        self.fleet = fleet
        self.folder = folder
        self.crl_interval = crl_interval
        self.renew_within = renew_within
        """A canary with less than this left is replaced (and the old one revoked)."""

    # -- canaries -------------------------------------------------------------------------------------

    def _issue(self, name: str, kind: Kind, days: int = 1) -> tuple[Path, Path]:
        key = new_private_key(DEFAULT_KEY_TYPE)
        chain = self.fleet.ca.sign(signing_request(name, [], key), kind, days=days)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        crt, key_file = self.folder / f"{name}.crt", self.folder / f"{name}.key"
        key_file.write_bytes(private_key_pem(key))
        key_file.chmod(0o600)
        crt.write_text(chain)
        return crt, key_file

    def _fresh(self, name: str, kind: Kind) -> tuple[Path, Path]:
        """A canary with at least half a day left, issued anew when needed."""
        crt = self.folder / f"{name}.crt"
        old = x509.load_pem_x509_certificates(crt.read_bytes())[0] if crt.exists() else None
        if old and old.not_valid_after_utc - dt.datetime.now(dt.UTC) > self.renew_within:
            return crt, crt.with_suffix(".key")
        issued = self._issue(name, kind)
        if old and old.not_valid_after_utc > dt.datetime.now(dt.UTC):
            with contextlib.suppress(StepError, InvalidInput):  # it expires within hours anyway
                self.fleet.ca.revoke(old.serial_number, SUPERSEDED, kind=kind)
        return issued

    def _revoked(self) -> tuple[Path, Path, float]:
        """The revoked canary and when it was revoked; made (and revoked) when there is none valid."""
        name = f"{CANARY_PREFIX}revoked"
        crt, marker = self.folder / f"{name}.crt", self.folder / f"{name}.revoked-at"
        if crt.exists() and marker.exists():
            leaf = x509.load_pem_x509_certificates(crt.read_bytes())[0]
            if leaf.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(hours=1):
                return crt, crt.with_suffix(".key"), float(marker.read_text())
        crt, key = self._issue(name, Kind.CLIENT)
        leaf = x509.load_pem_x509_certificates(crt.read_bytes())[0]
        self.fleet.ca.revoke(leaf.serial_number, CESSATION)
        marker.write_text(str(time.time()))
        return crt, key, time.time()

    def _foreign(self) -> tuple[Path, Path]:
        """A client certificate of a CA that is not ours (made here, never sent anywhere else)."""
        crt, key_file = self.folder / "foreign.crt", self.folder / "foreign.key"
        if crt.exists():
            return crt, key_file
        # The foreign CA's certificate is kept too (foreign-ca.crt): a test makes a broker trust it.
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not the app-pki CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CANARY_PREFIX}foreign")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_file.write_bytes(private_key_pem(key))
        key_file.chmod(0o600)
        crt.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        (self.folder / "foreign-ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        return crt, key_file

    # -- the checks -----------------------------------------------------------------------------------

    def run(self, actor: Actor, address: str) -> list[CheckResult]:
        require(actor, Role.OPERATOR, "run the broker check")
        host, _, port_text = address.rpartition(":")
        if not host or not port_text.isdigit():
            raise InvalidInput(f"{address!r} is not HOST:PORT (e.g. mqtt.example.com:8883).")
        port, root = int(port_text), self.fleet.settings.root
        valid_crt, valid_key = self._fresh(f"{CANARY_PREFIX}valid", Kind.CLIENT)
        results = []

        code, peer = _connect(host, port, root, valid_crt, valid_key)
        results.append(self._server_certificate(host, port, root, peer))
        code_none, _ = _connect(host, port, root, None, None)
        results.append(self._refused(2, "a client without a certificate", code_none,
                                     "set require_certificate true (Mosquitto) / verify_peer (EMQX)"))  # fmt: skip
        foreign_crt, foreign_key = self._foreign()
        code_foreign, _ = _connect(host, port, root, foreign_crt, foreign_key)
        results.append(self._refused(3, "a client certificate of another CA", code_foreign,
                                     "the broker's cafile must be our root only, not a system bundle"))  # fmt: skip
        results.append(
            CheckResult(4, "a valid canary", "PASS", "the broker answered CONNACK 0: valid sites get in.")
            if code == 0
            else CheckResult(
                4,
                "a valid canary",
                "FAIL",
                f"the broker {'refused it' if code is None else f'answered CONNACK {code}'}.",
                "check the broker's cafile (our root), its listener and the ACL; see its log.",
            )
        )
        revoked_crt, revoked_key, revoked_at = self._revoked()
        code_revoked, _ = _connect(host, port, root, revoked_crt, revoked_key)
        age = time.time() - revoked_at
        if code_revoked != 0:
            results.append(CheckResult(5, "a revoked canary", "PASS", "refused: the broker enforces the CRL."))
        elif age < self.crl_interval:
            results.append(CheckResult(5, "a revoked canary", "WAIT",
                f"accepted, but it was revoked {age / 60:.0f} min ago and the broker's CRL refresh may not have run; "
                "run the check again later.", "wait for the broker's CRL refresh (refresh-crl.sh)"))  # fmt: skip
        else:
            results.append(CheckResult(5, "a revoked canary", "FAIL",
                f"revoked certificate accepted ({age / 60:.0f} min after its revocation).",
                "the broker does not load the CRL, or it is stale: set crlfile and run refresh-crl.sh "
                "on a schedule (Mosquitto); enable CRL checking (EMQX)."))  # fmt: skip
        server_crt, server_key = self._fresh(f"{CANARY_PREFIX}server", Kind.SERVER)
        code_server, _ = _connect(host, port, root, server_crt, server_key)
        results.append(self._refused(6, "a server-only certificate as a client", code_server,
                                     "the broker must require clientAuth in client certificates"))  # fmt: skip
        self.fleet.audit.record(
            "broker-check", "ok" if all(r.outcome == "PASS" for r in results) else "failed", actor=actor,
            broker=address, results={r.number: r.outcome for r in results},
        )  # fmt: skip
        self._remember(address, results)
        return results

    @staticmethod
    def _refused(number: int, what: str, code: int | None, fix: str) -> CheckResult:
        if code is None or code != 0:
            return CheckResult(number, what, "PASS", "refused.")
        return CheckResult(number, what, "FAIL", f"{what} was let in (CONNACK 0).", fix)

    @staticmethod
    def _server_certificate(host: str, port: int, root: Path, peer: bytes | None) -> CheckResult:
        name = "the broker's certificate"
        if peer is None:
            context = ssl.create_default_context(cafile=str(root))
            try:
                with (
                    socket.create_connection((host, port), timeout=10) as raw,
                    context.wrap_socket(raw, server_hostname=host),
                ):
                    pass
            except (OSError, ssl.SSLError) as exc:
                fix = "install a broker certificate of our CA naming this host (Issue, server)"
                return CheckResult(1, name, "FAIL", f"no TLS handshake checked against our root: {exc}", fix)
            return CheckResult(1, name, "FAIL", "the handshake failed with the canary", "see the broker's log")
        leaf = x509.load_der_x509_certificate(peer)
        try:
            usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = x509.ExtendedKeyUsage([])
        left = (leaf.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
        if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
            return CheckResult(1, name, "FAIL", "it has no serverAuth usage.", "issue it as a server certificate")
        return CheckResult(1, name, "PASS", f"chains to our root, names {host}, serverAuth, {left} day(s) left.")

    def _remember(self, address: str, results: list[CheckResult]) -> None:
        """The last results, for the metrics and the page."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "broker": address,
                  "results": [asdict(r) for r in results]}  # fmt: skip
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".last-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(record, out, indent=1)
        os.replace(tmp, self.folder / "last.json")

    def last(self) -> dict[str, object] | None:
        try:
            return json.loads((self.folder / "last.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pki.broker_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("broker", help="HOST:PORT as the sites dial it (through HAProxy)")
    parser.add_argument("--crl-interval", type=float, default=900, help="seconds the broker's CRL refresh may take")
    args = parser.parse_args(argv)
    try:
        fleet = Fleet(load_settings(os.environ))
        check = BrokerCheck(fleet, data_dir(os.environ) / "broker-check", args.crl_interval)
        results = check.run(Actor("shell", Role.ADMIN, "", "shell"), args.broker)
    except (SettingsError, InvalidInput, StepError, OSError) as exc:
        print(f"check-broker: {exc}", file=sys.stderr)
        return 2
    for r in results:
        print(f"{r.outcome:4}  {r.number}. {r.name}: {r.detail}" + (f"  Fix: {r.fix}" if r.outcome != "PASS" else ""))
    return 0 if all(r.outcome == "PASS" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
