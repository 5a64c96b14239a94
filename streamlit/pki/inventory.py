"""The fleet's certificates as plain records, parsed once and kept until their file changes.

Two sources. certs/ (the user's design): certs/{CN}/{CN}.crt (leaf + intermediate) and {CN}.key for
what the GUI issued. Folders of revoked certificates are renamed {CN}.revoked, expired ones replaced
by a new issue {CN}.expired, broker certificates re-issued before expiry {CN}.replaced; a second
archive of the same CN gets .2, .3 ... so nothing is ever overwritten. And the ledger (pki.ledger):
every certificate the CA signed or renewed, including those of sites enrolled by token. A serial in
both is shown once, from certs/ (which knows the folder and whether the key is here).

Streamlit reruns the page script on every click, so the scan must be cheap when nothing changed: a
folder is listed again only if its mtime changed (a file in it was added, removed or renamed), and a
.crt file is parsed again only if its (mtime, size, inode) changed (it was rewritten in place).
`parse_count` counts the parses so tests can prove it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.ledger import Ledger

ARCHIVE_SUFFIXES = ("revoked", "expired", "replaced")
_ARCHIVED = re.compile(r"^(?P<cn>.+)\.(?P<suffix>revoked|expired|replaced)(?:\.(?P<n>[0-9]+))?$")


class Status(StrEnum):
    ACTIVE = "active"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    REVOKED = "revoked"
    INVALID = "invalid"


class Kind(StrEnum):
    """The certificate's type as its extended key usage says."""

    CLIENT = "client"
    SERVER = "server"
    BOTH = "client+server"
    OTHER = "other"


@dataclass(frozen=True)
class CertRecord:
    folder: str
    """Folder name under certs/ (e.g. 'site-001' or 'site-001.revoked.2'); '' if only the CA's log has it."""
    path: Path
    cn: str
    kind: Kind
    serial: int
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint: str
    issuer: str
    has_key: bool
    error: str | None = None
    key_type: str = ""
    """'EC P-256', 'RSA 2048'... as the Issue page names key types."""

    @property
    def source(self) -> str:
        return f"certs/{self.folder}" if self.folder else "CA log"

    @property
    def archived(self) -> str | None:
        """'revoked', 'expired' or 'replaced' when the folder was archived under that name, else None."""
        match = _ARCHIVED.match(self.folder)
        return match["suffix"] if match else None

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:X}"

    def days_left(self, now: dt.datetime) -> int:
        return (self.not_after - now).days

    def status(self, now: dt.datetime, revoked_serials: frozenset[int] | None, expiring_days: int) -> Status:
        """Revoked if the CA's CRL lists it (or its folder says so), then expired, expiring, active."""
        if self.error:
            return Status.INVALID
        if self.archived == "revoked" or (revoked_serials is not None and self.serial in revoked_serials):
            return Status.REVOKED
        if self.not_after <= now:
            return Status.EXPIRED
        if self.not_after - now <= dt.timedelta(days=expiring_days):
            return Status.EXPIRING
        return Status.ACTIVE

    def pem(self) -> str:
        return self.path.read_text(encoding="ascii", errors="replace")


def kind_of(cert: x509.Certificate) -> Kind:
    try:
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return Kind.OTHER
    client = ExtendedKeyUsageOID.CLIENT_AUTH in usages
    server = ExtendedKeyUsageOID.SERVER_AUTH in usages
    if client and server:
        return Kind.BOTH
    return Kind.CLIENT if client else Kind.SERVER if server else Kind.OTHER


def sans_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(name.value) for name in names)


def key_type_of(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "EC P-256", "secp384r1": "EC P-384"}.get(key.curve.name, f"EC {key.curve.name}")
    return type(key).__name__


def common_name(cert: x509.Certificate) -> str:
    attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attributes[0].value) if attributes else ""


