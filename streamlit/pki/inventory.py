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

import contextlib
import datetime as dt
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True, slots=True)
class CertRecord:
    folder: str
    """Folder name under certs/ (e.g. 'site-001' or 'site-001.revoked.2'); '' if only the ledger has it."""
    path_text: str
    """Where the certificate's file is. Kept as text: a Path object per record cost a third of the time to
    load 100,000 kept records, and tens of MB; `path` makes one when it is asked for."""
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
    not_before_ts: float = field(init=False, compare=False, repr=False)
    not_after_ts: float = field(init=False, compare=False, repr=False)
    """The dates as POSIX seconds: comparing floats is what a table of 100,000 rows can afford."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "not_before_ts", self.not_before.timestamp())
        object.__setattr__(self, "not_after_ts", self.not_after.timestamp())

    @property
    def path(self) -> Path:
        return Path(self.path_text)

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
        left = self.not_after_ts - now.timestamp()
        if left <= 0:
            return Status.EXPIRED
        if left <= expiring_days * 86400:
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
        path_text=str(path),
        cn=cn,
        kind=kind_of(cert),
        serial=cert.serial_number,
        sans=sans_of(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        issuer=sys.intern(cert.issuer.rfc4514_string()),  # shared by every record of this CA: one copy
        has_key=has_key,
        key_type=key_type_of(cert.public_key()),
        key_id=key_id(cert.public_key()),
        authority_key_id=sys.intern(authority_key_id_of(cert)),
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
            folder, str(path), path.stem, Kind.OTHER, 0, (), epoch, epoch, "", "", has_key, str(exc),
            identity=identity, label=split_folder(folder)[1] if folder else None,
        )  # fmt: skip


_Signature = tuple[int, ...]
_Entry = tuple[_Signature, CertRecord]
_Listings = dict[str, tuple[_Signature, list[str]]]


SWEEP_SECONDS = 60.0
"""How often a snapshot looks into every folder again (for files changed by hand inside one)."""
FIRST_SWEEP_DELAY = 10.0
"""After a start with the records the last run kept: when the first sweep checks them."""


@dataclass(frozen=True)
class Snapshot:
    """The records at one look. `generation` changes exactly when the records do."""

    generation: int
    records: tuple[CertRecord, ...]
    tops: tuple[_Signature, _Signature]
    swept_at: float

    @cached_property
    def by_serial(self) -> dict[int, CertRecord]:
        """Serial -> record (the filed copy when there is one: it comes first in `records`)."""
        found: dict[int, CertRecord] = {}
        for record in self.records:
            if not record.error:
                found.setdefault(record.serial, record)
        return found


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a large table is built: records hold no cycles, and with
    100,000 of them alive every automatic collection walks them all again (most of the build's time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _signature(path: str) -> _Signature:
    try:
        stat = os.stat(path)
    except OSError:
        return ()
    return (stat.st_ino, stat.st_mtime_ns)


class Inventory:
    """The records of certs/ and the ledger, refreshed incrementally; safe to share between sessions."""

    def __init__(
        self,
        certs_dir: Path,
        ledger: Ledger | None = None,
        *,
        sweep_seconds: float = SWEEP_SECONDS,
        cache_file: Path | None = None,
        sweep_in_background: bool = False,
    ) -> None:
        self.certs_dir = certs_dir
        self.ledger = ledger
        self.parse_count = 0
        self.sweep_seconds = sweep_seconds
        self.cache_file = cache_file
        """Where the parsed records are kept across restarts (None: nowhere)."""
        self.sweep_in_background = sweep_in_background
        """Sweep in a thread of its own while the pages use the last records (the GUI), or in the call."""
        self._entries, self._listings = _load_cache(cache_file) if cache_file else ({}, {})
        self._lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._sweeping = False
        self._dirty = False
        """of_identity() changed the entries: the next snapshot is built again, whatever else changed."""
        self._snapshot: Snapshot | None = None
        self._saved_generation = 0
        self._saved_at = 0.0

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
        """Every certificate, newest first within an identity, looked at now: every folder and file is
        stat'ed, only new or changed files are parsed."""
        return list(self._refresh(sweep=True).records)

    def snapshot(self) -> Snapshot:
        """Every certificate as of a cheap look: what a page shows. certs/ itself and the ledger are looked
        at on every call; a folder is listed only when it is new (an issue, a rename); files changed by
        hand inside an existing folder are seen by the sweep, every `sweep_seconds` at most. Costs what
        changed, not the size of the fleet; the same Snapshot object while nothing did."""
        added = self.ledger.sync().added if self.ledger else 0
        tops = self._tops()
        known = self._snapshot
        due = known is None or time.monotonic() - known.swept_at >= self.sweep_seconds
        if known is not None and not added and known.tops == tops and not due and not self._dirty:
            return known
        if due and self.sweep_in_background and (known is not None or self._listings):
            # Something to show meanwhile (this run's records, or those kept by the last run): the sweep
            # runs beside the pages instead of inside one.
            self._start_sweep()
            if known is not None and not added and known.tops == tops and not self._dirty:
                return known
            return self._refresh(sweep=False)
        return self._refresh(sweep=due)

    def _start_sweep(self) -> None:
        with self._sweep_lock:
            if self._sweeping:
                return
            self._sweeping = True

        def sweep() -> None:
            try:
                self._refresh(sweep=True)
            finally:
                with self._sweep_lock:
                    self._sweeping = False

        # Right after a start the first pages come first: the sweep of what the last run kept waits a little.
        delay = FIRST_SWEEP_DELAY if self._snapshot is None else 0.0
        timer = threading.Timer(delay, sweep)
        timer.name, timer.daemon = "inventory-sweep", True
        timer.start()

    def _tops(self) -> tuple[_Signature, _Signature]:
        """certs/ and the ledger's folder: a folder added, removed or renamed changes the first."""
        return _signature(str(self.certs_dir)), _signature(str(self.ledger.ledger_dir)) if self.ledger else ()

    def _refresh(self, *, sweep: bool) -> Snapshot:
        if self.ledger:
            self.ledger.sync()
        with self._lock, gc_paused():
            tops = self._tops()
            parses = self.parse_count
            fresh: dict[str, _Entry] = {}
            listings: _Listings = {}
            for folder in _subfolders(self.certs_dir):
                listed = self._listings.get(folder.path)
                # The inode comes with the listing of certs/ for free: a folder renamed away and another
                # made under its name (a re-issue) is a new folder.
                if sweep or listed is None or listed[0][:1] != (folder.inode(),):
                    signature, paths = self._crt_paths(folder.path, listings)
                    for path in paths:
                        self._take(path, folder.name, fresh, signature)
                else:  # a folder seen before, not looked into between sweeps: its records carry over
                    listings[folder.path] = listed
                    fresh.update((path, self._entries[path]) for path in listed[1] if path in self._entries)
            if self.ledger:
                _, paths = self._crt_paths(str(self.ledger.ledger_dir), listings)
                for path in paths:
                    self._take(path, "", fresh, ())
            known = self._snapshot
            unchanged = (
                known is not None
                and not self._dirty
                and self.parse_count == parses
                and fresh.keys() == self._entries.keys()
            )
            self._dirty = False
            self._entries, self._listings = fresh, listings
            swept_at = time.monotonic() if sweep else known.swept_at if known else float("-inf")
            if unchanged and known is not None:
                self._snapshot = Snapshot(known.generation, known.records, tops, swept_at)
            else:
                generation = known.generation + 1 if known else 1
                records = tuple(_merged(record for _, record in fresh.values()))
                self._snapshot = Snapshot(generation, records, tops, swept_at)
            self._save_later()
            return self._snapshot

    def _save_later(self) -> None:
        """Keep the parsed records for the next start (called with the lock held): in the background, at
        most every SAVE_SECONDS, and only when something was parsed since the last save."""
        snapshot = self._snapshot
        if not self.cache_file or snapshot is None or snapshot.generation == self._saved_generation:
            return
        if time.monotonic() - self._saved_at < SAVE_SECONDS and self._saved_generation:
            return
        self._saved_generation, self._saved_at = snapshot.generation, time.monotonic()
        entries, listings, target = dict(self._entries), dict(self._listings), self.cache_file
        threading.Thread(target=_save_cache, args=(target, entries, listings), daemon=True).start()

    def of_identity(self, identity: str) -> list[CertRecord]:
        """Every certificate of one identity, read from disk now: what a decision under the identity's
        lock must see. Its folders are those whose name starts with the identity (its archives, and
        odd names like site-1.revoked.1 or SITE-1); the ledger's folder is listed again. A record
        belongs to the identity of its CN, whatever its folder is called."""
        if self.ledger:
            self.ledger.sync()
        with self._lock:
            found: dict[str, _Entry] = {}
            for folder in _subfolders(self.certs_dir, starting_with=identity):
                signature, paths = self._crt_paths(folder.path, self._listings, relist=True)
                for path in paths:
                    self._take(path, folder.name, found, signature)
            if self.ledger:
                _, paths = self._crt_paths(str(self.ledger.ledger_dir), self._listings, relist=True)
                for path in paths:
                    self._take(path, "", found, ())
            self._entries.update(found)
            self._dirty = True  # what a decision just read may be new to the pages: rebuild the snapshot
            records = _merged(record for _, record in found.values())
            # A folder of this identity that cannot be read may hold its certificate: it is kept, to be refused.
            return [r for r in records if r.identity == identity or (r.error and _may_belong(r.folder, identity))]

    @property
    def ledger_problem(self) -> str | None:
        """Why certificates known only from the CA's journal may be missing, if they may."""
        return self.ledger.problem if self.ledger else None

    def find(self, serial: int) -> CertRecord | None:
        """The certificate with this serial (from certs/ when it is filed there)."""
        return self.snapshot().by_serial.get(serial)


