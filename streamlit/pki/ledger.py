"""Every certificate the CA has signed or renewed, kept as one PEM file per serial, and its last CRL.

The source is the issuance journal: the JSON request lines of step-ca that carry a certificate
(/sign, /renew, /rekey), which scripts/start-ca.sh appends to $PKI_CA_LOG. That is how app-pki knows
certificates whose keys never came near the server: sites enrolled by token and certificates renewed
by the sites themselves, each renewal a new serial. The GUI also adds what it has just had signed,
the moment step returns, so the ledger knows it even before the journal's line arrives.

The journal may be rotated or lost, so what it says is copied into the ledger folder as it is read
({SERIAL-HEX}.crt, never rewritten, never deleted) and the read position is remembered (pki.tail),
so each sync reads only what was appended since the last one, rotations included. The last CRL
fetched from the CA is kept too (.crl.der), so pages can say what the CA last said when it is down.
The journal also names each enrolment token the CA spent (by its id, never the token): tokens/{ID}
holds the serial it gave, or nothing when the CA signed nothing with it (a cancelled token).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.tail import Position, read_appended

_SIGNING_PATHS = ("/sign", "/renew", "/rekey", "/1.0/sign", "/1.0/renew", "/1.0/rekey")
_TOKEN_PATHS = ("/sign", "/1.0/sign")
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class SyncResult:
    added: int
    position: int


def _write_new(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a private temporary name, so readers never see half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class Ledger:
    def __init__(self, ca_log: Path | None, ledger_dir: Path) -> None:
        self.ca_log = ca_log
        self.ledger_dir = ledger_dir
        self._state_file = ledger_dir / ".position.json"
        self._crl_file = ledger_dir / ".crl.der"
        self._lock = threading.Lock()
        self.problem: str | None = None
        """Why the last sync could not read the journal (then certificates known only from it are missing)."""

    def _load_position(self) -> Position:
        try:
            state = json.loads(self._state_file.read_text())
            return Position(int(state["inode"]), int(state["offset"]), base64.b64decode(state.get("head", "")))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return Position()

    def _save_position(self, position: Position) -> None:
        state = {"inode": position.inode, "offset": position.offset, "head": base64.b64encode(position.head).decode()}
        _write_new(self._state_file, json.dumps(state).encode())

    def sync(self) -> SyncResult:
        """Copy the certificates logged since the last sync into the ledger. Cheap when nothing is new."""
        if self.ca_log is None:
            return SyncResult(0, 0)
        with self._lock:
            before = self._load_position()
            added: list[int] = []
            try:
                after = read_appended(self.ca_log, before, lambda line: added.append(self._ingest(line)))
                if after != before:
                    self._save_position(after)
            except FileNotFoundError:
                self.problem = f"The CA's issuance journal {self.ca_log} does not exist."
                return SyncResult(0, 0)
            except OSError as exc:
                self.problem = f"The CA's issuance journal {self.ca_log} cannot be read: {exc.strerror or exc}."
                return SyncResult(sum(added), before.offset)
            self.problem = None
            return SyncResult(sum(added), after.offset)

    def _ingest(self, line: bytes) -> int:
        if not line.startswith(b"{") or (b'"certificate"' not in line and b'"ott-jti"' not in line):
            return 0
        try:
            entry = json.loads(line)
            path, status = entry.get("path"), int(entry.get("status", 0))
            cert = None
            if "certificate" in entry and path in _SIGNING_PATHS and status in (200, 201):
                cert = x509.load_der_x509_certificate(base64.b64decode(entry["certificate"]))
        except (ValueError, KeyError, TypeError):
            return 0
        token_id = entry.get("ott-jti")
        # The CA marks a token used before it checks the request: any answer but "bad request" (400) or
        # "unauthorized" (401: used already, expired, not ours) spent it, with or without a certificate.
        if isinstance(token_id, str) and path in _TOKEN_PATHS and status not in (400, 401):
            self._spend(token_id, cert)
        return int(self.add(cert)) if cert is not None else 0

    def _spend(self, token_id: str, cert: x509.Certificate | None) -> None:
        """Remember that the CA spent token `token_id` ({ID} in tokens/: the serial it gave, or empty)."""
        if not _TOKEN_ID.fullmatch(token_id):
            return
        target = self.ledger_dir / "tokens" / token_id
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(target, f"{cert.serial_number:X}".encode() if cert is not None else b"")

    def spent_tokens(self) -> dict[str, str]:
        """Token id -> serial (hex) of the certificate the CA signed with it, or "" when it signed none:
        every enrolment token the CA's journal shows spent."""
        self.sync()
        folder = self.ledger_dir / "tokens"
        try:
            names = [entry.name for entry in os.scandir(folder) if _TOKEN_ID.fullmatch(entry.name)]
        except FileNotFoundError:
            return {}
        spent = {}
        for name in names:
            with contextlib.suppress(OSError):
                spent[name] = (folder / name).read_text().strip()
        return spent

    def add(self, cert: x509.Certificate) -> bool:
        """Keep `cert` as {SERIAL}.crt unless it is there already; True if it was new."""
        target = self.ledger_dir / f"{cert.serial_number:X}.crt"
        if target.exists():
            return False
        self.ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(target, cert.public_bytes(serialization.Encoding.PEM))
        return True

    def keep_crl(self, der: bytes) -> None:
        """Remember the CA's latest CRL (written only when it changed)."""
        try:
            if self._crl_file.read_bytes() == der:
                return
        except OSError:
            pass
        self.ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(self._crl_file, der)

    def last_crl(self) -> bytes | None:
        """The CRL last kept, or None."""
        try:
            return self._crl_file.read_bytes()
        except OSError:
            return None
