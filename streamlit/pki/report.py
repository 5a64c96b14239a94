"""Figures and tables about the fleet's certificates, computed from inventory records.

Pure functions of (records, now, revoked serials, this CA): the pages render what these return.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pki.inventory import CertRecord, IssuerId
from pki.model import VALID_STATUSES, Kind, Status

SHOWN_STATUSES = (Status.ACTIVE, Status.EXPIRING, Status.EXPIRED, Status.REVOKED)
COLUMNS = ["CN", "Type", "Serial", "SANs", "Issued", "Expires", "Days left", "Status", "Source"]


class Row(NamedTuple):
    """One certificate as the tables show it (a named tuple: cheap to make 100,000 times)."""

    record: CertRecord
    status: Status
    superseded: bool = False
    """Valid, but a later certificate of the same identity and type exists (a renewal or re-issue)."""

    @property
    def cn(self) -> str:
        return self.record.cn

    @property
    def identity(self) -> str:
        return self.record.identity

    @property
    def valid(self) -> bool:
        return self.status in VALID_STATUSES

    def as_dict(self, now: dt.datetime) -> dict[str, object]:
        """The row's cells by COLUMNS (dates and statuses as shared strings)."""
        r = self.record
        return {
            "CN": r.cn,
            "Type": r.kind.value,
            "Serial": r.serial_hex,
            "SANs": ", ".join(r.sans),
            "Issued": day_text(r.not_before_ts),
            "Expires": day_text(r.not_after_ts),
            "Days left": max(r.days_left(now), 0) if self.valid else None,  # a revoked one has none
            "Status": _STATUS_TEXT[self.status, self.superseded],
            "Source": r.source,
        }


_STATUS_TEXT = {
    (status, superseded): status.value + (" (superseded)" if superseded else "")
    for status in Status
    for superseded in (False, True)
}
_DAY_TEXT: dict[int, str] = {}