SAVE_SECONDS = 60.0
_CACHE_VERSION = 2


def _record_as_json(record: CertRecord) -> list[object]:
    return [
        record.folder, record.path_text, record.cn, record.kind.value, str(record.serial), list(record.sans),
        record.not_before.timestamp(), record.not_after.timestamp(), record.fingerprint, record.issuer,
        record.has_key, record.error, record.key_type, record.key_id, record.authority_key_id, record.identity,
        record.label.value if record.label else None,
    ]  # fmt: skip


def _record_of_json(item: list[Any]) -> CertRecord:
    (folder, path, cn, kind, serial, sans, not_before, not_after, fingerprint, issuer, has_key, error, key_type,
     key_id_, authority_key_id, identity, label) = item  # fmt: skip
    return CertRecord(
        folder, path, cn, Kind(kind), int(serial), tuple(sans), dt.datetime.fromtimestamp(not_before, dt.UTC),
        dt.datetime.fromtimestamp(not_after, dt.UTC), fingerprint, sys.intern(issuer), bool(has_key), error,
        sys.intern(key_type), key_id_, sys.intern(authority_key_id), identity, Label(label) if label else None,
    )  # fmt: skip


def _save_cache(target: Path, entries: dict[str, _Entry], listings: _Listings) -> None:
    """Write the parsed records with the signatures they were parsed at, and the folders' listings, one
    JSON line each (read back line by line: a large fleet never sits in memory twice). Atomic; a failure
    only costs a slower next start."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tmp.open("w", encoding="utf-8") as out:
            out.write(json.dumps({"version": _CACHE_VERSION}) + "\n")
            for path, (signature, record) in entries.items():
                out.write(json.dumps(["e", path, list(signature), _record_as_json(record)], separators=(",", ":")))
                out.write("\n")
            for folder, (signature, paths) in listings.items():
                out.write(json.dumps(["l", folder, list(signature), paths], separators=(",", ":")) + "\n")
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)


def _load_cache(source: Path) -> tuple[dict[str, _Entry], _Listings]:
    """The records and listings kept by the last run. A record is used only while its file's signature
    is unchanged, a listing while its folder's inode is (and the first sweep checks every file)."""
    entries: dict[str, _Entry] = {}
    listings: _Listings = {}
    try:
        with gc_paused(), source.open(encoding="utf-8") as lines:
            if json.loads(next(lines)) != {"version": _CACHE_VERSION}:
                return {}, {}
            for line in lines:
                kind, name, signature, value = json.loads(line)
                if kind == "e":
                    entries[name] = (tuple(signature), _record_of_json(value))
                elif kind == "l":
                    listings[name] = (tuple(signature), [str(path) for path in value])
    except Exception:  # any damage, of any kind, only costs a slower start
        return {}, {}
    return entries, listings