def parse_certificate_file(path: Path, folder: str) -> CertRecord:
    """One record from a PEM file whose first certificate is the leaf."""
    has_key = path.with_suffix(".key").exists()
    try:
        leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (ValueError, OSError, IndexError) as exc:
        epoch = dt.datetime.fromtimestamp(0, dt.UTC)
        return CertRecord(folder, path, path.stem, Kind.OTHER, 0, (), epoch, epoch, "", "", has_key, str(exc))
    return CertRecord(
        folder=folder,
        path=path,
        cn=common_name(leaf),
        kind=kind_of(leaf),
        serial=leaf.serial_number,
        sans=sans_of(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        issuer=leaf.issuer.rfc4514_string(),
        has_key=has_key,
        key_type=key_type_of(leaf),
    )


class Inventory:
    """The records of certs/ and the ledger, refreshed incrementally; safe to share between sessions."""

    def __init__(self, certs_dir: Path, ledger: Ledger | None = None) -> None:
        self.certs_dir = certs_dir
        self.ledger = ledger
        self.parse_count = 0
        self._entries: dict[str, tuple[tuple[int, int, int], CertRecord]] = {}
        self._listings: dict[str, tuple[int, list[str]]] = {}
        self._lock = threading.Lock()

    def _crt_paths(self, folder: str, listings: dict[str, tuple[int, list[str]]]) -> list[str]:
        """The .crt files of a folder, listed again only when the folder's mtime changed."""
        try:
            mtime = os.stat(folder).st_mtime_ns
        except FileNotFoundError:
            return []
        known = self._listings.get(folder)
        paths = known[1] if known and known[0] == mtime else [e.path for e in _crt_files(folder)]
        listings[folder] = (mtime, paths)
        return paths

    def _take(self, path: str, folder: str, fresh: dict[str, tuple[tuple[int, int, int], CertRecord]]) -> None:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return  # renamed or removed since the folder was listed: the next rerun sees it
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        known = self._entries.get(path)
        if known and known[0] == signature:
            fresh[path] = known
        else:
            self.parse_count += 1
            fresh[path] = (signature, parse_certificate_file(Path(path), folder))

    def records(self) -> list[CertRecord]:
        """Every certificate, newest first within a CN; parses only new or changed files."""
        if self.ledger:
            self.ledger.sync()
        with self._lock:
            fresh: dict[str, tuple[tuple[int, int, int], CertRecord]] = {}
            listings: dict[str, tuple[int, list[str]]] = {}
            for folder in _subfolders(self.certs_dir):
                for path in self._crt_paths(folder.path, listings):
                    self._take(path, folder.name, fresh)
            in_certs = {record.serial for _, record in fresh.values() if not record.error}
            if self.ledger:
                for path in self._crt_paths(str(self.ledger.ledger_dir), listings):
                    self._take(path, "", fresh)
            self._entries = fresh
            self._listings = listings
            records = [record for _, record in fresh.values() if record.folder or record.serial not in in_certs]
        return sorted(records, key=lambda r: (r.cn.lower(), -r.not_after.timestamp(), r.folder))

    @property
    def ledger_problem(self) -> str | None:
        """Why certificates known only from the CA's journal may be missing, if they may."""
        return self.ledger.problem if self.ledger else None

    def of_cn(self, cn: str) -> list[CertRecord]:
        """Every certificate of one common name, from both sources."""
        return [r for r in self.records() if r.cn == cn]

    def current(self, cn: str) -> CertRecord | None:
        """The certificate in the live folder certs/{cn}/, if any."""
        return next((r for r in self.records() if r.folder == cn), None)


def _subfolders(certs_dir: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(certs_dir) as entries:
            # Hidden folders are staging areas of an issuance in progress.
            return [e for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def _crt_files(folder: str) -> list[os.DirEntry[str]]:
    try:
        entries = os.scandir(folder)
    except FileNotFoundError:
        return []
    with entries:
        # ca.crt is the root that a bundle may carry next to the certificate, not a certificate of the fleet.
        return [e for e in entries if e.name.endswith(".crt") and e.name != "ca.crt" and e.is_file()]


def archive_folder_name(certs_dir: Path, cn: str, suffix: str) -> str:
    """The first free name among {cn}.{suffix}, {cn}.{suffix}.2, ...; never an existing one."""
    if suffix not in ARCHIVE_SUFFIXES:
        raise ValueError(f"unknown archive suffix {suffix!r}")
    name = f"{cn}.{suffix}"
    number = 1
    while (certs_dir / name).exists():
        number += 1
        name = f"{cn}.{suffix}.{number}"
    return name
