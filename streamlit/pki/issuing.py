"""Issue, re-issue and revoke, as the operator means them: validate, call the CA, file, audit.

Nothing is overwritten or deleted. A new certificate is written into a hidden staging folder and
renamed into place only when complete, so a failed issuance leaves nothing behind; a folder it
replaces is renamed ({CN}.expired, {CN}.revoked, {CN}.replaced), not removed.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from pki.audit import AuditLog
from pki.ca import KEY_TYPES, REVOCATION_REASONS, CertKind, StepCA
from pki.inventory import CertRecord, Inventory, Kind, Status, archive_folder_name, parse_certificate_file
from pki.step import CARefused, StepError
from pki.validate import InvalidInput, validate_cn, validate_days, validate_san, validate_sans

VALID = (Status.ACTIVE, Status.EXPIRING)


class ActiveCertificateExists(InvalidInput):
    """The CN already has a valid certificate; it must be revoked before another is issued."""


@dataclass(frozen=True)
class IssueRequest:
    cn: str
    kind: CertKind
    sans: str | list[str]
    days: int | str
    key_type: str


@dataclass(frozen=True)
class ValidRequest:
    cn: str
    kind: CertKind
    sans: list[str]
    days: int
    key_type: str


@dataclass(frozen=True)
class Issued:
    record: CertRecord
    archived_as: str | None
    """The name the previous folder of this CN was moved to, if there was one."""


@dataclass(frozen=True)
class Revoked:
    cn: str
    serials: list[int]
    """Serials this call revoked (or found already revoked at the CA)."""
    folder: str | None
    """What certs/{CN} was renamed to, if it existed."""
    failures: dict[int, str] = field(default_factory=dict)
    """Serials the CA did not revoke, with its reason."""


def validate_request(request: IssueRequest, max_days: int) -> ValidRequest:
    """All checks that need no CA; raises InvalidInput with the first problem found."""
    cn = validate_cn(request.cn)
    sans = validate_sans(request.sans)
    if request.kind is CertKind.SERVER:
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
    return ValidRequest(cn, request.kind, sans, days, request.key_type)


def valid_certificates(
    inventory: Inventory, cn: str, revoked_serials: frozenset[int] | None, now: dt.datetime | None = None
) -> list[CertRecord]:
    """The unexpired, unrevoked certificates of `cn`: in certs/ or known from the CA's log."""
    now = now or dt.datetime.now(dt.UTC)
    return [r for r in inventory.of_cn(cn) if r.status(now, revoked_serials, expiring_days=0) in VALID]


def refuse_if_active(inventory: Inventory, cn: str, revoked_serials: frozenset[int] | None) -> None:
    """Raise ActiveCertificateExists if `cn` already has a valid certificate anywhere in the fleet."""
    active = valid_certificates(inventory, cn, revoked_serials)
    if not active:
        return
    newest = max(active, key=lambda r: r.not_after)
    if revoked_serials is None:
        raise ActiveCertificateExists(
            f"{cn} has a certificate valid until {newest.not_after:%Y-%m-%d} and the CA's CRL cannot be read "
            "to tell whether it was revoked. Try again when the CA is reachable."
        )
    raise ActiveCertificateExists(
        f"{cn} already has an active certificate (serial {newest.serial_hex}, valid until "
        f"{newest.not_after:%Y-%m-%d}, {newest.source}). Revoke it on the Revoke page first, then issue a new one."
    )


def issue_certificate(
    ca: StepCA,
    inventory: Inventory,
    request: IssueRequest,
    *,
    max_days: int,
    revoked_serials: frozenset[int] | None,
    audit: AuditLog,
    replace_active: bool = False,
) -> Issued:
    """Validate, issue through step, and file certs/{CN}/{CN}.crt + .key atomically.

    `replace_active` is for re-issuing a broker certificate before it expires: the CN's valid
    certificate stays valid (the broker switches when it is installed) and its folder is kept as
    {CN}.replaced.
    """
    valid = validate_request(request, max_days)
    certs_dir = inventory.certs_dir
    folder = certs_dir / valid.cn
    if folder.exists() and not (folder / f"{valid.cn}.crt").exists():
        raise InvalidInput(f"certs/{valid.cn} exists but holds no {valid.cn}.crt. Move it away first.")
    if not replace_active:
        refuse_if_active(inventory, valid.cn, revoked_serials)
    archive_as = None
    if folder.exists():
        current = parse_certificate_file(folder / f"{valid.cn}.crt", valid.cn)
        if current.error:
            raise InvalidInput(
                f"certs/{valid.cn} holds an unreadable certificate ({current.error}). Move it away first."
            )
        status = current.status(dt.datetime.now(dt.UTC), revoked_serials, expiring_days=0)
        archive_as = {Status.REVOKED: "revoked", Status.EXPIRED: "expired"}.get(status, "replaced")

    staging = certs_dir / f".issue-{valid.cn}-{secrets.token_hex(4)}"
    archived_name = None
    try:
        certs_dir.mkdir(parents=True, exist_ok=True)
        staging.mkdir(mode=0o700)
        crt, key = staging / f"{valid.cn}.crt", staging / f"{valid.cn}.key"
        ca.issue(
            valid.cn, valid.kind, sans=valid.sans, days=valid.days, key_type=valid.key_type, crt_path=crt, key_path=key
        )
        os.chmod(key, 0o600)
        os.chmod(crt, 0o644)
        if archive_as:
            archived_name = archive_folder_name(certs_dir, valid.cn, archive_as)
            os.rename(folder, certs_dir / archived_name)
        try:
            os.rename(staging, folder)  # fails rather than replace a folder made meanwhile
        except OSError:
            if archived_name:
                os.rename(certs_dir / archived_name, folder)
                archived_name = None
            raise _lost_race(ca, valid, staging, certs_dir) from None
    except (StepError, InvalidInput, OSError) as exc:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        audit.record("issue", "failed", cn=valid.cn, kind=valid.kind.value, error=str(exc))
        raise
    record = parse_certificate_file(folder / f"{valid.cn}.crt", valid.cn)
    audit.record(
        "reissue" if replace_active else "issue",
        cn=valid.cn,
        kind=valid.kind.value,
        serial=record.serial_hex,
        days=valid.days,
        sans=valid.sans,
        key_type=valid.key_type,
        archived_previous_as=archived_name,
    )
    return Issued(record, archived_name)


