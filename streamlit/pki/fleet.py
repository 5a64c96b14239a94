"""The one facade the pages and the tests use: every question about the fleet and every change to it.

Pages render what this returns and decide nothing themselves: the validity limits, what may be
re-issued, whether a revocation is confirmed, what disagrees. One Fleet serves every session of a
GUI process. The CA's state is kept for a while so that a page's reruns do not each cost a request
(health 10 s, CRL 60 s, provisioners 5 minutes); health and CRL are forgotten after every change made here.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from operator import attrgetter
from typing import TypeVar

from cryptography import x509

from pki import report
from pki.audit import AuditLog
from pki.bulk import BulkJobs, JobStatus, Mode, Plan, csv_of, plan, read_sites, source_digest
from pki.bundle import BundleContext, make_bundle, new_passphrase, zip_files
from pki.ca import CRLInfo, Provisioner, StepCA
from pki.cadb import CADatabase
from pki.enrollment import Enrollment, create_enrollment, validate_broker
from pki.inventory import CertRecord, Inventory, IssuerId, gc_paused
from pki.issuing import Issued, IssueRequest, Registrar, Revoked, certificate_in_folder, fetch_crl
from pki.keys import DEFAULT_KEY_TYPE, KEY_TYPES
from pki.ledger import Ledger
from pki.model import CANARY_PREFIX, ISSUABLE_KINDS, VALID_STATUSES, Kind, Status
from pki.reconcile import Action, Disagreement, Interrupted, of_interrupted, of_rows, serials_of
from pki.report import Row, rows
from pki.roles import Actor, Role, require
from pki.settings import Settings
from pki.step import StepError
from pki.store import CertStore
from pki.tokens import TokenState, TokenStatus, TokenVault
from pki.validate import InvalidInput

FOREVER = dt.datetime.max.replace(tzinfo=dt.UTC)
STATUS_TIMEOUT = 5.0
"""Seconds for the health and CRL checks every page makes: a hanging CA slows a page by this, no more."""
SPENT_TIMEOUT = 10.0
"""How long a cancelled token may take to appear spent in the CA's journal (written as the CA answers)."""
HEALTH_TTL, CRL_TTL, PROVISIONERS_TTL, RECONCILE_TTL = 10.0, 60.0, 300.0, 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class CRLState:
    """The CA's CRL as the pages show it: fetched now, or the copy kept when it last could be."""

    info: CRLInfo | None
    problem: str | None
    """Why the CA's CRL could not be fetched just now (then `info` is the kept copy, if any)."""

    @property
    def revoked(self) -> frozenset[int] | None:
        return self.info.revoked if self.info else None


