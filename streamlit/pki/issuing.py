"""Every change to an identity's certificates, as the operator means it: validate, lock, decide from
fresh data, call the CA, file, audit.

The rules, in the order they are applied:
- Input is validated before anything runs; the CN becomes its identity (pki.model.identity_of).
- The identity's lock is held for the whole change (pki.store), and "does it have a valid
  certificate?" is answered inside it from the identity's folders, the ledger and a CRL fetched now.
- Valid means: issued by this CA, unexpired, not on its CRL, wherever it is filed.
- The key is written before the CA is asked; the serial is audited the moment the CA has answered
  and the certificate goes into the ledger; only then is it filed. A filing that fails leaves the
  certificate and key in a quarantine folder, never deleted, and says so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pki.audit import AuditLog
from pki.ca import CRLInfo, StepCA
from pki.folders import Label, archive_label, named_for, split_folder
from pki.inventory import CertRecord, Inventory, IssuerId, parse_certificate_file
from pki.keys import KEY_TYPES, key_id, new_private_key, private_key_pem, signing_request
from pki.ledger import Ledger
from pki.model import ISSUABLE_KINDS, REVOCATION_REASONS, VALID_STATUSES, Kind, Status, identity_of
from pki.roles import Actor, Role, require
from pki.step import CANotReached, CARefused, CAUnreachable, StepError, StepNotFound
from pki.store import CertStore, is_staging, staging_identity
from pki.tokens import TokenState, TokenStatus, token_states
from pki.validate import InvalidInput, validate_cn, validate_days, validate_san, validate_sans

JOURNAL_WAIT = 3.0
"""Seconds to watch the CA's journal for a certificate after step failed in a way that leaves open
whether the CA signed (step-ca logs a request just after answering it)."""


class ActiveCertificateExists(InvalidInput):
    """The identity already has a valid certificate; it must be revoked before another is issued."""


class ValidityUnknown(ActiveCertificateExists):
    """The identity has an unexpired certificate and the CRL cannot be read to tell whether it is revoked:
    the question is open until the CA answers again."""


class TokenPending(InvalidInput):
    """The site has an unused enrolment token, and the caller wants no second way in for it."""


class NotIssued(Exception):
    """The disk refused the new key, before the CA was asked: nothing was signed, nothing changed."""


class IssueUncertain(Exception):
    """step failed after the request may have reached the CA, and its journal shows no certificate (yet)."""


class FilingFailed(Exception):
    """The CA signed, but the certificate could not be filed: the message says where everything is."""

    def __init__(self, message: str, serial: int, folder: str | None) -> None:
        super().__init__(message)
        self.serial = serial
        self.folder = folder


@dataclass(frozen=True)
class IssueRequest:
    cn: str
    kind: Kind
    sans: str | list[str]
    days: int | str
    key_type: str


@dataclass(frozen=True)
class ValidRequest:
    cn: str
    """The identity: the CN as it is issued."""
    kind: Kind
    sans: list[str]
    days: int
    key_type: str
    typed: str
    """The CN as the operator typed it."""

    @property
    def normalised_from(self) -> str | None:
        """What the operator typed, when the identity differs from it."""
        return self.typed if self.typed != self.cn else None


@dataclass(frozen=True)
class Issued:
    record: CertRecord
    archived_as: tuple[str, ...]
    """What the identity's previous live folder was renamed to, if there was one."""
    normalised_from: str | None = None
    warnings: tuple[str, ...] = ()
    """What went wrong around an issuance that succeeded (an audit line that could not be written)."""


REVOKED, ALREADY_REVOKED = "revoked", "already revoked"
"""The CA's answers that mean a serial is revoked now."""


@dataclass(frozen=True)
class RevokeOutcome:
    record: CertRecord
    answer: str
    """The CA's answer: REVOKED, ALREADY_REVOKED, or why it refused."""
    done: bool
    on_crl: bool
    """Whether the CRL fetched after the revocation lists the serial."""


