"""Every certificate the CA has signed or renewed, kept as one PEM file per serial, and its last CRL.

The source is the issuance journal: the JSON request lines of step-ca that carry a certificate
(/sign, /renew, /rekey), which scripts/start-ca.sh appends to $PKI_CA_LOG. That is how app-pki knows
certificates whose keys never came near the server: sites enrolled by token and certificates renewed
by the sites themselves, each renewal a new serial. The GUI also adds what it has just had signed,
the moment step returns, so the ledger knows it even before the journal's line arrives.

The journal may be rotated or lost, so what it says is copied into the ledger folder as it is read
({SERIAL-HEX}.crt, never rewritten, never deleted) and the read position is remembered (pki.tail),
so each sync reads only what was appended since the last one, rotations included. The last CRL
fetched from the CA is kept too (.state/crl.der), so pages can say what the CA last said when it is down.
The journal also shows each enrolment token the CA spent (its claims without its signature: no usable
token): tokens/{REF} holds the serial it gave, or nothing when the CA signed nothing with it (a
cancelled token), REF being a hash of its id (token_ref_of).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pki.cadb import CADatabase, SpentToken
from pki.tail import Position, read_appended

_SIGNING_PATHS = ("/sign", "/renew", "/rekey", "/1.0/sign", "/1.0/renew", "/1.0/rekey")
_TOKEN_PATHS = ("/sign", "/1.0/sign")
_TOKEN_REF = re.compile(r"[0-9a-f]{32}")
ENROLMENT_TOKEN_SECONDS = 3600
"""Enrolment tokens live an hour or more; the signing tokens of single requests, minutes."""
UNPARSED = "unparsed"
"""start-ca.sh's reference for a token whose id it could not read."""


def token_id_of(token: str) -> str:
    """The "jti" claim of a token (read, not verified: a token this GUI made), or ""."""
    try:
        payload = "".join(token.split()).split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["jti"])
    except (IndexError, ValueError, KeyError, TypeError):
        return ""


def token_ref_of(token: str) -> str:
    """What app-pki names a token by: the first 32 hex digits of the SHA-256 of its "jti" claim (read,
    not verified: the token is one this GUI just made). Not the id itself: step-ca spends a token by its
    id before it checks the signature, so whoever knows an unused token's id can burn it. scripts/start-ca.sh
    names the tokens the CA spent the same way (from their claims in the journal)."""
    token_id = token_id_of(token)
    return hashlib.sha256(token_id.encode()).hexdigest()[:32] if token_id else ""