@dataclass(frozen=True)
class FleetTable:
    """The fleet's certificates with their statuses at `now`, and what the pages derive from them, each
    worked out once per table: a table is built again only when the records, the CRL or a status changed."""

    rows: list[Row]
    crl: CRLState
    ledger_problem: str | None
    now: dt.datetime
    valid_until: dt.datetime = FOREVER
    """When the first status in it changes by the clock alone (a certificate expires or starts expiring)."""

    @cached_property
    def current_rows(self) -> list[Row]:
        """The valid certificates a renewal or re-issue has not replaced, in the table's order."""
        return report.current_rows(self.rows)

    @cached_property
    def current(self) -> list[Row]:
        """`current_rows`, soonest expiry first."""
        return report.soonest_first(self.current_rows)

    @cached_property
    def ends(self) -> list[float]:
        """When each of `current` expires (POSIX seconds), in order."""
        return report.expiries_of(self.current)

    def expiring_within(self, days: int) -> list[Row]:
        """Like report.expiring_within, from `current` by bisection."""
        return self.current[: bisect.bisect_right(self.ends, self.now.timestamp() + days * 86400)]

    memo: dict[tuple[object, ...], object] = field(default_factory=dict, compare=False, repr=False)

    def _once(self, key: tuple[object, ...], compute: Callable[[], T]) -> T:
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]  # type: ignore[return-value]

    def counts(self, expiring_days: int, server_days: int) -> report.FleetCounts:
        """report.fleet_counts, from `current` and the per-status counts."""
        return self._once(
            ("counts", expiring_days, server_days),
            lambda: report.counts_of(
                self.current_rows, self.expiring_within(expiring_days), self.server_warnings(server_days),
                sum(self.by_type[Status.REVOKED].values()),
            ),
        )  # fmt: skip

    def server_warnings(self, days: int) -> list[Row]:
        return self._once(("server", days), lambda: report.broker_warnings(self.expiring_within(days), self.now))

    @cached_property
    def revocable(self) -> dict[str, list[Row]]:
        return report.revocable(self.rows)

    @cached_property
    def by_type(self) -> dict[Status, dict[Kind, int]]:
        return report.counts_by_type(self.rows)

    @cached_property
    def weeks(self) -> list[tuple[dt.date, int]]:
        return report.weekly(self.ends, self.now)

    @cached_property
    def haystack(self) -> list[str]:
        """What a search looks in, per row, lower case: CN, serial (hex and decimal), folder, SANs."""
        return [
            "\0".join((r.cn, r.serial_hex, str(r.serial), r.folder, *r.sans)).lower()
            for r in (w.record for w in self.rows)
        ]

    def search(self, text: str, statuses: Iterable[str] = (), kinds: Iterable[str] = ()) -> list[int]:
        """Positions in `rows` of the certificates whose CN, serial (hex or decimal), folder or
        SAN contains `text` (case aside), of the given statuses and types."""
        needle = text.strip().lower()
        wanted_status, wanted_kind = set(statuses), set(kinds)
        found = range(len(self.rows)) if not needle else [i for i, h in enumerate(self.haystack) if needle in h]
        if wanted_status or wanted_kind:
            found = [
                i for i in found
                if (not wanted_status or self.rows[i].status.value in wanted_status)
                and (not wanted_kind or self.rows[i].record.kind.value in wanted_kind)
            ]  # fmt: skip
        return list(found)


def _without_canaries(records: tuple[CertRecord, ...]) -> list[CertRecord]:
    """A snapshot's records without the broker check's own. A snapshot is in the order of identities, so
    theirs are one run, found by bisection: no look at each of 100,000 records."""
    identity = attrgetter("identity")
    start = bisect.bisect_left(records, CANARY_PREFIX, key=identity)
    # Every name that starts with the prefix sorts before the prefix with its last character's successor.
    end = bisect.bisect_left(records, CANARY_PREFIX[:-1] + chr(ord(CANARY_PREFIX[-1]) + 1), key=identity)
    return [*records[:start], *records[end:]]


def _next_status_change(records: Collection[CertRecord], now: dt.datetime, expiring_days: int) -> dt.datetime:
    """The first moment after `now` at which the clock alone changes a status: an expiry, or the start of
    the expiring window; at most an hour away (days left move too)."""
    now_ts = now.timestamp()
    window = expiring_days * 86400
    ends = sorted(map(attrgetter("not_after_ts"), records))
    moments = [now_ts + 3600]
    first_expiry = bisect.bisect_right(ends, now_ts)
    if first_expiry < len(ends):
        moments.append(ends[first_expiry])
    first_window = bisect.bisect_right(ends, now_ts + window)  # the first to start expiring after now
    if first_window < len(ends) and ends[first_window] - window > now_ts:
        moments.append(ends[first_window] - window)
    return dt.datetime.fromtimestamp(min(moments), dt.UTC)