@dataclass(frozen=True)
class Revoked:
    identity: str
    outcomes: list[RevokeOutcome]
    renamed: dict[str, str] = field(default_factory=dict)
    """Folders renamed to {identity}.revoked[.N] because their certificate went: old -> new name."""
    crl_problem: str | None = None
    not_renamed: dict[str, str] = field(default_factory=dict)
    """Folders whose certificate went but that could not be renamed: folder -> why."""
    still_valid: list[CertRecord] = field(default_factory=list)
    """Certificates of the identity that became valid while it was being revoked (a renewal meanwhile)."""
    warning: str | None = None
    """Why the audit line could not be written (the revocation stands)."""

    @property
    def serials(self) -> list[int]:
        return [o.record.serial for o in self.outcomes if o.done]

    @property
    def failures(self) -> dict[int, str]:
        return {o.record.serial: o.answer for o in self.outcomes if not o.done}

    @property
    def confirmed(self) -> bool:
        """Every serial was revoked, the CA's CRL lists each one, and no certificate of the identity
        became valid meanwhile: nothing is left to do."""
        return all(o.done and o.on_crl for o in self.outcomes) and not self.still_valid


def validate_request(request: IssueRequest, max_days: int) -> ValidRequest:
    """All checks that need no CA; raises InvalidInput with the first problem found."""
    if request.kind not in ISSUABLE_KINDS:
        raise InvalidInput(f"Certificates are issued as client or server, not {request.kind}.")
    cn = validate_cn(request.cn)
    sans = validate_sans(request.sans)
    if request.kind is Kind.SERVER:
        try:
            cn_as_san = validate_san(cn)
        except InvalidInput:
            raise InvalidInput(
                f"The common name {cn!r} of a server certificate must be its host name or IP address "
                "(letters, digits, dashes, dots), since clients check it as a SAN."
            ) from None
        if cn_as_san not in sans:
            sans.insert(0, cn_as_san)  # a TLS client checks the SANs, never the CN
    days = validate_days(request.days, max_days)
    if request.key_type not in KEY_TYPES:
        raise InvalidInput(f"Unknown key type {request.key_type!r}; choose one of {', '.join(KEY_TYPES)}.")
    return ValidRequest(cn, request.kind, sans, days, request.key_type, request.cn.strip())


def unexpired_here(records: Sequence[CertRecord], issuer: IssuerId, now: dt.datetime) -> list[CertRecord]:
    return [r for r in records if not r.error and r.issued_by(issuer) and r.not_after > now]


def fetch_crl(ca: StepCA, ledger: Ledger, timeout: float | None = None) -> tuple[CRLInfo | None, str | None]:
    """The CA's CRL now, kept in the ledger as the CA's last word for when it is down; or None and why."""
    try:
        info = ca.crl_info(timeout)
    except StepError as exc:
        return None, str(exc)
    with contextlib.suppress(OSError):  # only the copy for when the CA is down; the CRL itself is at the CA
        ledger.keep_crl(info.der)
    return info, None


def certificate_in_folder(store: CertStore, inventory: Inventory, folder: str, identity: str) -> CertRecord | None:
    """The certificate in a folder under certs/ (its first .crt), or, when only a key is there (a
    quarantine), the certificate the ledger has for that key: None if the CA signed none, as far as its
    journal shows. `identity` says where the ledger is searched."""
    source = store.certs_dir / folder
    crts = sorted(p for p in source.glob("*.crt") if p.name != "ca.crt")
    if crts:
        return parse_certificate_file(crts[0], folder)
    keys = sorted(source.glob("*.key"))
    try:
        key = load_pem_private_key(keys[0].read_bytes(), password=None)
    except (OSError, ValueError, IndexError):
        return None
    wanted = key_id(key.public_key())
    return next((r for r in inventory.of_identity(identity) if r.key_id == wanted), None)


@dataclass(frozen=True)
class IdentityState:
    """One identity's certificates and the CRL, read under its lock."""

    identity: str
    records: list[CertRecord]
    crl: CRLInfo | None
    crl_problem: str | None
    issuer: IssuerId
    now: dt.datetime

    def status(self, record: CertRecord) -> Status:
        return record.status(self.now, self.crl.revoked if self.crl else None, 0, self.issuer)

    def unexpired(self) -> list[CertRecord]:
        """Certificates of this CA that have not expired, revoked or not (the CRL is not needed)."""
        return unexpired_here(self.records, self.issuer, self.now)

    def valid(self) -> list[CertRecord]:
        return [r for r in self.records if self.status(r) in VALID_STATUSES]

    def live_folders(self) -> list[CertRecord]:
        return [r for r in self.records if r.is_live]