def _lost_race(ca: StepCA, valid: ValidRequest, staging: Path, certs_dir: Path) -> InvalidInput:
    """Another session filed certs/{CN} while this one was issuing: this certificate is valid at the
    CA but has no place. Revoke it (superseded) and keep it as {CN}.revoked.N, so nothing is lost."""
    record = parse_certificate_file(staging / f"{valid.cn}.crt", valid.cn)
    kept = archive_folder_name(certs_dir, valid.cn, "revoked")
    try:
        ca.revoke(record.serial, 4, kind=valid.kind)
        os.rename(staging, certs_dir / kept)
    except (StepError, OSError) as exc:
        return InvalidInput(
            f"{valid.cn} was issued twice at the same moment; the second certificate (serial {record.serial_hex}) "
            f"could not be revoked or filed ({exc}): it is in certs/{staging.name}/. Revoke it by serial."
        )
    return InvalidInput(
        f"{valid.cn} was issued by another session at the same moment. This session's certificate "
        f"(serial {record.serial_hex}) was revoked and kept in certs/{kept}/."
    )


def reissue_certificate(
    ca: StepCA,
    inventory: Inventory,
    record: CertRecord,
    *,
    max_days: int,
    revoked_serials: frozenset[int] | None,
    audit: AuditLog,
) -> Issued:
    """A fresh certificate (new key) with the names, type, key type and lifetime of `record`.

    For broker certificates: they cannot renew over mTLS (serverAuth only), so they are re-issued.
    """
    if record.kind is not Kind.SERVER or not record.folder or record.archived:
        raise InvalidInput(f"Only the current server certificate in certs/{record.cn}/ can be re-issued.")
    lifetime = max(1, round((record.not_after - record.not_before).total_seconds() / 86400))
    request = IssueRequest(
        cn=record.cn,
        kind=CertKind.SERVER,
        sans=list(record.sans),
        days=min(lifetime, max_days),
        key_type=record.key_type if record.key_type in KEY_TYPES else "EC P-256",
    )
    return issue_certificate(
        ca, inventory, request, max_days=max_days, revoked_serials=revoked_serials, audit=audit, replace_active=True
    )


def revoke_cn(
    ca: StepCA,
    inventory: Inventory,
    cn: str,
    *,
    reason_code: int,
    confirmation: str,
    revoked_serials: frozenset[int] | None,
    audit: AuditLog,
    only: Collection[int] | None = None,
) -> Revoked:
    """Revoke every unexpired serial of `cn` (renewals included), or those of `only` (e.g. just the
    certificate a broker re-issue replaced), then rename certs/{CN} to {CN}.revoked if its one went."""
    if confirmation.strip() != cn:
        raise InvalidInput(f"To confirm, type the common name exactly: {cn}")
    if reason_code not in REVOCATION_REASONS:
        raise InvalidInput(f"Unknown revocation reason code {reason_code}.")
    targets = valid_certificates(inventory, cn, revoked_serials)
    if only is not None:
        unknown = set(only) - {r.serial for r in targets}
        if unknown:
            raise InvalidInput(f"{', '.join(f'{s:X}' for s in unknown)} is not a valid certificate of {cn}.")
        targets = [r for r in targets if r.serial in set(only)]
    if not targets:
        raise InvalidInput(
            f"{cn} has no valid certificate to revoke." if only is None else "Choose at least one certificate."
        )
    done: list[int] = []
    failures: dict[int, str] = {}
    for record in targets:
        kind = CertKind.SERVER if record.kind is Kind.SERVER else CertKind.CLIENT
        try:
            ca.revoke(record.serial, reason_code, kind=kind)
        except CARefused as exc:
            if "already revoked" not in str(exc):
                failures[record.serial] = str(exc)
                continue
        except StepError as exc:
            failures[record.serial] = str(exc)
            continue
        done.append(record.serial)
    folder = None
    live = next((r for r in targets if r.folder == cn), None)
    if live and live.serial in done:
        folder = archive_folder_name(inventory.certs_dir, cn, "revoked")
        try:
            os.rename(inventory.certs_dir / cn, inventory.certs_dir / folder)
        except FileNotFoundError:
            folder = None  # another session archived it meanwhile; the revocation stands
    audit.record(
        "revoke",
        "ok" if not failures else ("partial" if done else "failed"),
        cn=cn,
        serials=[f"{s:X}" for s in done],
        reason=REVOCATION_REASONS[reason_code],
        folder=folder,
        failed={f"{s:X}": reason for s, reason in failures.items()} or None,
    )
    if not done:
        first = next(iter(failures.values()))
        raise StepError(f"Nothing was revoked. {first}", [], None, "")
    return Revoked(cn, done, folder, failures)