class Fleet:
    def __init__(self, settings: Settings, *, for_pages: bool = False) -> None:
        """`for_pages`: the GUI's long-lived Fleet, whose pages may show records kept from the last run and
        checked by a sweep in the background. Every other use (the alerts runner, the commands) reads
        certs/ afresh."""
        self.settings = settings
        self.ca = StepCA(settings)
        database = CADatabase(settings.ca_db_url, settings.ca_db_password_file) if settings.ca_db_url else None
        self.ledger = Ledger(settings.ca_log, settings.ledger_dir, database, expect_database=settings.ca_db_expected)
        self.inventory = Inventory(
            settings.certs_dir, self.ledger, cache_file=settings.inventory_cache if for_pages else None,
            sweep_in_background=for_pages,
        )  # fmt: skip
        self.audit = AuditLog(settings.audit_log)
        self.store = CertStore(settings.certs_dir, lock_wait=2 * settings.step_timeout + 5)
        self.bulk = BulkJobs(settings.bulk_dir)
        self._cache: dict[str, tuple[float, object]] = {}
        self._cache_lock = threading.Lock()
        self._table: tuple[tuple[object, ...], FleetTable] | None = None

    # -- the CA's state, kept briefly ------------------------------------------------------------

    def _cached(self, name: str, ttl: float, compute: Callable[[], T]) -> T:
        with self._cache_lock:
            hit = self._cache.get(name)
            if hit and hit[0] > time.monotonic():
                return hit[1]  # type: ignore[return-value]
        value = compute()
        with self._cache_lock:
            self._cache[name] = (time.monotonic() + ttl, value)
        return value

    def forget_ca_state(self) -> None:
        """After a change: ask the CA for its health and CRL again on the next question (its
        provisioners and intermediate do not change with what the GUI does)."""
        with self._cache_lock:
            for name in ("health", "crl"):
                self._cache.pop(name, None)

    def ca_problem(self) -> str | None:
        """None when the CA answers 'ok', else what went wrong."""

        def check() -> str | None:
            try:
                self.ca.health(timeout=STATUS_TIMEOUT)
            except StepError as exc:
                return str(exc)
            return None

        return self._cached("health", HEALTH_TTL, check)

    def crl(self) -> CRLState:
        """The CA's CRL, or the last one it issued (kept in the ledger) and why the CA did not answer."""

        def fetch() -> CRLState:
            info, problem = fetch_crl(self.ca, self.ledger, STATUS_TIMEOUT)
            if info is None and (kept := self.ledger.last_crl()):
                with contextlib.suppress(ValueError):
                    info = CRLInfo.of(x509.load_der_x509_crl(kept))
            return CRLState(info, problem)

        return self._cached("crl", CRL_TTL, fetch)

    def provisioners(self) -> tuple[list[Provisioner] | None, str | None]:
        def fetch() -> tuple[list[Provisioner] | None, str | None]:
            try:
                return self.ca.provisioners(), None
            except StepError as exc:
                return None, str(exc)

        return self._cached("provisioners", PROVISIONERS_TTL, fetch)

    def limits(self) -> dict[Kind, int]:
        """The longest validity, in days, the CA allows per certificate type (from its provisioners)."""
        listed, _ = self.provisioners()
        by_name = {p.name: p for p in listed or []}
        limits = {}
        for kind in ISSUABLE_KINDS:
            found = by_name.get(self.ca.provisioner_for(kind))
            limits[kind] = found.max_days if found and found.max_days else self.settings.max_days
        return limits

    @property
    def issuer(self) -> IssuerId | None:
        """This CA's intermediate (None if its file cannot be read: then nothing is called foreign)."""

        def load() -> IssuerId | None:
            try:
                return IssuerId.of(x509.load_pem_x509_certificate(self.settings.intermediate.read_bytes()))
            except (OSError, ValueError):
                return None

        return self._cached("issuer", HEALTH_TTL, load)

    def registrar(self, actor: Actor) -> Registrar:
        """The changes `actor` may ask for (each checks their role)."""
        issuer = self.issuer
        if issuer is None:
            raise InvalidInput(f"The CA's intermediate certificate {self.settings.intermediate} cannot be read.")
        return Registrar(self.ca, self.store, self.inventory, self.ledger, self.audit, issuer, actor)

    # -- what the pages show --------------------------------------------------------------------

    def table(self) -> FleetTable:
        """The fleet's table, built again only when the records, the CRL, a source's problem or (by the
        clock) a status changed: a page reload with nothing new costs a look at certs/ and the journal."""
        now = dt.datetime.now(dt.UTC)
        crl = self.crl()
        snapshot = self.inventory.snapshot()
        key = (
            snapshot.generation, crl.info.der if crl.info else None, crl.problem, self.inventory.ledger_problem,
            self.issuer,
        )  # fmt: skip
        with self._cache_lock:
            built = self._table
            if built is not None and built[0] == key and now < built[1].valid_until:
                return built[1]
        records = _without_canaries(snapshot.records)
        expiring = self.settings.expiring_days
        with gc_paused():
            table = FleetTable(
                rows(records, now, crl.revoked, expiring, self.issuer), crl, self.inventory.ledger_problem, now,
                _next_status_change(records, now, expiring),
            )  # fmt: skip
        with self._cache_lock:
            self._table = (key, table)
        return table

    def reconcile(self, table: FleetTable) -> list[Disagreement]:
        """Every disagreement between certs/, the ledger and the CRL (see pki.reconcile). The table's part is
        worked out once per table and audit trail; the interrupted folders again when certs/ changed, or
        after RECONCILE_TTL seconds (a staging folder becomes stale with time)."""
        try:
            audit = self.settings.audit_log.stat()
            trail = (audit.st_ino, audit.st_size)  # a rotated trail is another file, whatever its size
        except OSError:
            trail = (-1, -1)
        key = (self.inventory.snapshot().tops, trail, int(time.monotonic() // RECONCILE_TTL))
        interrupted = table._once(("interrupted", *key), lambda: self._interrupted(table))
        skip = serials_of(interrupted)
        found = table._once(("reconcile", trail, skip), lambda: of_rows(table.rows, self.audit.signed_here(), skip))
        return of_interrupted(interrupted) + found

    def _interrupted(self, table: FleetTable) -> list[Interrupted]:
        folders = self.store.interrupted()
        if not folders:
            return []
        valid = {row.record.serial for row in table.rows if row.valid}
        interrupted = []
        for folder, identity in folders:
            record = certificate_in_folder(self.store, self.inventory, folder, identity)
            interrupted.append(Interrupted(folder, identity, record, bool(record and record.serial in valid)))
        return interrupted

    def record(self, serial: int) -> CertRecord | None:
        """The certificate with this serial as its files are now: looked up in the pages' snapshot (or, if
        it is not there, in a full look at certs/), then read afresh with its identity's folders."""
        found = self.inventory.find(serial)
        if found is None:
            found = next((r for r in self.inventory.records() if r.serial == serial and not r.error), None)
        if found is None:
            return None
        return next((r for r in self.inventory.of_identity(found.identity) if r.serial == serial and not r.error), None)

    @staticmethod
    def can_reissue(row: Row) -> bool:
        """A broker certificate in its live folder, still valid: serverAuth only, so it cannot renew."""
        return row.record.kind is Kind.SERVER and row.record.is_live and row.status in VALID_STATUSES

    def may_bundle(self, row: Row) -> bool:
        """A certificate whose key is filed here and may be handed out: valid, not the GUI's own."""
        r = row.record
        return bool(r.folder) and r.has_key and row.valid and r.identity != self.settings.gui_https_identity

    def bundle(self, actor: Actor, serial: int, *, broker: str | None = None) -> tuple[bytes, str]:
        """The ZIP bundle of a certificate filed here, its key encrypted, and the passphrase: made for
        `actor` and audited (the passphrase itself never is). `broker` is the address a site's bridge
        dials (default PKI_BROKER_ADDRESS)."""
        require(actor, Role.OPERATOR, "make bundles with private keys")
        broker = validate_broker(broker or self.settings.broker_address)
        record = self.record(serial)
        if record is None or not record.folder or not record.has_key:
            raise InvalidInput(f"Certificate {serial:X} has no private key here: no bundle.")
        if record.identity == self.settings.gui_https_identity:
            raise InvalidInput(
                f"{record.identity} is the GUI's own HTTPS certificate: its private key is never handed out."
            )
        passphrase = new_passphrase()
        data = make_bundle(record, root_pem=self.settings.root.read_bytes(), context=self._bundle_context(broker),
                           passphrase=passphrase)  # fmt: skip
        self.audit.record("bundle", actor=actor, cn=record.identity, serial=record.serial_hex, broker=broker)
        return data, passphrase

    def _bundle_context(self, broker: str) -> BundleContext:
        s = self.settings
        return BundleContext(
            ca_name=s.ca_name, ca_url=s.public_ca_url, fingerprint=self.ca.root_fingerprint(), crl_url=s.crl_url,
            broker_address=broker, scripts_dir=s.site_scripts_dir,
        )  # fmt: skip

    def key_downloaded(self, actor: Actor, serial: int) -> None:
        """Audit that a bundle with the private key of `serial` left the server."""
        require(actor, Role.OPERATOR, "download bundles")
        record = self.record(serial)
        identity = record.identity if record else None
        self.audit.record("download-key", actor=actor, cn=identity, serial=f"{serial:X}")

    # -- changes ----------------------------------------------------------------------------------

    def issue(self, actor: Actor, request: IssueRequest) -> Issued:
        try:
            return self.registrar(actor).issue(request, max_days=self.limits().get(request.kind, 1))
        finally:
            self.forget_ca_state()

    def reissue(self, actor: Actor, serial: int, *, sans: list[str] | None = None, days: int | None = None) -> Issued:
        """A new key and certificate with the names, key type and lifetime of the live broker certificate
        `serial` (or the SANs and days given); the old one stays valid (in {CN}.replaced) until it is
        revoked or expires."""
        require(actor, Role.OPERATOR, "re-issue certificates")
        record = self.record(serial)
        if record is None or record.kind is not Kind.SERVER or not record.is_live:
            raise InvalidInput("Only the current broker certificate in certs/{CN}/ can be re-issued.")
        max_days = self.limits()[Kind.SERVER]
        lifetime = max(1, round((record.not_after - record.not_before).total_seconds() / 86400))
        request = IssueRequest(
            cn=record.identity,
            kind=Kind.SERVER,
            sans=list(record.sans) if sans is None else sans,
            days=min(days or lifetime, max_days),
            key_type=record.key_type if record.key_type in KEY_TYPES else DEFAULT_KEY_TYPE,
        )
        try:
            return self.registrar(actor).issue(request, max_days=max_days, replacing=serial)
        finally:
            self.forget_ca_state()

    def revoke(
        self, actor: Actor, cn: str, *, reason_code: int, confirmation: str, serials: Collection[int] | None = None
    ) -> Revoked:
        try:
            return self.registrar(actor).revoke(cn, reason_code=reason_code, confirmation=confirmation, only=serials)
        finally:
            self.forget_ca_state()

    def revoke_serial(self, actor: Actor, serial: int, *, reason_code: int) -> str:
        """Revoke by serial alone: for a certificate this GUI knows nothing of (one issued after the backup
        a restored CA came from). A known serial goes the usual way, by its identity. Returns what was done."""
        require(actor, Role.OPERATOR, "revoke certificates")
        record = self.record(serial)
        if record is not None:
            done = self.revoke(actor, record.identity, reason_code=reason_code, confirmation=record.identity,
                               serials=[serial])  # fmt: skip
            return f"{serial:X} of {record.identity}: " + ("revoked" if serial in done.serials else "NOT revoked")
        try:
            self.ca.revoke(serial, reason_code)
            self.audit.record("revoke-serial", actor=actor, serial=f"{serial:X}", reason=reason_code)
        finally:
            self.forget_ca_state()
        return f"{serial:X} (unknown here): revoked"

    def enroll(self, actor: Actor, site: str, *, hours: int | float | str, broker: str) -> Enrollment:
        return create_enrollment(self.registrar(actor), site, hours=hours, broker=broker)

    def tokens(self, actor: Actor) -> list[TokenStatus]:
        """The enrolment tokens made here, newest first, with their state from the CA's journal. Tokens
        that can no longer be used are dropped from the vault as they are listed."""
        require(actor, Role.OPERATOR, "see enrolment tokens")
        statuses = self.registrar(actor).token_statuses()
        vault = TokenVault(self.settings.token_dir)
        for status in statuses:
            if status.state is not TokenState.UNUSED and status.made.token_ref:
                vault.drop(status.made.token_ref)
        return statuses

    def cancel_token(self, actor: Actor, token_ref: str) -> str:
        """Spend the unused token `token_ref` at the CA without a certificate, so that the CA refuses it
        from now on. Returns what happened; audited."""
        require(actor, Role.OPERATOR, "cancel enrolment tokens")
        registrar = self.registrar(actor)
        status = next((s for s in registrar.token_statuses() if s.made.token_ref == token_ref), None)
        if status is None:
            raise InvalidInput("No enrolment token with that id was made here.")
        site = status.made.site
        if status.state is not TokenState.UNUSED:
            raise InvalidInput(f"The token for {site} is {status.state.value}: there is nothing to cancel.")
        vault = TokenVault(self.settings.token_dir)
        token = vault.get(token_ref)
        if token is None:
            raise InvalidInput(
                f"The token for {site} was not kept here, so it cannot be spent: it stays usable until "
                f"{status.made.expires:%Y-%m-%d %H:%M} UTC. If a site uses it, revoke what it gets."
            )
        with self.store.locked(site):
            outcome = self.ca.spend_token(token)
            revoked = None
            if outcome.serial is not None:  # the CA signed after all: that certificate must not live
                self.ca.revoke(outcome.serial, 5)
                revoked = f"{outcome.serial:X}"
        if outcome.status == 401:
            self.audit.record("token-cancel", "refused", actor=actor, cn=site, token_ref=token_ref)
            self.forget_ca_state()
            raise InvalidInput(
                f"The CA refused the token for {site}: it was used or expired meanwhile. Nothing to cancel."
            )
        if outcome.status not in (201, 403):
            self.audit.record(
                "token-cancel", "failed", actor=actor, cn=site, token_ref=token_ref, answer=outcome.status
            )
            raise InvalidInput(
                f"The CA answered {outcome.status} instead of spending the token for {site}: it is not cancelled. "
                "Try again; if it persists, look at the CA's log."
            )
        self.forget_ca_state()
        # The CA's answer is not the record: its journal must show the token spent before it counts as cancelled.
        deadline = time.monotonic() + SPENT_TIMEOUT
        while not self.ledger.confirm_spent(token, token_ref, revoked or ""):
            if time.monotonic() > deadline:
                self.audit.record("token-cancel", "unconfirmed", actor=actor, cn=site, token_ref=token_ref)
                raise InvalidInput(
                    f"The CA answered that it spent the token for {site}, but its journal does not show it: it is "
                    "not marked cancelled and stays kept. Check the CA's journal (Dashboard), then try again."
                )
            time.sleep(0.1)
        vault.drop(token_ref)
        self.audit.record("token-cancel", actor=actor, cn=site, token_ref=token_ref, revoked=revoked)
        return f"The token for {site} is cancelled: the CA has spent it and refuses it from now on."

    def resolve(self, actor: Actor, disagreement: Disagreement, action: Action) -> str:
        """Carry out a Reconcile action other than revoke (which needs a reason and a confirmation)."""
        if action not in disagreement.actions:
            raise InvalidInput(f"{action} does not apply to {disagreement.folder or disagreement.serial_hex}.")
        try:
            if action is Action.FILE:
                target, warning = self.registrar(actor).file(disagreement.folder)
                done = f"Filed as certs/{target}/."
            elif action is Action.MARK_FOREIGN:
                target, warning = self.registrar(actor).mark_foreign(disagreement.folder)
                done = f"Marked as foreign: certs/{target}/."
            else:
                raise InvalidInput("Revoke on this page with a reason and the confirmation.")
        finally:
            self.forget_ca_state()
        return done if warning is None else f"{done} {warning}"

    # -- bulk enrolment (pki.bulk) -----------------------------------------------------------------

    def bulk_plan(
        self, actor: Actor, text: str, *, source_name: str, mode: Mode, lifetime: int | str, broker: str
    ) -> Plan:
        """Every row of a CSV file or pasted list checked, before anything is done."""
        require(actor, Role.OPERATOR, "enrol sites in bulk")
        broker = validate_broker(broker)
        valid = {
            row.record.identity: f"{row.record.serial_hex}, until {row.record.not_after:%Y-%m-%d}"
            for row in self.table().rows
            if row.valid
        }
        unused: dict[str, dt.datetime] = {}
        for status in self.registrar(actor).token_statuses():
            if status.state is TokenState.UNUSED:
                unused[status.made.site] = max(status.made.expires, unused.get(status.made.site, status.made.expires))
        digest = source_digest(text)
        return plan(
            read_sites(text), mode=mode, lifetime=lifetime, max_days=self.limits()[Kind.CLIENT], broker=broker,
            valid_certificates=valid, unused_tokens=unused, source_name=source_name, source_sha256=digest,
            earlier_job=self.bulk.same_source(digest),
        )  # fmt: skip

    def bulk_start(self, actor: Actor, planned: Plan) -> str:
        """Start the job of a checked plan in the background; returns its id."""
        job_id = self.bulk.create(actor, planned)
        self.bulk_resume(actor, job_id)
        return job_id

    def bulk_resume(self, actor: Actor, job_id: str) -> bool:
        """Go on with an interrupted job (False: it is finished or running)."""
        started = self.bulk.start(actor, job_id, self.registrar, max_days=self.limits()[Kind.CLIENT])
        self.forget_ca_state()
        return started

    def bulk_stop(self, actor: Actor, job_id: str) -> None:
        """Stop a running job after the rows in hand (Resume goes on with it)."""
        require(actor, Role.OPERATOR, "stop bulk enrolment jobs")
        self.bulk.stop(job_id)
        self.audit.record("bulk-stop", actor=actor, job=job_id)

    def bulk_jobs(self, actor: Actor) -> list[JobStatus]:
        require(actor, Role.OPERATOR, "see bulk enrolment jobs")
        return [self.bulk.status(job_id) for job_id in self.bulk.job_ids()]

    def bulk_commands(self, actor: Actor, job_id: str) -> bytes:
        """The job's unused tokens as CSV (site, token expiry, the command to paste on the site), to show
        on the page: never a file, since Streamlit serves files at URLs anyone who has them may fetch.
        Tokens used, cancelled or expired meanwhile are left out, and so are tokens of sites that have a
        valid certificate meanwhile (using one would give the site a second: cancel those). Audited (the
        tokens never are)."""
        require(actor, Role.OPERATOR, "see enrolment tokens")
        statuses = {s.made.token_ref: s for s in self.registrar(actor).token_statuses()}
        certified = {row.record.identity for row in self.table().rows if row.valid}
        vault = TokenVault(self.settings.token_dir)
        fingerprint = self.ca.root_fingerprint()
        rows = []
        for result in self.bulk.done_rows(job_id):
            status = statuses.get(result.token_ref)
            if status is None or status.state is not TokenState.UNUSED or status.made.site in certified:
                continue
            token = vault.get(result.token_ref)
            if token is None:
                continue
            command = Enrollment(
                status.made.site, token, status.made.expires, self.settings.public_ca_url, fingerprint,
                status.made.broker,
            ).command()  # fmt: skip
            rows.append((status.made.site, f"{status.made.expires:%Y-%m-%d %H:%M}", command))
        if not rows:
            raise InvalidInput(f"Job {job_id} has no unused token left to hand out.")
        self.audit.record("bulk-commands", actor=actor, job=job_id, tokens=len(rows))
        return csv_of([("site", "token_expires_utc", "command"), *rows])

    def bulk_bundles(self, actor: Actor, job_id: str, *, broker: str | None = None) -> tuple[bytes, bytes, int]:
        """The job's certificates as one ZIP of per-site bundles (NAME.zip, each key under its own
        passphrase) and, apart, the passphrases as CSV, for the page to show, never as a file: the ZIP
        alone gives no usable key. Sites whose certificate is no longer valid or whose key is gone are
        left out. Audited (the passphrases never are)."""
        require(actor, Role.OPERATOR, "make bundles with private keys")
        broker = validate_broker(broker or self.settings.broker_address)
        context, root_pem = self._bundle_context(broker), self.settings.root.read_bytes()
        valid = {row.record.serial: row for row in self.table().rows if row.valid}
        files: dict[str, tuple[bytes, int]] = {}
        phrases = [("site", "serial", "passphrase")]
        for result in self.bulk.done_rows(job_id):
            row = valid.get(int(result.serial, 16)) if result.serial else None
            if row is None or not self.may_bundle(row):
                continue
            record = row.record  # make_bundle reads its files now and refuses a key that is not its own
            passphrase = new_passphrase()
            try:
                data = make_bundle(record, root_pem=root_pem, context=context, passphrase=passphrase)
            except (InvalidInput, OSError):
                continue
            files[f"{record.identity}.zip"] = (data, 0o600)
            phrases.append((record.identity, record.serial_hex, passphrase))
        if not files:
            raise InvalidInput(f"Job {job_id} has no valid certificate with its key here to bundle.")
        self.audit.record("bulk-bundles", actor=actor, job=job_id, bundles=len(files), broker=broker)
        return zip_files(files), csv_of(phrases), len(files)
