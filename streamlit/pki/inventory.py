"""The fleet's certificates as plain records, parsed once and kept until their file changes.

Two sources. certs/ (the user's design): certs/{identity}/{identity}.crt (leaf + intermediate) and
its .key, for what the GUI issued, and the archived folders of pki.folders. And the ledger
(pki.ledger): every certificate the CA signed or renewed, including those of sites enrolled by token.
A serial in both is shown once, from certs/ (which knows the folder and whether the key is here).

Streamlit reruns the page script on every click, so the scan must be cheap when nothing changed: a
folder is listed again only if its inode or mtime changed, a .crt file in certs/ is parsed again only
if its (mtime, size, inode) changed, and a ledger file (written once, never rewritten) is parsed
once. `parse_count` counts the parses so tests can prove it. Decisions about one identity use
`of_identity`, which reads that identity's folders and the ledger's listing from disk every time.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki.folders import Label, is_hidden, split_folder
from pki.keys import key_id, key_type_of
from pki.ledger import Ledger
from pki.model import Kind, Status, identity_of


@dataclass(frozen=True)
class IssuerId:
    """This CA's intermediate, as the certificates it signs name it (to tell foreign ones apart)."""

    key_id: str
    """Its subject key identifier, hex: the authority key identifier of every certificate it signs."""
    name: str

    @classmethod
    def of(cls, intermediate: x509.Certificate) -> IssuerId:
        try:
            ski = intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
        except x509.ExtensionNotFound:
            ski = ""
        return cls(ski, intermediate.subject.rfc4514_string())


@dataclass(frozen=True)
class CertRecord:
    folder: str
    """Folder name under certs/ (e.g. 'site-001' or 'site-001.revoked.2'); '' if only the ledger has it."""
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
    key_id: str = ""
    """SHA-256 of the public key: shared by a certificate, its renewals and its private key."""
    authority_key_id: str = ""
    """Which CA key signed it (hex), '' if the certificate does not say."""
    identity: str = ""
    """The site or host it belongs to: the CN folded (see pki.model.identity_of)."""
    label: Label | None = None
    """What its folder's name says became of it ('revoked', 'replaced'...); None for a live folder or
    the ledger. Only informative: the status comes from the CA."""

    @property
    def source(self) -> str:
        return f"certs/{self.folder}" if self.folder else "CA journal"

    @property
    def is_live(self) -> bool:
        """In the identity's live folder certs/{identity}/ (a folder of any other name is not)."""
        return self.folder == self.identity

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:X}"

    def days_left(self, now: dt.datetime) -> int:
        return (self.not_after - now).days

    def issued_by(self, issuer: IssuerId) -> bool:
        if self.authority_key_id and issuer.key_id:
            return self.authority_key_id == issuer.key_id
        return self.issuer == issuer.name

    def status(
        self,
        now: dt.datetime,
        revoked_serials: frozenset[int] | None,
        expiring_days: int,
        issuer: IssuerId | None = None,
    ) -> Status:
        """Foreign if another CA signed it, revoked if this CA's CRL lists it, then expired, expiring,
        active. Where it is filed plays no part. With no CRL (None) nothing can be called revoked."""
        if self.error:
            return Status.INVALID
        if issuer is not None and not self.issued_by(issuer):
            return Status.FOREIGN
        if revoked_serials is not None and self.serial in revoked_serials:
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


def authority_key_id_of(cert: x509.Certificate) -> str:
    try:
        value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return ""
    return value.hex() if value else ""