def day_text(ts: float) -> str:
    """The UTC date of a POSIX time as YYYY-MM-DD, one string per day however many rows show it."""
    day = int(ts // 86400)
    text = _DAY_TEXT.get(day)
    if text is None:
        text = _DAY_TEXT.setdefault(day, dt.datetime.fromtimestamp(day * 86400, dt.UTC).strftime("%Y-%m-%d"))
    return text


def rows(
    records: Iterable[CertRecord],
    now: dt.datetime,
    revoked: frozenset[int] | None,
    expiring_days: int,
    issuer: IssuerId | None = None,
) -> list[Row]:
    """One row per certificate, with its status and whether a later one of its identity replaced it."""
    now_ts = now.timestamp()
    table = [Row(r, r.status_at(now_ts, revoked, expiring_days, issuer)) for r in records]

    def recency(record: CertRecord) -> tuple[float, bool, float]:
        # Issued later wins (a broker re-issued for fewer days replaces the old one all the same); ties
        # (a re-issue within the same second) go to the certificate in the live certs/{CN} folder.
        return (record.not_before_ts, record.folder == record.identity, record.not_after_ts)

    newest: dict[tuple[str, Kind], tuple[float, bool, float]] = {}
    several: set[tuple[str, Kind]] = set()
    for row in table:
        if row.status in VALID_STATUSES:
            key = (row.record.identity, row.record.kind)
            known = newest.get(key)
            if known is None:
                newest[key] = recency(row.record)
            else:
                several.add(key)
                newest[key] = max(known, recency(row.record))
    if not several:  # one valid certificate per identity and type: nothing is superseded
        return table
    for i, row in enumerate(table):
        if row.status in VALID_STATUSES:
            key = (row.record.identity, row.record.kind)
            if key in several and recency(row.record) < newest[key]:
                table[i] = Row(row.record, row.status, True)
    return table


def status_counts(table: Sequence[Row]) -> dict[Status, int]:
    counts = Counter(row.status for row in table)
    return {status: counts.get(status, 0) for status in SHOWN_STATUSES}


def counts_by_type(table: Sequence[Row]) -> dict[Status, dict[Kind, int]]:
    """Status x type, every cell present (zeros included) for client and server."""
    kinds = [Kind.CLIENT, Kind.SERVER, *sorted({r.record.kind for r in table} - {Kind.CLIENT, Kind.SERVER})]
    result = {status: dict.fromkeys(kinds, 0) for status in SHOWN_STATUSES}
    for row in table:
        if row.status in result:
            result[row.status][row.record.kind] += 1
    return result


def expiring_within(table: Sequence[Row], now: dt.datetime, days: int) -> list[Row]:
    """Current valid certificates that expire within `days`, soonest first. Superseded ones (renewed or
    re-issued) are left out: their replacement is what matters."""
    limit = now.timestamp() + days * 86400
    soon = [r for r in table if r.valid and not r.superseded and r.record.not_after_ts <= limit]
    return sorted(soon, key=lambda r: r.record.not_after_ts)


def expiries_per_week(table: Sequence[Row], now: dt.datetime, weeks: int = 53) -> list[tuple[dt.date, int]]:
    """How many valid certificates expire in each week (Monday first) from this week on."""
    start = (now - dt.timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    start_ts = start.timestamp()
    counts = [0] * weeks
    for row in table:
        if row.valid and not row.superseded:
            index = int((row.record.not_after_ts - start_ts) // 86400) // 7
            if 0 <= index < weeks:
                counts[index] += 1
    return [((start + dt.timedelta(weeks=i)).date(), counts[i]) for i in range(weeks)]


RENEWAL_OVERDUE = 0.75
"""Sites renew themselves at two thirds of their lifetime: none newer by three quarters means it fails."""


def overdue_renewals(table: Sequence[Row], now: dt.datetime, after: float = RENEWAL_OVERDUE) -> list[Row]:
    """Sites' valid, not superseded certificates past `after` of their life for which the CA's
    records hold no newer certificate of the same site: their renewal timers are failing."""
    newest: dict[str, float] = {}
    for row in table:
        if row.record.kind is Kind.CLIENT:
            newest[row.identity] = max(newest.get(row.identity, row.record.not_before_ts), row.record.not_before_ts)
    now_ts = now.timestamp()
    found = []
    for row in table:
        record = row.record
        if record.kind is not Kind.CLIENT or not row.valid or row.superseded:
            continue
        due = record.not_before_ts + (record.not_after_ts - record.not_before_ts) * after
        if now_ts >= due and newest[row.identity] <= record.not_before_ts:
            found.append(row)
    return found


def server_expiry_warnings(table: Sequence[Row], now: dt.datetime, days: int) -> list[Row]:
    """Current broker certificates that cannot renew and will soon need a re-issue: those expiring within
    `days`, or within the last third of their lifetime when that is shorter (else a 30-day certificate
    would warn from the day it is issued)."""
    return broker_warnings(expiring_within(table, now, days), now)


def broker_warnings(soon: Sequence[Row], now: dt.datetime) -> list[Row]:
    """Of the current certificates that expire soon, the brokers' within the last third of their lifetime."""
    now_ts = now.timestamp()
    return [
        row
        for row in soon
        if row.record.kind is Kind.SERVER
        and row.record.not_after_ts - now_ts <= (row.record.not_after_ts - row.record.not_before_ts) / 3
    ]


@dataclass(frozen=True)
class FleetCounts:
    """The Dashboard's headline figures: what is on the fleet, not how many certificates are."""

    sites: int
    """Sites (client identities) with a current valid certificate."""
    brokers: int
    """Brokers (server identities) with a current valid certificate."""
    expiring: int
    """Of those, how many need attention soon: a site's certificate within `expiring_days` (it should
    have renewed), a broker's as the broker warnings say."""
    revoked: int
    """Revoked certificates (each serial)."""


def fleet_counts(table: Sequence[Row], now: dt.datetime, expiring_days: int, server_days: int) -> FleetCounts:
    current = [r for r in table if r.valid and not r.superseded]
    return counts_of(
        current,
        expiring_within(current, now, expiring_days),
        server_expiry_warnings(current, now, server_days),
        sum(1 for r in table if r.status is Status.REVOKED),
    )


def counts_of(current: Sequence[Row], soon: Sequence[Row], broker_warned: Sequence[Row], revoked: int) -> FleetCounts:
    """The counts from the current certificates, those of them expiring soon, the brokers warned about."""
    sites = {r.record.identity for r in current if r.record.kind is Kind.CLIENT}
    brokers = {r.record.identity for r in current if r.record.kind is Kind.SERVER}
    soon_sites = {r.record.identity for r in soon if r.record.kind is Kind.CLIENT}
    soon_brokers = {r.record.identity for r in broker_warned}
    return FleetCounts(len(sites), len(brokers), len(soon_sites) + len(soon_brokers), revoked)


def revocable(table: Sequence[Row]) -> dict[str, list[Row]]:
    """Identities with valid certificates, and those certificates (wherever they are filed)."""
    by_identity: dict[str, list[Row]] = {}
    for row in table:
        if row.valid:
            by_identity.setdefault(row.identity, []).append(row)
    return dict(sorted(by_identity.items()))


def likely_to_revoke(rows: Sequence[Row]) -> list[Row]:
    """What an operator revoking one identity most likely means: a broker's replaced (superseded)
    certificates when it has any, never the one it uses now; otherwise all of them (a site goes whole)."""
    superseded = [row for row in rows if row.superseded and row.record.kind is Kind.SERVER]
    return superseded or list(rows)