class Registrar:
    """Issues, re-issues and revokes; files what the CA signed. Holds no state of its own: the facade
    makes one per change."""

    def __init__(
        self,
        ca: StepCA,
        store: CertStore,
        inventory: Inventory,
        ledger: Ledger,
        audit: AuditLog,
        issuer: IssuerId,
        actor: Actor,
    ) -> None:
        self.ca = ca
        self.store = store
        self.inventory = inventory
        self.ledger = ledger
        self.audit = audit
        self.issuer = issuer
        self.actor = actor
        """Who asks: each change checks their role and names them in the audit trail."""
        self.job: str | None = None
        """The bulk enrolment job a change belongs to (pki.bulk), named in its audit lines."""

    def state(self, identity: str) -> IdentityState:
        """What is known of `identity` now. Call with its lock held."""
        records = self.inventory.of_identity(identity)
        now = dt.datetime.now(dt.UTC)
        crl, problem = fetch_crl(self.ca, self.ledger) if unexpired_here(records, self.issuer, now) else (None, None)
        return IdentityState(identity, records, crl, problem, self.issuer, now)

    def _audit(self, action: str, outcome: str = "ok", **details: Any) -> None:
        self.audit.record(action, outcome, actor=self.actor, job=self.job, **details)

    def _audit_after_change(self, action: str, details: dict[str, Any], outcome: str = "ok") -> str | None:
        """An audit line once the CA has signed or revoked, or a folder moved: a failure to write it must
        not stop what follows, nor make what was done look undone. Returns the failure, to show."""
        try:
            self._audit(action, outcome, **details)
        except OSError as exc:
            return f"The audit line '{action}' could not be written to {self.audit.path}: {exc.strerror or exc}."
        return None

    # -- issue ------------------------------------------------------------------------------------

    def issue(
        self, request: IssueRequest, *, max_days: int, replacing: int | None = None, refuse_if_token: bool = False
    ) -> Issued:
        """Validate, then under the identity's lock: refuse if it has a valid certificate (unless
        `replacing` names the live broker certificate being re-issued), make the key, have the CA sign,
        file certs/{identity}/ and archive the previous live folder. An unused enrolment token of the
        identity is a warning afterwards, or with `refuse_if_token` (bulk jobs) a refusal under the lock."""
        require(self.actor, Role.OPERATOR, "issue certificates")
        valid = validate_request(request, max_days)
        with self.store.locked(valid.cn):
            state = self.state(valid.cn)
            if replacing is None:
                refuse_if_active(state)
                if refuse_if_token and (pending := self.unused_tokens(valid.cn)):
                    raise TokenPending(
                        f"{valid.cn} has an unused enrolment token (until {pending[-1]:%Y-%m-%d %H:%M} UTC)."
                    )
            else:
                _check_replacing(state, replacing)
            labels = _labels_for_previous(state, replacing)
            if (self.store.certs_dir / valid.cn).exists() and valid.cn not in labels:
                raise InvalidInput(f"certs/{valid.cn} exists but holds no {valid.cn}.crt. Move it away first.")
            issued = self._issue_locked(valid, labels, replacing is not None)
        try:
            pending = () if refuse_if_token else self.unused_tokens(valid.cn)
        except OSError:
            pending = ()  # the certificate is filed; the audit trail's trouble is reported where it is written
        if pending:
            note = (
                f"An enrolment token made for {valid.cn} is valid until {pending[-1]:%Y-%m-%d %H:%M} UTC: if it was "
                "not used yet and the site uses it, the site holds two certificates (Reconcile shows them as a "
                "duplicate); revoke the one not in use."
            )
            issued = Issued(issued.record, issued.archived_as, issued.normalised_from, (*issued.warnings, note))
        return issued

    def token_statuses(self) -> list[TokenStatus]:
        """Every enrolment token made here with its state from the CA's journal, newest first."""
        made, cancelled = self.audit.tokens()
        return token_states(made, self.ledger.spent_tokens(), cancelled, dt.datetime.now(dt.UTC))

    def unused_tokens(self, cn: str) -> tuple[dt.datetime, ...]:
        """Expiry times of the tokens made for `cn` that the CA has not spent and that have not expired:
        each one used would give the site another certificate."""
        now = dt.datetime.now(dt.UTC)
        if not any(t.expires > now for t in self.audit.tokens_of(cn)):
            return ()  # no token of the site can be unused: the CA's journal need not be read
        statuses = self.token_statuses()
        return tuple(sorted(s.made.expires for s in statuses if s.made.site == cn and s.state is TokenState.UNUSED))

    def _issue_locked(self, valid: ValidRequest, labels: dict[str, Label], reissue: bool) -> Issued:
        action = "reissue" if reissue else "issue"
        key = new_private_key(valid.key_type)
        request_key_id = key_id(key.public_key())
        staging, asked = None, False
        try:
            staging = self.store.new_staging(valid.cn)
            self.store.write_new(staging / f"{valid.cn}.key", private_key_pem(key), 0o600)
            csr = signing_request(valid.cn, valid.sans, key)
            asked = True
            chain = self._sign(valid, csr, request_key_id)
        except (OSError, StepError) as exc:
            kept = self._after_unsigned_failure(valid.cn, staging, exc, asked) if staging else None
            with contextlib.suppress(OSError):  # a full disk may hold the audit trail too: say what failed first
                self._audit(
                    action,
                    "failed",
                    cn=valid.cn,
                    kind=valid.kind.value,
                    error=str(exc),
                    kept=kept,
                    key_id=request_key_id,
                )
            if not asked and isinstance(exc, OSError):
                raise NotIssued(
                    f"certs/ cannot take the new key of {valid.cn}: {exc.strerror or exc} ({exc.filename or ''}). "
                    "The CA was not asked: nothing was issued and nothing changed."
                ) from exc
            if kept:
                raise IssueUncertain(
                    f"{exc} Whether the CA signed {valid.cn} is not known: its journal shows no certificate for this "
                    f"request yet. The key is kept in certs/{kept}/; if the CA did sign, the Reconcile page shows "
                    "the certificate there, to file or revoke."
                ) from exc
            raise
        leaf = x509.load_pem_x509_certificates(chain.encode())[0]
        serial = f"{leaf.serial_number:X}"
        # The CA has signed: from here on the certificate must never be forgotten.
        warnings = [self._audit_after_change("sign", {"cn": valid.cn, "kind": valid.kind.value, "serial": serial})]
        with contextlib.suppress(OSError):  # the CA's journal brings it into the ledger as well
            self.ledger.add(leaf)
        archived: list[str] = []
        try:
            self.store.write_new(staging / f"{valid.cn}.crt", chain.encode(), 0o644)
            for folder, label in labels.items():
                archived.append(self.store.relabel(folder, valid.cn, label))
            self.store.move(staging, valid.cn)
        except OSError as exc:
            raise self._quarantine(valid, staging, leaf, exc, archived, warnings) from None
        record = parse_certificate_file(self.store.certs_dir / valid.cn / f"{valid.cn}.crt", valid.cn)
        details: dict[str, Any] = {"cn": valid.cn, "kind": valid.kind.value, "serial": serial, "days": valid.days}
        details |= {"sans": valid.sans, "key_type": valid.key_type, "folder": valid.cn}
        details |= {"archived_previous_as": archived or None, "typed": valid.normalised_from}
        warnings.append(self._audit_after_change(action, details))
        return Issued(record, tuple(archived), valid.normalised_from, tuple(w for w in warnings if w))

    def _sign(self, valid: ValidRequest, csr: bytes, request_key_id: str) -> str:
        """The CA's certificate chain for `csr`. When step fails in a way that leaves open whether the CA
        signed (a timeout, a broken connection, output that is not a certificate), its journal decides."""
        try:
            chain = self.ca.sign(csr, valid.kind, days=valid.days)
            if key_id(x509.load_pem_x509_certificates(chain.encode())[0].public_key()) != request_key_id:
                raise ValueError("the certificate is not for the key of this request")
            return chain
        except (CARefused, StepNotFound):
            raise
        except (StepError, ValueError) as exc:
            found = self._signed_meanwhile(valid.cn, request_key_id, 0.0 if _never_sent(exc) else JOURNAL_WAIT)
            if found is not None:
                try:
                    return found.pem() + self.ca.settings.intermediate.read_text()
                except OSError:
                    return found.pem()  # the leaf alone is still the certificate; never lose it over this
            if isinstance(exc, ValueError):
                raise StepError(f"step answered with something that is not a certificate: {exc}", [], None, "") from exc
            raise

    def _signed_meanwhile(self, identity: str, request_key_id: str, wait: float) -> CertRecord | None:
        """The certificate of the request's key, if the CA's journal shows one within `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            match = next((r for r in self.inventory.of_identity(identity) if r.key_id == request_key_id), None)
            if match or time.monotonic() >= deadline:
                return match
            time.sleep(0.2)

    def _after_unsigned_failure(self, identity: str, staging: Path, exc: Exception, asked: bool) -> str | None:
        """No certificate is known for the key. When the CA certainly signed nothing (it was never asked,
        refused, or could not be reached) the staging folder is removed: it holds at most a key nobody
        certified. Otherwise the CA may still sign it: the key is kept in quarantine. Returns the folder
        kept, if one was."""
        certain = not asked or isinstance(exc, CARefused | StepNotFound) or _never_sent(exc)
        try:
            if not certain:
                return self.store.move(staging, self.store.free_name(identity, Label.QUARANTINE))
            self.store.discard_unsigned(staging)
        except OSError:
            return staging.name
        return None

    def _quarantine(
        self,
        valid: ValidRequest,
        staging: Path,
        leaf: x509.Certificate,
        exc: OSError,
        archived: list[str],
        warnings: list[str | None],
    ) -> FilingFailed:
        """Filing failed after the CA signed: keep everything where it can be found and say where."""
        serial = f"{leaf.serial_number:X}"
        try:
            folder = self.store.move(staging, self.store.free_name(valid.cn, Label.QUARANTINE))
        except OSError:
            folder = staging.name
        has_crt = (self.store.certs_dir / folder / f"{valid.cn}.crt").exists()
        error = f"{exc.strerror or exc} ({exc.filename or ''})"
        details: dict[str, Any] = {"cn": valid.cn, "kind": valid.kind.value, "serial": serial, "folder": folder}
        details |= {"error": error, "archived_previous_as": archived or None}
        warnings.append(self._audit_after_change("issue", details, "quarantined"))
        where = f"certs/{folder}/ holds its private key" + (" and the certificate" if has_crt else "")
        if not has_crt:
            where += f"; the certificate is in the ledger as {self.ledger.ledger_dir / (serial + '.crt')}"
        return FilingFailed(
            f"The CA signed {valid.cn} (serial {serial}), but it could not be filed in certs/: "
            f"{exc.strerror or exc} ({exc.filename or ''}). Nothing was lost: {where}. Free the disk, then "
            "file it on the Reconcile page, or revoke it there. " + " ".join(w for w in warnings if w),
            leaf.serial_number,
            folder,
        )

    # -- revoke -----------------------------------------------------------------------------------

    def revoke(self, cn: str, *, reason_code: int, confirmation: str, only: Collection[int] | None = None) -> Revoked:
        """Revoke every certificate of the identity that this CA issued, that has not expired and that
        its CRL does not list yet, wherever it is filed (or those of `only`). The result has the CA's
        answer for each serial, whatever it was."""
        require(self.actor, Role.OPERATOR, "revoke certificates")
        identity = validate_cn(cn)
        if identity_of(confirmation) != identity:
            raise InvalidInput(f"To confirm, type the common name exactly: {identity}")
        if reason_code not in REVOCATION_REASONS:
            raise InvalidInput(f"Unknown revocation reason code {reason_code}.")
        with self.store.locked(identity):
            state = self.state(identity)
            targets = _unique(state.valid())
            if only is not None:
                unknown = set(only) - {r.serial for r in targets}
                if unknown:
                    raise InvalidInput(
                        f"{', '.join(f'{s:X}' for s in sorted(unknown))} is not a valid certificate of {identity} "
                        "(revoked or expired meanwhile?)."
                    )
                targets = [r for r in targets if r.serial in set(only)]
            if not targets:
                nothing = f"{identity} has no valid certificate to revoke."
                raise InvalidInput(nothing if only is None else "Choose at least one certificate.")
            answers = {r.serial: self._revoke_one(r, reason_code) for r in targets}
            done = {s for s, answer in answers.items() if answer in (REVOKED, ALREADY_REVOKED)}
            renamed, not_renamed = self._relabel_revoked(state.records, done)
            # A site may have renewed while this ran: a certificate valid now that was unknown before is news.
            try:
                after = self.state(identity)
            except OSError as exc:
                after = IdentityState(identity, [], None, f"certs/ cannot be read again: {exc}", self.issuer, state.now)
            known = {r.serial for r in state.records}
            still_valid = [r for r in _unique(after.valid()) if r.serial not in known]
        on_crl = after.crl.revoked if after.crl else frozenset()
        outcomes = [RevokeOutcome(r, answers[r.serial], r.serial in done, r.serial in on_crl) for r in targets]
        failures = {f"{o.record.serial:X}": o.answer for o in outcomes if not o.done}
        details: dict[str, Any] = {"cn": identity, "serials": [f"{s:X}" for s in done]}
        details |= {"reason": REVOCATION_REASONS[reason_code], "folders": renamed or None, "failed": failures or None}
        details |= {"not_renamed": not_renamed or None, "on_crl": [f"{s:X}" for s in done if s in on_crl]}
        details |= {"still_valid": [r.serial_hex for r in still_valid] or None}
        outcome = "ok" if not failures else ("partial" if done else "failed")
        warning = self._audit_after_change("revoke", details, outcome)
        return Revoked(identity, outcomes, renamed, after.crl_problem, not_renamed, still_valid, warning)

    def _revoke_one(self, record: CertRecord, reason_code: int) -> str:
        kind = Kind.SERVER if record.kind is Kind.SERVER else Kind.CLIENT
        try:
            self.ca.revoke(record.serial, reason_code, kind=kind)
        except CARefused as exc:
            return ALREADY_REVOKED if "already revoked" in str(exc) else str(exc)
        except StepError as exc:
            return str(exc)
        return REVOKED

    def _relabel_revoked(
        self, records: Sequence[CertRecord], revoked: set[int]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """A folder whose certificate was just revoked is named {identity}.revoked[.N]; returns the
        folders renamed and those that could not be (the revocation stands either way)."""
        renamed, failed = {}, {}
        for record in records:
            if record.folder and record.serial in revoked and record.label is not Label.REVOKED:
                try:
                    renamed[record.folder] = self.store.relabel(record.folder, record.identity, Label.REVOKED)
                except OSError as exc:
                    failed[record.folder] = str(exc.strerror or exc)
        return renamed, failed

    # -- reconcile actions --------------------------------------------------------------------------

    def file(self, folder: str) -> tuple[str, str | None]:
        """Put a quarantined, interrupted or misfiled folder where its certificate's status says: the
        live folder if it is the identity's only valid certificate, else the archive of its status.
        Returns the new name and, if it could not be written, why the audit line is missing."""
        require(self.actor, Role.OPERATOR, "file certificates")
        named = _folder_identity(folder)
        source = self.store.certs_dir / folder
        if not source.is_dir():
            raise InvalidInput(f"certs/{folder} is not a folder.")
        found = certificate_in_folder(self.store, self.inventory, folder, named)
        identity = found.identity if found and not found.error else named
        with self.store.locked(identity):
            record = certificate_in_folder(self.store, self.inventory, folder, identity)
            if record is None or record.error:
                raise InvalidInput(f"certs/{folder} holds no certificate, and the CA's journal none for its key.")
            if not (
                split_folder(folder)[1] is Label.QUARANTINE
                or is_staging(folder)
                or not named_for(folder, record.identity)
            ):
                raise InvalidInput(f"certs/{folder} is neither a quarantine folder nor misfiled.")
            state = self.state(identity)
            status = state.status(record)
            others = [r for r in state.valid() if r.serial != record.serial]
            if status in VALID_STATUSES and others:
                raise InvalidInput(
                    f"{identity} has another valid certificate (serial {others[0].serial_hex}, "
                    f"{others[0].source}). Revoke the one not in use first."
                )
            if record.path.parent != source:  # the filing had failed: the leaf from the ledger, and the intermediate
                chain = record.path.read_bytes() + self.ca.settings.intermediate.read_bytes()
                self.store.write_new(source / f"{identity}.crt", chain, 0o644)
            if status in VALID_STATUSES:
                for live in state.live_folders():
                    self.store.relabel(live.folder, identity, archive_label(state.status(live)))
                target = self.store.move(source, identity)
            else:
                target = self.store.move(source, self.store.free_name(identity, archive_label(status)))
        details: dict[str, Any] = {"cn": identity, "serial": record.serial_hex, "folder": folder}
        return target, self._audit_after_change("file", details | {"filed_as": target})

    def mark_foreign(self, folder: str) -> tuple[str, str | None]:
        """Rename a folder whose certificate another CA issued to {identity}.foreign[.N]; returns the new
        name and, if it could not be written, why the audit line is missing."""
        require(self.actor, Role.OPERATOR, "mark folders as foreign")
        identity = _folder_identity(folder)
        with self.store.locked(identity):
            record = certificate_in_folder(self.store, self.inventory, folder, identity)
            if record is None or record.error or record.issued_by(self.issuer) or record.path.parent.name != folder:
                raise InvalidInput(f"certs/{folder} holds no certificate of another CA.")
            target = self.store.relabel(folder, identity, Label.FOREIGN)
        details: dict[str, Any] = {"cn": record.identity, "serial": record.serial_hex, "folder": folder}
        return target, self._audit_after_change("mark-foreign", details | {"renamed": target})


def refuse_if_active(state: IdentityState) -> None:
    """Raise ActiveCertificateExists if the identity has a valid certificate anywhere in the fleet, or
    one that may be (unexpired, and the CRL cannot be read to tell)."""
    unreadable = [r for r in state.records if r.error and r.folder]
    if unreadable:
        raise InvalidInput(
            f"certs/{unreadable[0].folder} cannot be read as a certificate ({unreadable[0].error}): a certificate "
            f"of {state.identity} may be in it. Fix it or move it out of certs/ first."
        )
    candidates = state.unexpired() if state.crl is None else state.valid()
    if not candidates:
        return
    newest = max(candidates, key=lambda r: r.not_after)
    if state.crl is None:
        raise ValidityUnknown(
            f"{state.identity} has a certificate valid until {newest.not_after:%Y-%m-%d} and the CA's CRL cannot "
            f"be read to tell whether it was revoked ({state.crl_problem}). Try again when the CA is reachable."
        )
    raise ActiveCertificateExists(
        f"{state.identity} already has an active certificate (serial {newest.serial_hex}, valid until "
        f"{newest.not_after:%Y-%m-%d}, {newest.source}). Revoke it on the Revoke page first, then issue a new one."
    )


def _check_replacing(state: IdentityState, serial: int) -> None:
    live = next((r for r in state.live_folders() if r.serial == serial), None)
    if live is None or live.kind is not Kind.SERVER or state.status(live) not in VALID_STATUSES:
        raise InvalidInput(
            f"Only the valid broker certificate in certs/{state.identity}/ can be re-issued; it changed meanwhile "
            "(reload the page)."
        )


def _labels_for_previous(state: IdentityState, replacing: int | None) -> dict[str, Label]:
    """The label each live folder of the identity gets when a new certificate takes its place."""
    labels = {}
    for record in state.live_folders():
        if record.error:
            raise InvalidInput(
                f"certs/{record.folder} holds an unreadable certificate ({record.error}). Move it away first."
            )
        status = state.status(record)
        labels[record.folder] = Label.REPLACED if record.serial == replacing else archive_label(status)
    return labels


def _never_sent(exc: Exception) -> bool:
    """step connects before it sends anything: a refused connection means the CA got no request."""
    return isinstance(exc, CANotReached) or (
        isinstance(exc, CAUnreachable) and "connection refused" in str(exc).lower()
    )


def _unique(records: list[CertRecord]) -> list[CertRecord]:
    """One record per serial (a certificate can be both filed and in the ledger)."""
    return list({r.serial: r for r in reversed(records)}.values())[::-1]


def _folder_identity(folder: str) -> str:
    """The identity a folder name under certs/ belongs to; anything that is not one plain name is refused."""
    if not folder or "/" in folder or "\0" in folder or folder in (".", ".."):
        raise InvalidInput(f"{folder!r} is not a folder under certs/.")
    try:
        return validate_cn(staging_identity(folder) if is_staging(folder) else split_folder(folder)[0])
    except InvalidInput:
        raise InvalidInput(f"{folder!r} is not a folder of an identity under certs/.") from None
