"""Issue and revoke, as the operator means them: validate, call the CA, file the result, audit.

Nothing is overwritten or deleted. A new certificate is written into a hidden staging folder and
renamed into place only when complete, so a failed issuance leaves nothing behind; a folder it
replaces (expired or revoked) is renamed, not removed.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from pki.audit import AuditLog
from pki.ca import KEY_TYPES, REVOCATION_REASONS, CertKind, StepCA
from pki.inventory import CertRecord, Inventory, Kind, Status, archive_folder_name, parse_certificate_file
from pki.step import CARefused, StepError
from pki.validate import InvalidInput, validate_cn, validate_days, validate_sans


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
    record: CertRecord
    folder: str
    already_revoked: bool


def validate_request(request: IssueRequest, max_days: int) -> ValidRequest:
    """All checks that need no CA; raises InvalidInput with the first problem found."""
    cn = validate_cn(request.cn)
    sans = validate_sans(request.sans)
    if request.kind is CertKind.SERVER and cn not in sans:
        sans.insert(0, cn.lower())  # a TLS client checks the SANs, never the CN
    days = validate_days(request.days, max_days)
    if request.key_type not in KEY_TYPES:
        raise InvalidInput(f"Unknown key type {request.key_type!r}; choose one of {', '.join(KEY_TYPES)}.")
    return ValidRequest(cn, request.kind, sans, days, request.key_type)


def _archive_reason(current: CertRecord, revoked_serials: frozenset[int] | None) -> str:
    """'revoked' or 'expired' for a certificate that may be replaced; raises if it is still valid."""
    if current.error:
        raise InvalidInput(
            f"certs/{current.folder} holds an unreadable certificate ({current.error}). Move it away first."
        )
    status = current.status(dt.datetime.now(dt.UTC), revoked_serials, expiring_days=0)
    if status is Status.REVOKED:
        return "revoked"
    if status is Status.EXPIRED:
        return "expired"
    if revoked_serials is None:
        raise ActiveCertificateExists(
            f"{current.cn} has a certificate valid until {current.not_after:%Y-%m-%d} and the CA's CRL cannot be "
            "read to tell whether it was revoked. Try again when the CA is reachable."
        )
    raise ActiveCertificateExists(
        f"{current.cn} already has an active certificate (serial {current.serial_hex}, valid until "
        f"{current.not_after:%Y-%m-%d}). Revoke it on the Revoke page first, then issue a new one."
    )


def issue_certificate(
    ca: StepCA,
    inventory: Inventory,
    request: IssueRequest,
    *,
    max_days: int,
    revoked_serials: frozenset[int] | None,
    audit: AuditLog,
) -> Issued:
    """Validate, issue through step, and file certs/{CN}/{CN}.crt + .key atomically."""
    valid = validate_request(request, max_days)
    certs_dir = inventory.certs_dir
    folder = certs_dir / valid.cn
    current = parse_certificate_file(folder / f"{valid.cn}.crt", valid.cn) if folder.exists() else None
    if folder.exists() and not (folder / f"{valid.cn}.crt").exists():
        raise InvalidInput(f"certs/{valid.cn} exists but holds no {valid.cn}.crt. Move it away first.")
    archive_as = _archive_reason(current, revoked_serials) if current else None

    certs_dir.mkdir(parents=True, exist_ok=True)
    staging = certs_dir / f".issue-{valid.cn}-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    archived_name = None
    try:
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
            raise
    except (StepError, InvalidInput, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        audit.record("issue", "failed", cn=valid.cn, kind=valid.kind.value, error=str(exc))
        raise
    record = parse_certificate_file(folder / f"{valid.cn}.crt", valid.cn)
    audit.record(
        "issue",
        cn=valid.cn,
        kind=valid.kind.value,
        serial=record.serial_hex,
        days=valid.days,
        sans=valid.sans,
        key_type=valid.key_type,
        archived_previous_as=archived_name,
    )
    return Issued(record, archived_name)


def revoke_certificate(
    ca: StepCA,
    inventory: Inventory,
    record: CertRecord,
    *,
    reason_code: int,
    confirmation: str,
    audit: AuditLog,
) -> Revoked:
    """Revoke by serial at the CA, then rename certs/{CN} to {CN}.revoked (or .revoked.N)."""
    if confirmation.strip() != record.cn:
        raise InvalidInput(f"To confirm, type the common name exactly: {record.cn}")
    if reason_code not in REVOCATION_REASONS:
        raise InvalidInput(f"Unknown revocation reason code {reason_code}.")
    kind = CertKind.SERVER if record.kind is Kind.SERVER else CertKind.CLIENT
    already = False
    try:
        ca.revoke(record.serial, reason_code, kind=kind)
    except CARefused as exc:
        if "already revoked" not in str(exc):
            audit.record("revoke", "failed", cn=record.cn, serial=record.serial_hex, error=str(exc))
            raise
        already = True
    folder = record.folder
    if record.archived is None:
        folder = archive_folder_name(inventory.certs_dir, record.cn, "revoked")
        os.rename(inventory.certs_dir / record.folder, inventory.certs_dir / folder)
    audit.record(
        "revoke",
        cn=record.cn,
        serial=record.serial_hex,
        reason=REVOCATION_REASONS[reason_code],
        folder=folder,
        already_revoked=already or None,
    )
    return Revoked(record, folder, already)


def key_path(record: CertRecord) -> Path:
    return record.path.with_suffix(".key")