def common_name(cert: x509.Certificate) -> str:
    attributes = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attributes[0].value if attributes else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def record_of(cert: x509.Certificate, path: Path, folder: str, has_key: bool) -> CertRecord:
    cn = common_name(cert)
    return CertRecord(
        folder=folder,
        path=path,
        cn=cn,
        kind=kind_of(cert),
        serial=cert.serial_number,
        sans=sans_of(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        issuer=cert.issuer.rfc4514_string(),
        has_key=has_key,
        key_type=key_type_of(cert.public_key()),
        key_id=key_id(cert.public_key()),
        authority_key_id=authority_key_id_of(cert),
        identity=identity_of(cn),
        label=split_folder(folder)[1] if folder else None,
    )


def parse_certificate_file(path: Path, folder: str) -> CertRecord:
    """One record from a PEM file whose first certificate is the leaf; an unreadable one is an INVALID
    record, never an exception (one bad file must not break every page)."""
    try:
        has_key = path.with_suffix(".key").exists()
    except OSError:
        has_key = False
    try:
        return record_of(x509.load_pem_x509_certificates(path.read_bytes())[0], path, folder, has_key)
    except (ValueError, OSError, IndexError, UnsupportedAlgorithm) as exc:
        epoch = dt.datetime.fromtimestamp(0, dt.UTC)
        identity = split_folder(folder)[0] if folder else identity_of(path.stem)
        return CertRecord(
            folder, path, path.stem, Kind.OTHER, 0, (), epoch, epoch, "", "", has_key, str(exc),
            identity=identity, label=split_folder(folder)[1] if folder else None,
        )  # fmt: skip


_Signature = tuple[int, ...]
_Entry = tuple[_Signature, CertRecord]
_Listings = dict[str, tuple[_Signature, list[str]]]


class Inventory:
    """The records of certs/ and the ledger, refreshed incrementally; safe to share between sessions."""

    def __init__(self, certs_dir: Path, ledger: Ledger | None = None) -> None:
        self.certs_dir = certs_dir
        self.ledger = ledger
        self.parse_count = 0
        self._entries: dict[str, _Entry] = {}
        self._listings: _Listings = {}
        self._lock = threading.Lock()

    def _crt_paths(self, folder: str, listings: _Listings, *, relist: bool = False) -> tuple[_Signature, list[str]]:
        """The folder's signature (inode, mtime) and its .crt files, listed again only when that changed."""
        try:
            stat = os.stat(folder)
        except FileNotFoundError:
            return (), []
        signature = (stat.st_ino, stat.st_mtime_ns)
        known = self._listings.get(folder)
        paths = known[1] if known and known[0] == signature and not relist else _crt_files(folder)
        listings[folder] = (signature, paths)
        return signature, paths

    def _take(self, path: str, folder: str, fresh: dict[str, _Entry], folder_signature: _Signature) -> None:
        """Reuse the record of `path` if neither the file nor its folder changed (a .key added or
        removed changes the folder), else parse it. Ledger files are written once: never stat'ed."""
        known = self._entries.get(path)
        if not folder and known:
            fresh[path] = known
            return
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return  # renamed or removed since the folder was listed: the next rerun sees it
        except OSError:  # cannot be looked at: an INVALID record that says why, every time
            self.parse_count += 1
            fresh[path] = ((), parse_certificate_file(Path(path), folder))
            return
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino, *folder_signature)
        if known and known[0] == signature:
            fresh[path] = known
        else:
            self.parse_count += 1
            fresh[path] = (signature, parse_certificate_file(Path(path), folder))

    def records(self) -> list[CertRecord]:
        """Every certificate, newest first within an identity; parses only new or changed files."""
        if self.ledger:
            self.ledger.sync()
        with self._lock:
            fresh: dict[str, _Entry] = {}
            listings: _Listings = {}
            for folder in _subfolders(self.certs_dir):
                signature, paths = self._crt_paths(folder.path, listings)
                for path in paths:
                    self._take(path, folder.name, fresh, signature)
            if self.ledger:
                _, paths = self._crt_paths(str(self.ledger.ledger_dir), listings)
                for path in paths:
                    self._take(path, "", fresh, ())
            self._entries = fresh
            self._listings = listings
            return _merged(record for _, record in fresh.values())

    def of_identity(self, identity: str) -> list[CertRecord]:
        """Every certificate of one identity, read from disk now: what a decision under the identity's
        lock must see. Its folders are those whose name starts with the identity (its archives, and
        odd names like site-1.revoked.1 or SITE-1); the ledger's folder is listed again. A record
        belongs to the identity of its CN, whatever its folder is called."""
        if self.ledger:
            self.ledger.sync()
        with self._lock:
            found: dict[str, _Entry] = {}
            for folder in _subfolders(self.certs_dir):
                if folder.name.lower().startswith(identity):
                    signature, paths = self._crt_paths(folder.path, self._listings, relist=True)
                    for path in paths:
                        self._take(path, folder.name, found, signature)
            if self.ledger:
                _, paths = self._crt_paths(str(self.ledger.ledger_dir), self._listings, relist=True)
                for path in paths:
                    self._take(path, "", found, ())
            self._entries.update(found)
            records = _merged(record for _, record in found.values())
            # A folder of this identity that cannot be read may hold its certificate: it is kept, to be refused.
            return [r for r in records if r.identity == identity or (r.error and _may_belong(r.folder, identity))]

    @property
    def ledger_problem(self) -> str | None:
        """Why certificates known only from the CA's journal may be missing, if they may."""
        return self.ledger.problem if self.ledger else None

    def find(self, serial: int) -> CertRecord | None:
        """The certificate with this serial (from certs/ when it is filed there)."""
        return next((r for r in self.records() if r.serial == serial and not r.error), None)


def _may_belong(folder: str, identity: str) -> bool:
    """A folder named for the identity, or its name followed by a dot (site-1.bak, site-1.revoked.1)."""
    return split_folder(folder)[0] == identity or folder.lower().startswith(f"{identity}.")


def _merged(records: Iterable[CertRecord]) -> list[CertRecord]:
    """certs/ and ledger records with each serial once (the filed copy wins), newest first per identity."""
    everything = list(records)
    filed = {r.serial for r in everything if r.folder and not r.error}
    kept = [r for r in everything if r.folder or r.serial not in filed]
    return sorted(kept, key=lambda r: (r.identity, -r.not_after.timestamp(), r.folder))


def _subfolders(certs_dir: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(certs_dir) as entries:
            # Hidden folders are issuances in progress and the lock files (see pki.store).
            return [e for e in entries if not is_hidden(e.name) and e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _crt_files(folder: str) -> list[str]:
    """The certificate files of a folder. A folder that cannot be listed (permissions) stands for itself
    with its expected file name, which then reads as an INVALID record saying why: never a silent gap."""
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError:
        return [os.path.join(folder, f"{split_folder(os.path.basename(folder))[0]}.crt")]
    with entries:
        # ca.crt is the root that a bundle may carry next to the certificate, not a certificate of the fleet.
        return [e.path for e in entries if e.name.endswith(".crt") and e.name != "ca.crt" and e.is_file()]
