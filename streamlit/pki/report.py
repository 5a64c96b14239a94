"""Figures and tables about the fleet's certificates, computed from inventory records.

Pure functions of (records, now, revoked serials, this CA): the pages render what these return.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import attrgetter
from typing import NamedTuple

from pki.inventory import CertRecord, IssuerId, statuses_at
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
    records = list(records)
    statuses = statuses_at(records, now.timestamp(), revoked, expiring_days, issuer)
    table = list(map(_new_row, zip(records, statuses, repeat(False), strict=False)))
    # Map, zip and compress make no Python call per row: a table of 100,000 is built at every start.
    valid = list(compress(table, map(VALID_STATUSES.__contains__, statuses)))
    keys = list(map(_IDENTITY_AND_KIND, valid))
    several = {key for key, count in Counter(keys).items() if count > 1} if len(set(keys)) < len(keys) else set()
    if not several:  # one valid certificate per identity and type: nothing is superseded
        return table

    def recency(record: CertRecord) -> tuple[float, bool, float]:
        # Issued later wins (a broker re-issued for fewer days replaces the old one all the same); ties
        # (a re-issue within the same second) go to the certificate in the live certs/{CN} folder.
        return (record.not_before_ts, record.folder == record.identity, record.not_after_ts)

    newest: dict[tuple[str, Kind], tuple[float, bool, float]] = {}
    for row, key in zip(valid, keys, strict=True):
        if key in several:
            newest[key] = max(newest.get(key, recency(row.record)), recency(row.record))
    for i, row in enumerate(table):
        if row.status in VALID_STATUSES:
            key = (row.record.identity, row.record.kind)
            if key in several and recency(row.record) < newest[key]:
                table[i] = Row(row.record, row.status, True)
    return table


_new_row = functools.partial(tuple.__new__, Row)
"""A row from (record, status, superseded) without the named tuple's own __new__ (a Python call per row)."""
_IDENTITY_AND_KIND = attrgetter("record.identity", "record.kind")
_STATUS_AND_KIND = attrgetter("status", "record.kind")
_STATUS_AND_SUPERSEDED = attrgetter("status", "superseded")
_IDENTITY, _KIND = attrgetter("record.identity"), attrgetter("record.kind")
_NOT_AFTER = attrgetter("record.not_after_ts")
_CURRENT = frozenset((status, False) for status in VALID_STATUSES)
"""(status, superseded) of a current certificate."""


def current_rows(table: Iterable[Row]) -> list[Row]:
    """The valid certificates a renewal or re-issue has not replaced, in the table's order: the order their
    records lie in memory, in which a pass over 100,000 goes four times as fast as in expiry order."""
    rows = list(table)
    return list(compress(rows, map(_CURRENT.__contains__, map(_STATUS_AND_SUPERSEDED, rows))))


def soonest_first(rows: Iterable[Row]) -> list[Row]:
    """The rows by expiry, the soonest first."""
    return sorted(rows, key=_NOT_AFTER)


def current_of(table: Iterable[Row]) -> list[Row]:
    """The current certificates (current_rows), soonest expiry first."""
    return soonest_first(current_rows(table))


def status_counts(table: Sequence[Row]) -> dict[Status, int]:
    counts = Counter(row.status for row in table)
    return {status: counts.get(status, 0) for status in SHOWN_STATUSES}


def counts_by_type(table: Sequence[Row]) -> dict[Status, dict[Kind, int]]:
    """Status x type, every cell present (zeros included) for client and server."""
    counted = Counter(map(_STATUS_AND_KIND, table))
    kinds = [Kind.CLIENT, Kind.SERVER, *sorted({kind for _, kind in counted} - {Kind.CLIENT, Kind.SERVER})]
    return {status: {kind: counted.get((status, kind), 0) for kind in kinds} for status in SHOWN_STATUSES}


def expiring_within(table: Sequence[Row], now: dt.datetime, days: int) -> list[Row]:
    """Current valid certificates that expire within `days`, soonest first. Superseded ones (renewed or
    re-issued) are left out: their replacement is what matters."""
    current = current_of(table)
    return current[: bisect.bisect_right(current, now.timestamp() + days * 86400, key=_NOT_AFTER)]


def expiries_per_week(table: Sequence[Row], now: dt.datetime, weeks: int = 53) -> list[tuple[dt.date, int]]:
    """How many valid certificates expire in each week (Monday first) from this week on."""
    return weekly(expiries_of(current_of(table)), now, weeks)


def expiries_of(rows: Iterable[Row]) -> list[float]:
    """When each row's certificate expires (POSIX seconds), in the rows' order."""
    return list(map(_NOT_AFTER, rows))


def weekly(ends: Sequence[float], now: dt.datetime, weeks: int = 53) -> list[tuple[dt.date, int]]:
    """expiries_per_week from the current certificates' expiries (POSIX seconds, in order): a week's count
    is the distance between where its start and the next week's would be inserted."""
    start = (now - dt.timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    bounds = [bisect.bisect_left(ends, start.timestamp() + week * 7 * 86400) for week in range(weeks + 1)]
    return [((start + dt.timedelta(weeks=i)).date(), bounds[i + 1] - bounds[i]) for i in range(weeks)]


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
    in_order = current_rows(table)
    current = soonest_first(in_order)
    return counts_of(
        in_order,
        expiring_within(current, now, expiring_days),
        server_expiry_warnings(current, now, server_days),
        sum(1 for r in table if r.status is Status.REVOKED),
    )


def counts_of(current: Sequence[Row], soon: Sequence[Row], broker_warned: Sequence[Row], revoked: int) -> FleetCounts:
    """The counts from the current certificates (in the table's order: see current_rows), those of them
    expiring soon, the brokers warned about."""
    sites, brokers = _identities(current, Kind.CLIENT, Kind.SERVER)
    (soon_sites,) = _identities(soon, Kind.CLIENT)
    soon_brokers = {r.record.identity for r in broker_warned}
    return FleetCounts(sites, brokers, soon_sites + len(soon_brokers), revoked)


def _identities(table: Sequence[Row], *kinds: Kind) -> list[int]:
    """For each type, how many identities the rows of that type are of (map and compress: no Python call
    per row; the identities and types taken once for all)."""
    identities, types = list(map(_IDENTITY, table)), list(map(_KIND, table))
    return [len(set(compress(identities, map(kind.__eq__, types)))) for kind in kinds]


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
