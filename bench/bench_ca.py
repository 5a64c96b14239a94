"""A throw-away CA for the benchmarks, set up and started by the project's own scripts on loopback, and a
fast way to fill certs/ with certificates its intermediate really signed (made with cryptography and the
CA's own intermediate key, so every page treats them as this CA's: not foreign, not parsed differently).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayCA:
    """init-ca.sh + start-ca.sh under `base` (free loopback ports); `env` is what a GUI on it gets."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.ca_port = free_port()
        self.crl_port = free_port()
        while self.crl_port == self.ca_port:  # the kernel may hand out one ephemeral port twice in a row
            self.crl_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("STEP", "PKI_"))}
        env |= {"STEPPATH": str(base / "ca"), "PKI_GUI_DIR": str(base / "gui")}
        env |= {"PKI_CA_ADDRESS": f"127.0.0.1:{self.ca_port}", "PKI_CRL_ADDRESS": f"127.0.0.1:{self.crl_port}"}
        subprocess.run(["bash", str(REPO / "scripts/init-ca.sh")], env=env, check=True, capture_output=True)
        self._log = (base / "ca.log").open("wb")
        self.process = subprocess.Popen(
            ["bash", str(REPO / "scripts/start-ca.sh")], env=env | {"PKI_CA_LOG": str(base / "issued.log")},
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.env = {
            "PKI_GUI_DIR": str(base / "gui"),
            "STEP_CA_URL": f"https://localhost:{self.ca_port}",
            "PKI_CERTS_DIR": str(base / "certs"),
            "PKI_DATA_DIR": str(base / "data"),
            "PKI_CA_LOG": str(base / "issued.log"),
            "PKI_STEPPATH": str(base / "gui-step"),
            "PKI_STEP_BIN": str(REPO / ".tools" / "bin" / "step"),
        }
        self._wait_healthy()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while subprocess.run(
            [self.env["PKI_STEP_BIN"], "ca", "health", "--ca-url", self.env["STEP_CA_URL"],
             "--root", str(self.base / "gui" / "root_ca.crt")],
            env={"STEPPATH": str(self.base / "gui-step"), "PATH": os.environ.get("PATH", "")},
            capture_output=True, check=False,
        ).returncode:  # fmt: skip
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the CA did not start:\n{(self.base / 'ca.log').read_text()}")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self._log.close()

    def fill(self, count: int, *, prefix: str = "site", journal: bool = False) -> None:
        """`count` certificates of this CA in certs/{prefix}-{i}/ (each with a key file), expiring over the
        next two years; one in 50 a broker's. `journal`: in the CA's issuance journal instead, as step-ca
        logs a renewal (what a site renewing itself leaves)."""
        steppath = self.base / "ca"
        password = (steppath / "secrets" / "password").read_bytes().strip()
        issuer_key = serialization.load_pem_private_key(
            (steppath / "secrets" / "intermediate_ca_key").read_bytes(), password=password
        )
        assert isinstance(issuer_key, ec.EllipticCurvePrivateKey)
        issuer = x509.load_pem_x509_certificate((steppath / "certs" / "intermediate_ca.crt").read_bytes())
        issuer_pem = issuer.public_bytes(serialization.Encoding.PEM)
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        now = dt.datetime.now(dt.UTC)
        certs = Path(self.env["PKI_CERTS_DIR"])
        for i in range(count):
            cn = f"{prefix}-{i:06}"
            server = i % 50 == 0
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(issuer.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=1 + i % 730, hours=i % 24))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(aki, critical=False)
                .sign(issuer_key, hashes.SHA256())
            )
            if journal:
                der = cert.public_bytes(serialization.Encoding.DER)
                line = {"path": "/1.0/renew", "status": 201, "certificate": base64.b64encode(der).decode()}
                with open(self.env["PKI_CA_LOG"], "a", encoding="ascii") as log:
                    log.write(json.dumps(line) + "\n")
                continue
            folder = certs / cn
            folder.mkdir(parents=True, mode=0o700)
            (folder / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM) + issuer_pem)
            (folder / f"{cn}.key").write_bytes(key_pem)
            (folder / f"{cn}.key").chmod(0o600)
