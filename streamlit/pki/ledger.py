"""Every certificate the CA has signed or renewed, kept as one PEM file per serial, and its last CRL.

The source is the issuance journal: the JSON request lines of step-ca that carry a certificate
(/sign, /renew, /rekey), which scripts/start-ca.sh appends to $PKI_CA_LOG. That is how app-pki knows
certificates whose keys never came near the server: sites enrolled by token and certificates renewed
by the sites themselves, each renewal a new serial. The GUI also adds what it has just had signed,
the moment step returns, so the ledger knows it even before the journal's line arrives.

The journal may be rotated or lost, so what it says is copied into the ledger folder as it is read
({SERIAL-HEX}.crt, never rewritten, never deleted) and the read position is remembered, so each
sync reads only what was appended since the last one. The last CRL fetched from the CA is kept too
(.crl.der), so pages can say what the CA last said when it cannot be reached.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

_SIGNING_PATHS = ("/sign", "/renew", "/rekey", "/1.0/sign", "/1.0/renew", "/1.0/rekey")
_CHUNK = 4 * 1024 * 1024


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

    def _load_position(self) -> tuple[int, int]:
        try:
            state = json.loads(self._state_file.read_text())
            return int(state["inode"]), int(state["offset"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return 0, 0

    def _save_position(self, inode: int, offset: int) -> None:
        _write_new(self._state_file, json.dumps({"inode": inode, "offset": offset}).encode())

    def sync(self) -> SyncResult:
        """Copy the certificates logged since the last sync into the ledger. Cheap when nothing is new."""
        if self.ca_log is None:
            return SyncResult(0, 0)
        with self._lock:
            try:
                result = self._read_new_lines(self.ca_log)
            except FileNotFoundError:
                self.problem = f"The CA's issuance journal {self.ca_log} does not exist."
                return SyncResult(0, 0)
            except OSError as exc:
                self.problem = f"The CA's issuance journal {self.ca_log} cannot be read: {exc.strerror or exc}."
                return SyncResult(0, 0)
            self.problem = None
            return result

    def _read_new_lines(self, journal: Path) -> SyncResult:
        """Ingest what was appended since the last sync (called with the lock held)."""
        stat = journal.stat()
        inode, offset = self._load_position()
        added = 0
        if inode != stat.st_ino:
            # A new journal (rotated): first what the old one got after the last sync, if it is still there.
            added += self._finish_rotated(journal.parent, inode, offset)
            offset = 0
        elif offset > stat.st_size:
            offset = 0  # truncated in place: read it from the start (re-adding is harmless)
        if offset == stat.st_size:
            if added:
                self._save_position(stat.st_ino, offset)
            return SyncResult(added, offset)
        new, offset = self._ingest_from(journal, offset)
        self._save_position(stat.st_ino, offset)
        return SyncResult(added + new, offset)

    def _finish_rotated(self, folder: Path, inode: int, offset: int) -> int:
        """Read the rest of the journal file that had `inode`, if rotation left it in `folder`."""
        if not inode:
            return 0
        with os.scandir(folder) as entries:
            old = next((Path(e.path) for e in entries if e.inode() == inode and e.is_file()), None)
        return self._ingest_from(old, offset, final=True)[0] if old else 0

    def _ingest_from(self, journal: Path, offset: int, *, final: bool = False) -> tuple[int, int]:
        """Ingest the lines of `journal` from `offset`; returns (added, offset after the last whole line).
        An incomplete last line waits for the next sync, unless the file is `final` (it grows no more)."""
        self.ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        added = 0
        with journal.open("rb") as log:
            log.seek(offset)
            pending = b""
            while chunk := log.read(_CHUNK):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                for line in lines:
                    added += self._ingest(line)
                offset += len(chunk)
        if final and pending:
            added += self._ingest(pending)
            pending = b""
        return added, offset - len(pending)

    def _ingest(self, line: bytes) -> int:
        if not line.startswith(b"{") or b'"certificate"' not in line:
            return 0
        try:
            entry = json.loads(line)
            if entry.get("path") not in _SIGNING_PATHS or int(entry.get("status", 0)) not in (200, 201):
                return 0
            cert = x509.load_der_x509_certificate(base64.b64decode(entry["certificate"]))
        except (ValueError, KeyError, TypeError):
            return 0
        return int(self.add(cert))

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