def _may_belong(folder: str, identity: str) -> bool:
    """A folder named for the identity, or its name followed by a dot (site-1.bak, site-1.revoked.1)."""
    return split_folder(folder)[0] == identity or folder.lower().startswith(f"{identity}.")


def _merged(records: Iterable[CertRecord]) -> list[CertRecord]:
    """certs/ and ledger records with each serial once (the filed copy wins), newest first per identity."""
    everything = list(records)
    filed = {r.serial for r in everything if r.folder and not r.error}
    kept = [r for r in everything if r.folder or r.serial not in filed]
    return sorted(kept, key=lambda r: (r.identity, -r.not_after.timestamp(), r.folder))


def _subfolders(certs_dir: Path, *, starting_with: str = "") -> list[os.DirEntry[str]]:
    """The folders of certs/ (those whose name starts with `starting_with`, case aside: an identity's)."""
    size = len(starting_with)
    try:
        with os.scandir(certs_dir) as entries:
            # Hidden folders are issuances in progress and the lock files (see pki.store). The name is
            # compared first: under an identity's lock, certs/ of a large fleet is read on every change.
            return [
                e for e in entries
                if (not size or e.name[:size].lower() == starting_with)
                and not is_hidden(e.name) and e.is_dir(follow_symlinks=False)
            ]  # fmt: skip
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
