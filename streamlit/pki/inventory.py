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

import bisect
import contextlib
import datetime as dt
import functools
import gc
import marshal
import operator
import os
import struct
import sys
import threading
import time
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, compress
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple

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


class CertRecord(NamedTuple):
    """One certificate. A named tuple: a restart makes 100,000 of them from the kept records, and a frozen
    dataclass costs ten times as much to make. Strings equal to one another (the CN, its identity, the live
    folder, a SAN naming the CN, the path) are one object, which the kept records preserve."""

    folder: str
    """Folder name under certs/ (e.g. 'site-001' or 'site-001.revoked.2'); '' if only the ledger has it."""
    path_text: str
    """Where the certificate's file is. Kept as text: a Path object per record cost a third of the time to
    load 100,000 kept records, and tens of MB; `path` makes one when it is asked for."""
    cn: str
    kind: Kind
    serial: int
    sans: tuple[str, ...]
    not_before_ts: float
    not_after_ts: float
    """The dates as POSIX seconds: comparing floats is what a table of 100,000 rows can afford (and two
    datetimes per record cost 10 MB); `not_before` and `not_after` make the datetimes when asked."""
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
    def not_before(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.not_before_ts, dt.UTC)

    @property
    def not_after(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.not_after_ts, dt.UTC)

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
        return int((self.not_after_ts - now.timestamp()) // 86400)

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
        return self.status_at(now.timestamp(), revoked_serials, expiring_days, issuer)

    def status_at(
        self,
        now_ts: float,
        revoked_serials: frozenset[int] | None,
        expiring_days: int,
        issuer: IssuerId | None = None,
    ) -> Status:
        """`status` with the time as POSIX seconds."""
        return statuses_at((self,), now_ts, revoked_serials, expiring_days, issuer)[0]

    def pem(self) -> str:
        return self.path.read_text(encoding="ascii", errors="replace")

    def fingerprint(self) -> str:
        """SHA-256 of the certificate (DER, hex), read from its file when shown: not kept for 100,000
        records. '' when the file no longer holds this certificate."""
        try:
            cert = x509.load_pem_x509_certificates(self.path.read_bytes())[0]
        except (ValueError, OSError, IndexError):
            return ""
        return cert.fingerprint(hashes.SHA256()).hex() if cert.serial_number == self.serial else ""


def statuses_at(
    records: Iterable[CertRecord],
    now_ts: float,
    revoked_serials: frozenset[int] | None,
    expiring_days: int,
    issuer: IssuerId | None = None,
) -> list[Status]:
    """CertRecord.status_at of every record, in one loop without a call per record: a table of 100,000."""
    on_crl = revoked_serials or frozenset()
    window = expiring_days * 86400
    this_ca = issuer.key_id if issuer else ""
    invalid, foreign, revoked, expired, expiring, active = (
        Status.INVALID, Status.FOREIGN, Status.REVOKED, Status.EXPIRED, Status.EXPIRING, Status.ACTIVE
    )  # fmt: skip
    return [
        invalid if r.error
        # The authority key identifier of this CA's certificates is its own (one shared string): the usual
        # case is settled by that comparison, any other by issued_by.
        else foreign if issuer and (r.authority_key_id != this_ca or not this_ca) and not r.issued_by(issuer)
        else revoked if r.serial in on_crl
        else expired if r.not_after_ts - now_ts <= 0
        else expiring if r.not_after_ts - now_ts <= window
        else active
        for r in records
    ]  # fmt: skip


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


def record_of(cert: x509.Certificate, path: str, folder: str, has_key: bool) -> CertRecord:
    cn = common_name(cert)
    identity = _same(identity_of(cn), cn)
    return CertRecord(
        folder=_same(folder, identity),
        path_text=path,
        cn=cn,
        kind=kind_of(cert),
        serial=cert.serial_number,
        sans=tuple(_same(name, cn) for name in sans_of(cert)),
        not_before_ts=cert.not_valid_before_utc.timestamp(),
        not_after_ts=cert.not_valid_after_utc.timestamp(),
        issuer=sys.intern(cert.issuer.rfc4514_string()),  # shared by every record of this CA: one copy
        has_key=has_key,
        key_type=sys.intern(key_type_of(cert.public_key())),  # a few names for the whole fleet
        key_id=key_id(cert.public_key()),
        authority_key_id=sys.intern(authority_key_id_of(cert)),
        identity=identity,
        label=split_folder(folder)[1] if folder else None,
    )


def _same(text: str, other: str) -> str:
    """`other` when the two are equal: one string object where there would be two."""
    return other if text == other else text


def parse_certificate_file(path: str | Path, folder: str) -> CertRecord:
    """One record from a PEM file whose first certificate is the leaf; an unreadable one is an INVALID
    record, never an exception (one bad file must not break every page)."""
    path_text = os.fspath(path)
    has_key = os.path.exists(f"{os.path.splitext(path_text)[0]}.key")  # False also when it cannot be looked at
    try:
        with open(path_text, "rb") as source:
            return record_of(x509.load_pem_x509_certificates(source.read())[0], path_text, folder, has_key)
    except (ValueError, OSError, IndexError, UnsupportedAlgorithm) as exc:
        stem = Path(path_text).stem
        identity = split_folder(folder)[0] if folder else identity_of(stem)
        return CertRecord(
            folder, path_text, stem, Kind.OTHER, 0, (), 0.0, 0.0, "", has_key, str(exc),
            identity=identity, label=split_folder(folder)[1] if folder else None,
        )  # fmt: skip


_Signature = bytes
"""What identifies an unchanged file or folder: its stat fields packed (bytes are a fifth of a tuple of ints)."""
_Entry = tuple[_Signature, CertRecord]
_Listings = dict[str, tuple[_Signature, tuple[str, ...]]]
_Tops = tuple[tuple[int, ...], tuple[int, ...]]
_FOLDER = struct.Struct("<Qq")
"""A folder's inode and mtime (ns)."""
_FILE = struct.Struct("<qQQ")
"""A file's mtime (ns), size and inode; its folder's signature follows."""


SWEEP_SECONDS = 60.0
"""How often a snapshot looks into every folder again (for files changed by hand inside one)."""
FIRST_SWEEP_DELAY = 30.0
"""After a start with the records the last run kept: when the first sweep checks them."""


@dataclass(frozen=True)
class Snapshot:
    """The records at one look. `generation` changes exactly when the records do."""

    generation: int
    records: tuple[CertRecord, ...]
    """In the order of identities, latest expiry first within one (see _merged): pki.fleet bisects it."""
    tops: _Tops
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


def _signature(path: str) -> tuple[int, ...]:
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
        self._unread, self._shown = _load_cache(cache_file) if cache_file else ([], None)
        self._entries: dict[str, _Entry] = {}
        """Path -> (its signature, its record): the files known, and what they held."""
        self._listings: _Listings = {}
        """Folder -> (its signature, its .crt files)."""
        self._lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._sweeping = False
        self._dirty = False
        """of_identity() changed the entries: the next snapshot is built again, whatever else changed."""
        self._snapshot: Snapshot | None = None
        self._look_trusted = False
        """The snapshot's look at certs/ came over SETTLED_NS after its last change (see _settled)."""
        self._ledger_files: frozenset[str] = frozenset()
        """The ledger's files in the snapshot shown at a start, until the kept listings are read."""
        self._grown: dict[str, _Entry] = {}
        """The ledger's files parsed by _ledger_grown, until the kept listings are read (then entries)."""
        self._first_sweep_waits = bool(self._unread)
        """Records kept by the last run are shown: the first sweep that checks them waits FIRST_SWEEP_DELAY."""
        kept = sum(len(records) for _, _, records in self._unread)
        self._kept = (0, kept, self._shown.tops if self._shown else None) if kept else None
        """(parses, records, trusted look) of the cache file as read, written or waiting to be written: a start
        that parsed nothing new, at the same look, does not write the same 100,000 records again."""
        self._saved_at = 0.0
        self._to_save: tuple[dict[str, _Entry], _Listings, _Shown | None] | None = None
        """What the pending write will keep: the latest state handed to _save_later before it runs."""
        self._save_lock = threading.Lock()
        """One write of the cache file at a time."""

    def _crt_paths(
        self, folder: str, listings: _Listings, *, relist: bool = False
    ) -> tuple[_Signature, tuple[str, ...]]:
        """The folder's signature (inode, mtime) and its .crt files, listed again only when that changed."""
        try:
            stat = os.stat(folder)
        except FileNotFoundError:
            return b"", ()
        signature = _FOLDER.pack(stat.st_ino, stat.st_mtime_ns)
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
            fresh[path] = (b"", parse_certificate_file(path, folder))
            return
        signature = _FILE.pack(stat.st_mtime_ns, stat.st_size, stat.st_ino) + folder_signature
        if known and known[0] == signature:
            fresh[path] = known
        else:
            self.parse_count += 1
            fresh[path] = (signature, parse_certificate_file(path, folder))

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
        if self._shown is not None:
            self._adopt_shown(tops)
        known = self._snapshot
        due = known is None or time.monotonic() - known.swept_at >= self.sweep_seconds
        if known is not None and not added and known.tops == tops and not due and not self._dirty:
            return known
        if due and self.sweep_in_background and (known is not None or self._listings or self._unread):
            # Something to show meanwhile (this run's records, or those kept by the last run): the sweep
            # runs beside the pages instead of inside one.
            self._start_sweep()
            if known is not None and not added and known.tops == tops and not self._dirty:
                return known
            return self._refresh(sweep=False)
        return self._refresh(sweep=due)

    def _read_kept(self) -> None:
        """The listings and file signatures kept by the last run, and the entries they make with the records:
        read when first needed (by the first sweep, a change, a decision), not before the first page, which
        needs only the snapshot. Anything wrong in them (never seen: the frame's CRC matched) and they are
        not used: every folder is looked at again."""
        unread, self._unread = self._unread, []
        grown, self._grown, self._ledger_files = self._grown, {}, frozenset()
        if not unread:
            return
        listings: _Listings = {}
        entries: dict[str, _Entry] = {}
        try:
            for paths, rest, records in unread:
                parts, more, signatures = marshal.loads(rest)  # noqa: S302
                if parts:
                    folders, folder_signatures, listed = parts
                    listings.update(zip(folders, zip(folder_signatures, listed, strict=True), strict=True))
                for folder, signature, listed in more:
                    listings[folder] = (signature, listings[folder][1] + listed)
                entries.update(zip(paths, zip(signatures, records, strict=True), strict=True))
            entries.update(grown)  # the ledger's files parsed since the start (_ledger_grown): not parsed again
        except Exception:
            self._look_trusted = False  # no listing to carry over: the next refresh looks at every folder
            return
        self._listings, self._entries = listings, entries  # read before anything else uses either

    def _adopt_shown(self, tops: _Tops) -> None:
        """At a start: the snapshot the last run kept, as it was, if certs/ is as it was then (nothing added,
        removed or renamed since): no look into 100,000 folders before the first page. If the ledger's folder
        changed (sites renewed meanwhile), the refresh that follows looks at it alone. Files changed inside a
        folder meanwhile are seen by the first sweep, as between two sweeps."""
        with self._lock:
            shown, self._shown = self._shown, None
            if (
                shown is not None and self._snapshot is None and self.sweep_in_background
                and not self._dirty and shown.tops[0] == tops[0]
            ):  # fmt: skip
                self._snapshot = Snapshot(1, shown.records, shown.tops, float("-inf"))
                self._look_trusted = True  # a snapshot is kept only from such a look
                self._ledger_files = frozenset(shown.ledger_files)

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
        delay, self._first_sweep_waits = (FIRST_SWEEP_DELAY if self._first_sweep_waits else 0.0), False
        timer = threading.Timer(delay, sweep)
        timer.name, timer.daemon = "inventory-sweep", True
        timer.start()

    def _tops(self) -> _Tops:
        """certs/ and the ledger's folder: a folder added, removed or renamed changes the first."""
        return _signature(str(self.certs_dir)), _signature(str(self.ledger.ledger_dir)) if self.ledger else ()

    def _refresh(self, *, sweep: bool) -> Snapshot:
        if self.ledger:
            self.ledger.sync()
        with self._lock, gc_paused():
            grown = self._ledger_grown() if not sweep and self._unread and self._snapshot else None
            if grown is not None:
                return grown
            self._read_kept()
            tops, looked_ns = self._tops(), time.time_ns()
            parses = self.parse_count
            fresh: dict[str, _Entry] = {}
            listings: _Listings = {}
            known_listings, known_entries = self._listings, self._entries
            known = self._snapshot
            ledger_dir = str(self.ledger.ledger_dir) if self.ledger else None
            if not sweep and known is not None and known.tops[0] == tops[0] and self._look_trusted:
                # certs/ is as at the last look, which came well after its last change (the ledger's folder
                # changed: a site renewed): its folders' records carry over whole, without a look at each.
                listings = {folder: listed for folder, listed in known_listings.items() if folder != ledger_dir}
                fresh = _listed(listings, known_entries)
            else:
                for folder in _subfolders(self.certs_dir):
                    listed = known_listings.get(folder.path)
                    # The inode comes with the listing of certs/ for free: a folder renamed away and another
                    # made under its name (a re-issue) is a new folder.
                    if sweep or listed is None or not listed[0].startswith(folder.inode().to_bytes(8, "little")):
                        signature, paths = self._crt_paths(folder.path, listings)
                        for path in paths:
                            self._take(path, folder.name, fresh, signature)
                    else:  # a folder seen before, not looked into between sweeps: its records carry over
                        listings[folder.path] = listed
                        for path in listed[1]:
                            entry = known_entries.get(path)
                            if entry is not None:
                                fresh[path] = entry
            if ledger_dir is not None:
                _, paths = self._crt_paths(ledger_dir, listings)
                for path in paths:
                    self._take(path, "", fresh, b"")
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
                records = tuple(_merged(map(itemgetter(1), fresh.values())))
                self._snapshot = Snapshot(generation, records, tops, swept_at)
            self._look_trusted = _settled(tops[:1], looked_ns)
            self._save_later(self._snapshot.records, tops if _settled(tops, looked_ns) else None)
            return self._snapshot

    def _ledger_grown(self) -> Snapshot | None:
        """At a start, before the kept listings are read (called with the lock held): the snapshot shown, with
        the certificates the ledger's folder gained since it was kept (sites renewing while the GUI was down;
        the ledger never rewrites or deletes a file), while certs/ is as it was then. None when anything else
        changed, or much was added: the refresh then looks as ever."""
        known, tops = self._snapshot, self._tops()
        if known is None or self.ledger is None or self._dirty or not self._look_trusted or known.tops[0] != tops[0]:
            return None
        files = _crt_files(str(self.ledger.ledger_dir))
        added = set(files).difference(self._ledger_files)
        if len(files) - len(added) != len(self._ledger_files) or len(added) > LEDGER_GROWN_MAX:
            return None  # a file gone (by hand), or many new: one merge of everything costs less
        fresh: dict[str, _Entry] = {}
        for path in sorted(added):
            self._take(path, "", fresh, b"")
        self._grown.update(fresh)
        self._ledger_files = frozenset(files)
        records = list(known.records)
        filed = _filed(records) if fresh else set()
        shown = [record for _, record in fresh.values() if record.serial not in filed]  # as _merged hides them
        if not shown:  # the same records: the same generation (the pages' table is not built again)
            self._snapshot = Snapshot(known.generation, known.records, tops, known.swept_at)
            return self._snapshot
        for record in shown:  # after those equal in _order: ties may lie otherwise than a full look puts them
            records.insert(bisect.bisect_right(records, _order(record), key=_order), record)
        self._snapshot = Snapshot(known.generation + 1, tuple(records), tops, known.swept_at)
        return self._snapshot

    def _save_later(self, records: tuple[CertRecord, ...], tops: _Tops | None) -> None:
        """Keep the parsed records, and the snapshot made of them at the look `tops` (None: a look too close
        to a change to be trusted), for the next start (called with the lock held): in the background,
        SAVE_DELAY later, at most every SAVE_SECONDS, and only when something was parsed, the number of files
        or the look changed since the last save. A change within SAVE_SECONDS of the last write is written
        when they have passed, not dropped: the first look a start may trust often comes a sweep after the
        first page (the ledger's folder was made by it), and nothing may follow it for hours."""
        state = (self.parse_count, len(self._entries), tops)
        if not self.cache_file or state == self._kept:
            return
        self._kept = state
        ledger_files = self._listings.get(str(self.ledger.ledger_dir), (b"", ()))[1] if self.ledger else ()
        shown = _Shown(tops, records, ledger_files) if tops is not None else None
        pending, self._to_save = self._to_save, (dict(self._entries), dict(self._listings), shown)
        if pending is not None:
            return  # the write already waiting takes this newer state
        # Not at once: the first page after a start that had to look at certs/ comes first (writing 100,000
        # records takes seconds of the interpreter, which the page would wait for).
        wait = max(SAVE_DELAY, self._saved_at + SAVE_SECONDS - time.monotonic()) if self._saved_at else SAVE_DELAY
        timer = threading.Timer(wait, self._save_pending)
        timer.name, timer.daemon = "inventory-save", True
        timer.start()

    def _save_pending(self) -> None:
        with self._save_lock:
            with self._lock:
                to_save, self._to_save, self._saved_at = self._to_save, None, time.monotonic()
            if to_save is not None and self.cache_file:
                _save_cache(self.cache_file, *to_save)

    def of_identity(self, identity: str) -> list[CertRecord]:
        """Every certificate of one identity, read from disk now: what a decision under the identity's
        lock must see. Its folders are those whose name starts with the identity (its archives, and
        odd names like site-1.revoked.1 or SITE-1); the ledger's folder is listed again. A record
        belongs to the identity of its CN, whatever its folder is called."""
        if self.ledger:
            self.ledger.sync()
        with self._lock:
            self._read_kept()
            found: dict[str, _Entry] = {}
            for folder in _subfolders(self.certs_dir, starting_with=identity):
                signature, paths = self._crt_paths(folder.path, self._listings, relist=True)
                for path in paths:
                    self._take(path, folder.name, found, signature)
            if self.ledger:
                _, paths = self._crt_paths(str(self.ledger.ledger_dir), self._listings, relist=True)
                for path in paths:
                    self._take(path, "", found, b"")
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


LEDGER_GROWN_MAX = 1000
"""At most this many certificates new in the ledger's folder at a start are put into the kept snapshot one by
one; more, and everything is merged again."""
_FOLDER_OF, _ERROR_OF, _SERIAL_OF = attrgetter("folder"), attrgetter("error"), attrgetter("serial")
_PATH_OF = attrgetter("path_text")
SAVE_SECONDS = 60.0
"""Seconds at least between two writes of the cache file (a change within them is written when they end)."""
SAVE_DELAY = 15.0
"""Seconds at least between a change of the records and their writing to the cache file."""
_CACHE_MAGIC = f"app-pki inventory 6 {','.join(CertRecord._fields)}\n".encode()
"""Names the record's fields: a file kept by a version whose records had other fields is not read."""
_CACHE_CHUNK = 1000
"""Files per frame of the kept records: a frame is read whole, a fleet never is."""
_KINDS = {kind.value: kind for kind in Kind}
_LABELS: dict[str | None, Label | None] = {label.value: label for label in Label} | {None: None}
_new_record = functools.partial(tuple.__new__, CertRecord)
"""A record from its fields without the named tuple's own __new__ (a Python call per record)."""
SETTLED_NS = 1_000_000_000
"""How old the last change of certs/ (or of the ledger's folder) must be for a later one to be sure to change
its mtime again."""


class _Shown(NamedTuple):
    """The snapshot the last run kept, the look at certs/ and the ledger's folder it was made at, and the
    ledger's files at that look (a ledger that only grew since is looked at by the difference)."""

    tops: _Tops
    records: tuple[CertRecord, ...]
    ledger_files: tuple[str, ...]


def _settled(tops: tuple[tuple[int, ...], ...], now_ns: int) -> bool:
    """Whether `tops` can stand for what certs/ and the ledger's folder hold: a folder added, removed or renamed
    after this look changes their mtime only if their last change is older than a file system clock's tick
    (else a change within the same tick would leave it as it was: git's "racy" files)."""
    return all(not signature or signature[1] < now_ns - SETTLED_NS for signature in tops)


def _saved(record: CertRecord) -> tuple[object, ...]:
    """A record as marshal can keep it: plain values, the enums by their value."""
    return (*record[:3], record.kind.value, *record[4:-1], record.label.value if record.label else None)


def _save_cache(target: Path, entries: dict[str, _Entry], listings: _Listings, shown: _Shown | None) -> None:
    """Write the folders' listings and the parsed records with the signatures they were parsed at, in
    frames of marshal data (each with its CRC-32, read back one at a time: a large fleet never sits in
    memory twice), then the order of the snapshot `shown` when its look can be trusted. marshal, not JSON: a
    restart reads 100,000 records four times faster. A frame holds its records by field (one tuple per
    field), so that reading them back makes no Python call per record. The records come in the snapshot's
    order, each certs/ folder's listing beside them: read back, they lie in memory in the order the pages
    go through them, which goes twice as fast as through records spread at random. Strings shared in memory
    stay shared in a frame. Atomic; a failure only costs a slower next start."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tmp.open("wb") as out:
            out.write(_CACHE_MAGIC)
            frames = _write_records(out, entries, listings, shown.records if shown else ())
            if shown is not None:
                order = array("I", frames.positions(shown.records)).tobytes()
                # The ledger's files by their place among the kept files too: read back, their paths are the
                # records' own strings (a ledger holds every certificate ever signed).
                ledger = array("I", (frames.position[p] for p in shown.ledger_files if p in frames.position))
                _write_frame(out, ("shown", shown.tops, order, ledger.tobytes()))
                frames.count += 1
            marshal.dump(("end", frames.count), out)  # a file without it, or with other frames, is not used
        os.replace(tmp, target)
    except (OSError, ValueError, OverflowError, KeyError):
        tmp.unlink(missing_ok=True)


class _Frames:
    """The files and listings written so far, a frame's worth at a time."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.count = 0
        self.position: dict[str, int] = {}
        """Each file's place among all the files written."""
        self.listed: set[str] = set()
        self.parts: list[tuple[str, _Signature, tuple[str, ...]]] = []
        """Listings: a folder's first (or only) CHUNK of files."""
        self.more: list[tuple[str, _Signature, tuple[str, ...]]] = []
        """The next CHUNKs of the files of a folder that has more."""
        self.files: list[tuple[object, ...]] = []
        self.signatures: list[_Signature] = []
        self.size = 0

    def file(self, path: str, entry: _Entry) -> None:
        if path not in self.position:
            self.position[path] = len(self.position)
            self.files.append(_saved(entry[1]))
            self.signatures.append(entry[0])
            self._grown(1)

    def listing(self, folder: str, signature: _Signature, paths: tuple[str, ...]) -> None:
        if folder not in self.listed:
            self.listed.add(folder)
            for start in range(0, max(len(paths), 1), _CACHE_CHUNK):
                part = paths[start : start + _CACHE_CHUNK]
                (self.parts if not start else self.more).append((folder, signature, part))
                self._grown(len(part) + 1)

    def _grown(self, size: int) -> None:
        self.size += size
        if self.size >= _CACHE_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.parts or self.more or self.files:
            # The records by field, and apart from the listings and signatures: a start reads only them (the
            # rest when first needed). The listings by field too: 100,000 of one file each in one call.
            records = marshal.dumps(tuple(zip(*self.files, strict=True)))
            rest = marshal.dumps((tuple(zip(*self.parts, strict=True)), self.more, tuple(self.signatures)))
            _write_frame(self.out, ("files", records, rest))
            self.parts, self.more, self.files, self.signatures = [], [], [], []
            self.size, self.count = 0, self.count + 1

    def positions(self, records: Iterable[CertRecord]) -> list[int]:
        return [self.position[record.path_text] for record in records]


def _write_records(
    out: Any, entries: dict[str, _Entry], listings: _Listings, in_order: Iterable[CertRecord]
) -> _Frames:
    frames = _Frames(out)
    for record in in_order:
        folder = os.path.dirname(record.path_text)
        if record.folder and folder in listings:
            frames.listing(folder, *listings[folder])
        frames.file(record.path_text, entries[record.path_text])
    for folder, (signature, paths) in listings.items():  # the rest: the ledger's folder, files not shown
        frames.listing(folder, signature, paths)
        for path in paths:
            if path in entries:
                frames.file(path, entries[path])
    frames.flush()
    return frames


def _write_frame(out: Any, frame: tuple[Any, ...]) -> None:
    blob = marshal.dumps(frame)
    marshal.dump((zlib.crc32(blob), blob), out)


_KeptFiles = list[tuple[tuple[str, ...], bytes, list[CertRecord]]]
"""Per frame: the files' paths and records, and the frame's listings and signatures still in marshal form."""


def _load_cache(source: Path) -> tuple[_KeptFiles, _Shown | None]:
    """The files (their records now; their listings and signatures read when first needed, see
    Inventory._read_kept) and the shown snapshot kept by the last run. A record is used only while its file's
    signature is unchanged, a listing while its folder's inode is, the snapshot while certs/ is as it was
    made (and the first sweep checks every file)."""
    files: _KeptFiles = []
    in_file: list[CertRecord] = []
    shown = None
    try:
        with gc_paused(), source.open("rb") as saved:
            if saved.read(len(_CACHE_MAGIC)) != _CACHE_MAGIC:
                return [], None
            # The file is this GUI's own, in its private data folder, written whole or not at all: marshal
            # reads back only what _save_cache wrote, and a frame whose CRC does not match is not used.
            frames = 0
            while True:
                checksum, blob = marshal.load(saved)  # noqa: S302
                if checksum == "end":  # the end mark, with the number of frames before it: nothing after it
                    if blob != frames or saved.read(1):
                        return [], None
                    break
                if zlib.crc32(blob) != checksum or shown is not None:  # the snapshot's order comes last
                    return [], None
                frames += 1
                frame = marshal.loads(blob)  # noqa: S302
                if frame[0] == "shown":
                    _, tops, order_bytes, ledger_bytes = frame
                    order = array("I")
                    order.frombytes(order_bytes)
                    if len(set(order)) != len(order):
                        return [], None
                    ledger = array("I")
                    ledger.frombytes(ledger_bytes)
                    ledger_files = tuple(map(_PATH_OF, map(in_file.__getitem__, ledger)))
                    shown = _Shown(tops, tuple(map(in_file.__getitem__, order)), ledger_files)
                    continue
                _, records_blob, rest = frame
                fields = list(marshal.loads(records_blob))  # noqa: S302
                if not isinstance(rest, bytes) or (fields and len(fields) != len(CertRecord._fields)):
                    raise ValueError("kept records of another shape")
                paths = fields[1] if fields else ()
                if fields:
                    fields[3] = map(_KINDS.__getitem__, fields[3])
                    fields[-1] = map(_LABELS.__getitem__, fields[-1])
                records = list(map(_new_record, zip(*fields, strict=True)))
                files.append((paths, rest, records))
                in_file += records
            # What was just read lives as long as the process (or until a sweep replaces it) and holds no
            # cycles: out of the collector's sight, or its next collections walk 100,000 records again and
            # again, the first as soon as it runs again. Once, at the start, when little else exists.
            gc.freeze()
    except Exception:  # any damage, of any kind, only costs a slower start
        return [], None
    return files, shown


def _may_belong(folder: str, identity: str) -> bool:
    """A folder named for the identity, or its name followed by a dot (site-1.bak, site-1.revoked.1)."""
    return split_folder(folder)[0] == identity or folder.lower().startswith(f"{identity}.")


def _merged(records: Iterable[CertRecord]) -> list[CertRecord]:
    """certs/ and ledger records with each serial once (the filed copy wins), newest first per identity."""
    everything = list(records)
    filed = _filed(everything)
    kept = [r for r in everything if r.folder or r.serial not in filed]
    # Three stable sorts by one field each: a third of the time of one sort by a tuple made per record.
    kept.sort(key=_FOLDER_OF)
    kept.sort(key=attrgetter("not_after_ts"), reverse=True)
    kept.sort(key=attrgetter("identity"))
    return kept


def _filed(records: list[CertRecord]) -> set[int]:
    """The serials of the readable certificates filed in certs/ (map and compress: 100,000 at a start)."""
    readable = map(operator.and_, map(bool, map(_FOLDER_OF, records)), map(operator.not_, map(_ERROR_OF, records)))
    return set(compress(map(_SERIAL_OF, records), readable))


def _order(record: CertRecord) -> tuple[str, float, str]:
    """Where a record goes in a snapshot: by identity, the latest expiry first, then by folder (_merged)."""
    return record.identity, -record.not_after_ts, record.folder


def _listed(listings: _Listings, entries: dict[str, _Entry]) -> dict[str, _Entry]:
    """The entries of the files the listings name (one listed but never parsed has none), in their order."""
    paths = list(chain.from_iterable(map(itemgetter(1), listings.values())))
    found = list(map(entries.get, paths))
    return dict(compress(zip(paths, found, strict=True), found))


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


def _crt_files(folder: str) -> tuple[str, ...]:
    """The certificate files of a folder. A folder that cannot be listed (permissions) stands for itself
    with its expected file name, which then reads as an INVALID record saying why: never a silent gap."""
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return ()
    except OSError:
        return (os.path.join(folder, f"{split_folder(os.path.basename(folder))[0]}.crt"),)
    with entries:
        # ca.crt is the root that a bundle may carry next to the certificate, not a certificate of the fleet.
        return tuple(e.path for e in entries if e.name.endswith(".crt") and e.name != "ca.crt" and e.is_file())
