"""Where certs/, the ledger and the CA's CRL disagree, and what to do about each.

The CA's records are the truth; a folder name is only what someone wrote down. Each certificate is
listed at most once, under the first problem that fits:

- quarantined:    signed by the CA, but its filing failed (or was interrupted): the key, and the
                  certificate if it was written, wait in a quarantine (or left-over staging) folder
- foreign:        filed in certs/ but issued by another CA (an earlier one, before a reset)
- misfiled:       in a folder not named for its identity (moved or copied by hand): decisions about
                  that identity may not see it there, so it is put back under its name
- archived-valid: valid at the CA but filed as revoked or expired
- not-filed:      signed by the CA for this GUI (the audit trail has its serial), in no folder, and
                  still valid: its key is not here
- duplicate:      one identity has valid certificates with different keys: two devices, or two
                  issuances, hold the same identity

A re-issued broker's old certificate ({CN}.replaced) is valid until it is revoked or expires: its
folder says so, so it is no disagreement (and not a duplicate of the new one).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import compress
from operator import attrgetter

from pki.folders import Label, named_for
from pki.inventory import CertRecord
from pki.model import VALID_STATUSES, Status
from pki.report import Row


class Problem(StrEnum):
    FOREIGN = "foreign"
    MISFILED = "misfiled"
    QUARANTINED = "quarantined"
    ARCHIVED_VALID = "archived-valid"
    NOT_FILED = "not-filed"
    DUPLICATE = "duplicate"


class Action(StrEnum):
    REVOKE = "revoke"
    FILE = "file"
    MARK_FOREIGN = "mark-foreign"


@dataclass(frozen=True)
class Disagreement:
    problem: Problem
    identity: str
    record: CertRecord | None
    """The certificate concerned; None for a quarantined key whose certificate cannot be found."""
    folder: str
    """Where it is under certs/ ('' when in no folder)."""
    detail: str
    actions: tuple[Action, ...]

    @property
    def serial_hex(self) -> str:
        return self.record.serial_hex if self.record else ""


@dataclass(frozen=True)
class Interrupted:
    """A staging or quarantine folder, and the certificate of its key if the CA signed one."""

    folder: str
    identity: str
    record: CertRecord | None
    valid: bool


def serials_of(interrupted: Sequence[Interrupted]) -> frozenset[int]:
    return frozenset(item.record.serial for item in interrupted if item.record)


def of_interrupted(interrupted: Sequence[Interrupted]) -> list[Disagreement]:
    found: list[Disagreement] = []
    for item in interrupted:
        if item.record is None:
            detail = "holds a key the CA never certified, as far as its journal shows: nothing to do"
            found.append(Disagreement(Problem.QUARANTINED, item.identity, None, item.folder, detail, ()))
            continue
        state = "valid at the CA" if item.valid else "no longer valid"
        actions = (Action.FILE, Action.REVOKE) if item.valid else (Action.FILE,)
        detail = f"signed by the CA but not filed ({state}); file it, or revoke it"
        found.append(Disagreement(Problem.QUARANTINED, item.identity, item.record, item.folder, detail, actions))
    return found


def of_rows(table: Sequence[Row], signed_here: Mapping[int, str], skip: frozenset[int]) -> list[Disagreement]:
    """The table's disagreements, leaving out the serials in `skip` (those of interrupted folders). Depends
    on the table and the audit trail only: the pages work it out once per table, not every 30 s."""
    found: list[Disagreement] = []
    seen: set[int] = set(skip)

    def add(problem: Problem, row: Row, detail: str, *actions: Action) -> None:
        found.append(Disagreement(problem, row.identity, row.record, row.record.folder, detail, actions))
        seen.add(row.record.serial)

    for row in _unusual(table):
        record = row.record
        if record.serial in seen or record.error:
            continue
        if row.status is Status.FOREIGN and record.folder and record.label is not Label.FOREIGN:
            add(Problem.FOREIGN, row, f"issued by another CA ({record.issuer})", Action.MARK_FOREIGN)
        elif (
            record.folder
            and row.status is not Status.FOREIGN
            and record.folder != record.identity  # the live folder: named for it, no need to parse the name
            and not named_for(record.folder, record.identity)
        ):
            actions = (Action.FILE, Action.REVOKE) if row.valid else (Action.FILE,)
            add(Problem.MISFILED, row, f"a certificate of {row.identity} in a folder not named for it", *actions)
        elif row.valid and record.label in (Label.REVOKED, Label.EXPIRED):
            add(Problem.ARCHIVED_VALID, row, f"valid at the CA but filed as {record.label}", Action.REVOKE)
        elif row.valid and not record.folder and record.serial in signed_here:
            # The inventory shows a ledger copy only when no folder holds the serial.
            add(Problem.NOT_FILED, row, "signed for this GUI, valid, but in no folder (no key here)", Action.REVOKE)

    candidates = [
        r
        for r in _sharing_identity(table)
        if r.status in VALID_STATUSES and r.record.serial not in seen and r.record.label is not Label.REPLACED
    ]
    several = Counter(r.record.identity for r in candidates)
    keys: dict[str, dict[str, list[Row]]] = {}
    for row in candidates:
        if several[row.record.identity] > 1:  # one valid certificate cannot disagree with itself
            keys.setdefault(row.record.identity, {}).setdefault(row.record.key_id, []).append(row)
    for identity, by_key in keys.items():
        if len(by_key) > 1:
            for rows in by_key.values():
                for row in rows:
                    add(Problem.DUPLICATE, row, f"one of {len(by_key)} valid keys of {identity}", Action.REVOKE)
    return found


_FOLDER, _IDENTITY, _STATUS = attrgetter("record.folder"), attrgetter("record.identity"), attrgetter("status")


def _unusual(table: Sequence[Row]) -> Iterator[Row]:
    """Every row but the fleet's usual case, a certificate of this CA in its identity's live folder (to which
    no problem of the table but a duplicate applies), in order. Map and compress: no Python call per row."""
    folders = list(map(_FOLDER, table))
    elsewhere = map(operator.or_, map(operator.ne, folders, map(_IDENTITY, table)), map(operator.not_, folders))
    return compress(table, map(operator.or_, elsewhere, map(Status.FOREIGN.__eq__, map(_STATUS, table))))


def _sharing_identity(table: Sequence[Row]) -> list[Row]:
    """The valid rows whose identity has another valid row, in order: what may hold duplicate keys."""
    valid = list(compress(table, map(VALID_STATUSES.__contains__, map(_STATUS, table))))
    identities = list(map(_IDENTITY, valid))
    if len(set(identities)) == len(identities):
        return []
    counted = Counter(identities)
    return [row for row, identity in zip(valid, identities, strict=True) if counted[identity] > 1]