@dataclass(frozen=True)
class SpentTokens:
    by_ref: dict[str, str]
    """Token reference -> serial (hex) of the certificate the CA signed with it, or "" for none."""
    unnamed: list[tuple[str, dt.datetime, str]]
    """(CN, signed at, serial) of certificates signed with a token whose id could not be read."""


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
    def __init__(
        self,
        ca_log: Path | None,
        ledger_dir: Path,
        database: CADatabase | None = None,
        *,
        expect_database: bool = False,
    ) -> None:
        self.ca_log = None if database is not None else ca_log
        self._no_database = expect_database and database is None
        """The CA keeps its records in PostgreSQL but this was given none: one replica's journal is not all."""
        self.ledger_dir = ledger_dir
        self.database = database
        """The CA's shared PostgreSQL database (replicas): then the source instead of a journal."""
        self._known: set[int] = set()
        """Serials of the database known to be in the ledger folder (this process)."""
        self._counted: dict[str, int] = {}
        """Rows of x509_certs / used_ott at the last full look: the same count means nothing new."""
        self._tokens_seen: set[str] = set()
        """Ids of the spent tokens this process looked at."""
        self._waiting: dict[str, tuple[str, str, float, float]] = {}
        """Spent enrolment tokens whose certificate is not in .by-cn yet: id -> (ref, site, iat, exp)."""
        self._by_cn_file = ledger_dir / ".by-cn"
        """With a database: "CN NOT-BEFORE SERIAL" per certificate the ledger got, whichever process
        copied it (the GUI, the alerts runner), to match spent enrolment tokens with."""
        state = ledger_dir / ".state"
        # The ledger's own bookkeeping has a folder of its own: writing it leaves the ledger folder's mtime alone,
        # which then changes with its certificates only (a restarted GUI shows what it kept while it does not).
        self._state_file = state / "position.json"
        self._crl_file = state / "crl.der"
        self._before = {self._state_file: ledger_dir / ".position.json", self._crl_file: ledger_dir / ".crl.der"}
        """Where earlier versions kept them: read when the new place has nothing yet."""
        self._lock = threading.Lock()
        self._problem: str | None = None
        self.unreadable_lines = 0
        """Journal lines with a certificate that could not be read (since this process started)."""

    @property
    def problem(self) -> str | None:
        """Why certificates known only from the journal may be missing: it cannot be read, or lines of it."""
        if self._problem:
            return self._problem
        if self._no_database:
            return (
                "The CA keeps its records in PostgreSQL (replicas), but PKI_CA_DB_URL is not set: certificates "
                "another replica signed are missing here. Set PKI_CA_DB_URL and PKI_CA_DB_PASSWORD_FILE."
            )
        if self.unreadable_lines:
            return (
                f"{self.unreadable_lines} line(s) of the CA's issuance journal {self.ca_log} carry a certificate "
                "that cannot be read: look at those lines (the CA's log has them too)."
            )
        return None

    def _read(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return self._before[path].read_bytes()

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(path, data)

    def _load_position(self) -> Position:
        try:
            state = json.loads(self._read(self._state_file))
            return Position(int(state["inode"]), int(state["offset"]), base64.b64decode(state.get("head", "")))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return Position()

    def _save_position(self, position: Position) -> None:
        state = {"inode": position.inode, "offset": position.offset, "head": base64.b64encode(position.head).decode()}
        self._write(self._state_file, json.dumps(state).encode())

    def sync(self) -> SyncResult:
        """Copy the certificates logged since the last sync into the ledger. Cheap when nothing is new."""
        if self.database is not None:
            return SyncResult(self._sync_database(self.database), 0)
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
                self._problem = f"The CA's issuance journal {self.ca_log} does not exist."
                return SyncResult(0, 0)
            except OSError as exc:
                self._problem = f"The CA's issuance journal {self.ca_log} cannot be read: {exc.strerror or exc}."
                return SyncResult(sum(added), before.offset)
            self._problem = None
            return SyncResult(sum(added), after.offset)

    def _ingest(self, line: bytes) -> int:
        if not line.startswith(b"{") or (b'"certificate"' not in line and b'"ott-claims"' not in line):
            return 0
        try:
            entry = json.loads(line)
            path, status = entry.get("path"), int(entry.get("status", 0))
            cert = None
            if "certificate" in entry and path in _SIGNING_PATHS and status in (200, 201):
                cert = x509.load_der_x509_certificate(base64.b64decode(entry["certificate"]))
        except (ValueError, KeyError, TypeError):
            if b'"certificate"' in line:  # a certificate the CA signed that cannot be known: say so, for good
                self.unreadable_lines += 1
            return 0
        claims = entry.get("ott-claims")
        token_ref = UNPARSED if claims == UNPARSED else token_ref_of(f"{claims}.") if isinstance(claims, str) else None
        # The CA marks a token used before it checks the request: 201 signed with it, 403 spent with nothing
        # signed. (start-ca.sh journals no other answer: 400/401 did not spend it, 500 may not have.)
        if token_ref and path in _TOKEN_PATHS and status in (201, 403):
            self._spend(token_ref, cert)
        return int(self.add(cert)) if cert is not None else 0

    def _spend(self, token_ref: str, cert: x509.Certificate | None) -> None:
        """Remember that the CA spent token `token_ref`: tokens/{REF} holds the serial it signed with it, or
        nothing. A certificate signed with a token the journal could not name is kept as
        tokens/unparsed-{SERIAL}: "{SERIAL} {CN} {signed at}", for the token states to attribute."""
        folder = self.ledger_dir / "tokens"
        if token_ref == UNPARSED and cert is not None:
            target = folder / f"unparsed-{cert.serial_number:X}"
            names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            cn = str(names[0].value) if names else ""
            content = f"{cert.serial_number:X} {cn} {cert.not_valid_before_utc.isoformat()}"
        elif _TOKEN_REF.fullmatch(token_ref):
            target = folder / token_ref
            content = f"{cert.serial_number:X}" if cert is not None else ""
            with contextlib.suppress(OSError):
                if target.read_text().strip() or cert is None:
                    return  # known already; only a certificate may fill in an empty "spent" mark
        else:
            return
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(target, content.encode())

    def _sync_database(self, database: CADatabase) -> int:
        """Copy the certificates the CA's database has and the ledger has not (all replicas' alike)."""
        with self._lock:
            try:
                count = database.count("x509_certs")
                if count == self._counted.get("x509_certs"):
                    return 0
                serials = database.serials()
                new = [s for s in serials if s not in self._known]
                missing = [s for s in new if not (self.ledger_dir / f"{s:X}.crt").exists()]
                self._known.update(set(new) - set(missing))
                added = 0
                for der in database.certificates(missing):
                    try:
                        cert = x509.load_der_x509_certificate(der)
                    except ValueError:
                        self.unreadable_lines += 1
                        continue
                    added += int(self.add(cert))
                    self._known.add(cert.serial_number)
                self._counted["x509_certs"] = count
            except OSError as exc:  # DatabaseError included
                self._problem = str(exc)
                return 0
            self._problem = None
            return added

    def _spent_in_database(self, database: CADatabase) -> None:
        """Enrolment tokens the CA's database shows spent, each with the certificate of its site signed
        while it was valid (from .by-cn, which every process fills). A spent token with no such
        certificate waits (in this process) for it; only the GUI's own cancel (confirm_spent) marks one
        spent without a certificate. Tokens living under an hour are signing tokens: left out."""
        try:
            count = database.count("used_ott")
            if count != self._counted.get("used_ott"):
                for token in database.spent_tokens():
                    if token.token_id not in self._tokens_seen:
                        self._tokens_seen.add(token.token_id)
                        self._wait_for_certificate(token)
                self._counted["used_ott"] = count
        except OSError as exc:
            self._problem = str(exc)
            return
        if not self._waiting:
            return
        self._sync_database(database)  # the certificate of a token just spent, if it is stored by now
        signed = self._signed_by_cn()
        for token_id, (ref, site, issued, expires) in list(self._waiting.items()):
            match = sorted(s for s in signed.get(site, []) if issued - 60 <= s[0] <= expires + 60)
            if match:
                self._mark_spent(ref, match[0][1])
            if match or (self.ledger_dir / "tokens" / ref).exists():
                del self._waiting[token_id]

    def _wait_for_certificate(self, token: SpentToken) -> None:
        try:
            claims = json.loads(base64.urlsafe_b64decode(token.claims + "=" * (-len(token.claims) % 4)))
            site, issued, expires = str(claims["sub"]), float(claims["iat"]), float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            return
        ref = hashlib.sha256(token.token_id.encode()).hexdigest()[:32]
        if expires - issued >= ENROLMENT_TOKEN_SECONDS and not (self.ledger_dir / "tokens" / ref).exists():
            self._waiting[token.token_id] = (ref, site, issued, expires)

    def _signed_by_cn(self) -> dict[str, list[tuple[float, str]]]:
        signed: dict[str, list[tuple[float, str]]] = {}
        try:
            lines = self._by_cn_file.read_text().splitlines()
        except OSError:
            return signed
        for line in lines:
            parts = line.split(" ")
            if len(parts) == 3:
                with contextlib.suppress(ValueError):
                    signed.setdefault(parts[0], []).append((float(parts[1]), parts[2]))
        return signed

    def confirm_spent(self, token: str, token_ref: str, serial: str = "") -> bool:
        """Whether the CA's records show the GUI's own `token` spent (a cancel): with a database the token
        is looked up by its id and marked spent at once (with `serial` if the CA signed); with a journal,
        its line must have arrived."""
        if self.database is None:
            return token_ref in self.spent_tokens().by_ref
        token_id = token_id_of(token)
        try:
            if not token_id or not self.database.token_spent(token_id):
                return False
        except OSError as exc:
            self._problem = str(exc)
            return False
        target = self.ledger_dir / "tokens" / token_ref
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(target, serial.encode())
        return True

    def _mark_spent(self, token_ref: str, serial: str) -> None:
        target = self.ledger_dir / "tokens" / token_ref
        with contextlib.suppress(OSError):
            if target.read_text().strip() or not serial:
                return
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(target, serial.encode())

    def spent_tokens(self) -> SpentTokens:
        """Every enrolment token the CA's journal (or database) shows spent (see `_spend`)."""
        if self.database is not None:
            self._spent_in_database(self.database)
        self.sync()
        folder = self.ledger_dir / "tokens"
        spent, unnamed = {}, []
        try:
            names = [entry.name for entry in os.scandir(folder)]
        except FileNotFoundError:
            names = []
        for name in names:
            try:
                content = (folder / name).read_text().strip()
            except OSError:
                continue
            if _TOKEN_REF.fullmatch(name):
                spent[name] = content
            elif name.startswith("unparsed-") and len(parts := content.split(" ")) == 3:
                with contextlib.suppress(ValueError):
                    unnamed.append((parts[1], dt.datetime.fromisoformat(parts[2]), parts[0]))
        return SpentTokens(spent, unnamed)

    def add(self, cert: x509.Certificate) -> bool:
        """Keep `cert` as {SERIAL}.crt unless it is there already; True if it was new."""
        target = self.ledger_dir / f"{cert.serial_number:X}.crt"
        if target.exists():
            return False
        self.ledger_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new(target, cert.public_bytes(serialization.Encoding.PEM))
        if self.database is not None:
            names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            if names:  # one short line, appended whole (O_APPEND): processes never mix theirs up
                cn = str(names[0].value).replace(" ", "_")  # a site's CN has no blank; keep the line's three fields
                line = f"{cn} {cert.not_valid_before_utc.timestamp():.0f} {cert.serial_number:X}\n"
                fd = os.open(self._by_cn_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
        return True

    def keep_crl(self, der: bytes) -> None:
        """Remember the CA's latest CRL (written only when it changed)."""
        if self.last_crl() != der:
            self._write(self._crl_file, der)

    def last_crl(self) -> bytes | None:
        """The CRL last kept, or None."""
        try:
            return self._read(self._crl_file)
        except OSError:
            return None
