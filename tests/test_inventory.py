"""The certs/ inventory: parsed once, re-parsed only where something changed."""

from __future__ import annotations

import base64
import datetime as dt
import marshal
import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import pki.fleet as fleet_module
import pki.inventory as inventory_module
from certfactory import make_certificate, request_line, write_certificate
from pki import report
from pki.fleet import CRLState, FleetTable
from pki.inventory import CertRecord, Inventory
from pki.ledger import Ledger
from pki.model import Kind, Status
from pki.store import CertStore

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(autouse=True)
def _kept_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The records are kept in the background SAVE_DELAY after a change: here at once."""
    monkeypatch.setattr(inventory_module, "SAVE_DELAY", 0.0)


def test_rerun_with_nothing_changed_parses_nothing(tmp_path: Path) -> None:
    for i in range(20):
        write_certificate(tmp_path, f"site-{i:03}", f"site-{i:03}", not_after=NOW + dt.timedelta(days=100 + i))
    inventory = Inventory(tmp_path)
    assert len(inventory.records()) == 20
    assert inventory.parse_count == 20
    inventory.records()
    inventory.records()
    assert inventory.parse_count == 20


def test_after_a_change_only_the_changed_entries_are_parsed(tmp_path: Path) -> None:
    for i in range(10):
        write_certificate(tmp_path, f"site-{i}", f"site-{i}", not_after=NOW + dt.timedelta(days=100))
    inventory = Inventory(tmp_path)
    inventory.records()
    # one replaced in place, one added, one archived (renamed), one removed
    changed = tmp_path / "site-1" / "site-1.crt"
    changed.write_bytes(make_certificate("site-1", not_after=NOW + dt.timedelta(days=5)))
    os.utime(changed, ns=(1, 1))  # a different mtime even on coarse clocks
    write_certificate(tmp_path, "site-new", "site-new", not_after=NOW + dt.timedelta(days=100))
    os.rename(tmp_path / "site-2", tmp_path / "site-2.revoked")
    for f in (tmp_path / "site-3").iterdir():
        f.unlink()
    (tmp_path / "site-3").rmdir()
    records = inventory.records()
    assert inventory.parse_count == 10 + 3
    assert {r.folder for r in records} == {f"site-{i}" for i in (0, 1, 4, 5, 6, 7, 8, 9)} | {
        "site-new",
        "site-2.revoked",
    }
    assert next(r for r in records if r.folder == "site-1").days_left(NOW) in (4, 5)


def test_staging_folders_and_the_root_copy_are_not_certificates(tmp_path: Path) -> None:
    write_certificate(tmp_path, ".issue-site-1-abcd", "site-1", not_after=NOW + dt.timedelta(days=9))
    write_certificate(tmp_path, "site-2", "site-2", not_after=NOW + dt.timedelta(days=9))
    (tmp_path / "site-2" / "ca.crt").write_bytes(make_certificate("Root", not_after=NOW + dt.timedelta(days=9)))
    assert [r.cn for r in Inventory(tmp_path).records()] == ["site-2"]


def test_statuses_and_types(tmp_path: Path) -> None:
    write_certificate(tmp_path, "a", "a", not_after=NOW + dt.timedelta(days=100))
    write_certificate(tmp_path, "b", "b", not_after=NOW + dt.timedelta(days=3), server=True)
    write_certificate(tmp_path, "c", "c", not_after=NOW - dt.timedelta(days=1))
    write_certificate(tmp_path, "d.revoked", "d", not_after=NOW + dt.timedelta(days=100))
    e = write_certificate(tmp_path, "e", "e", not_after=NOW + dt.timedelta(days=100))
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "f.crt").write_text("garbage")
    write_certificate(tmp_path, "g.revoked.2", "g", not_after=NOW + dt.timedelta(days=100))
    records = {r.folder: r for r in Inventory(tmp_path).records()}
    revoked_by_crl = frozenset({records["e"].serial, records["g.revoked.2"].serial})
    got = {f: r.status(NOW, revoked_by_crl, 7) for f, r in records.items()}
    assert got == {
        "a": Status.ACTIVE,
        "b": Status.EXPIRING,
        "c": Status.EXPIRED,
        "d.revoked": Status.ACTIVE,  # a folder's name never makes a certificate revoked: the CRL does
        "e": Status.REVOKED,  # the CRL says so, whatever the folder is called
        "f": Status.INVALID,
        "g.revoked.2": Status.REVOKED,
    }
    assert records["d.revoked"].label == "revoked" and records["d.revoked"].identity == "d"
    assert records["a"].kind is Kind.CLIENT and records["b"].kind is Kind.SERVER
    assert records["e"].path == e
    # Without the CRL nothing can be called revoked, whatever the folders say.
    assert {r.status(NOW, None, 7) for f, r in records.items() if f in ("d.revoked", "e")} == {Status.ACTIVE}
    table = report.rows(records.values(), NOW, revoked_by_crl, 7)
    assert report.status_counts(table) == {Status.ACTIVE: 2, Status.EXPIRING: 1, Status.EXPIRED: 1, Status.REVOKED: 2}
    assert report.counts_by_type(table)[Status.REVOKED] == {Kind.CLIENT: 2, Kind.SERVER: 0, Kind.OTHER: 0}
    assert [r.cn for r in report.expiring_within(table, NOW, 7)] == ["b"]
    shown = FleetTable(table, CRLState(None, None), None, NOW)
    assert [table[i].cn for i in shown.search("", ["revoked"])] == ["e", "g"]
    assert [table[i].cn for i in shown.search(records["b"].serial_hex.lower())] == ["b"]
    assert sorted(report.revocable(table)) == ["a", "b", "d"]


def test_superseded_certificates_are_kept_out_of_the_expiry_chart_and_lists(tmp_path: Path) -> None:
    soon, later = NOW + dt.timedelta(days=10), NOW + dt.timedelta(days=40)
    write_certificate(tmp_path, "mqtt-1.replaced", "mqtt-1", not_after=soon, server=True)
    write_certificate(tmp_path, "mqtt-1", "mqtt-1", not_after=later, server=True)
    write_certificate(tmp_path, "site-1", "site-1", not_after=soon)
    table = report.rows(Inventory(tmp_path).records(), NOW, frozenset(), 7)
    superseded = {row.record.folder: row.superseded for row in table}
    assert superseded == {"mqtt-1.replaced": True, "mqtt-1": False, "site-1": False}
    weeks = dict(report.expiries_per_week(table, NOW))
    assert sum(weeks.values()) == 2  # mqtt-1's replaced certificate is not counted
    week_of = (soon - dt.timedelta(days=soon.weekday())).date()
    assert weeks[week_of] == 1
    assert [r.record.folder for r in report.expiring_within(table, NOW, 30)] == ["site-1"]


def test_the_table_s_figures_are_those_of_the_report(tmp_path: Path) -> None:
    """FleetTable works its figures out its own faster way: they must be the report's, row for row."""
    fleet = [
        (3, "mqtt-1.replaced", True), (40, "mqtt-1", True), (5, "site-1", False), (20, "site-2", False),
        (-1, "site-3", False), (90, "site-4", False), (200, "site-5.replaced", False), (300, "site-5", False),
        (10, "site-6", False),
    ]  # fmt: skip
    for days, name, server in fleet:
        write_certificate(tmp_path, name, name.split(".")[0], not_after=NOW + dt.timedelta(days=days), server=server)
    records = Inventory(tmp_path).records()
    revoked = frozenset(r.serial for r in records if r.folder == "site-6")
    rows = report.rows(records, NOW, revoked, 7)
    table = FleetTable(rows, CRLState(None, None), None, NOW)
    assert [r.record.folder for r in table.current] == [r.record.folder for r in report.current_of(rows)]
    assert [r.record.folder for r in table.current] == ["site-1", "site-2", "mqtt-1", "site-4", "site-5"]
    for days in (1, 7, 30, 365):
        assert table.expiring_within(days) == report.expiring_within(rows, NOW, days)
        assert table.counts(days, 30) == report.fleet_counts(rows, NOW, days, 30)
    assert table.weeks == report.expiries_per_week(rows, NOW)
    assert table.by_type[Status.REVOKED] == {Kind.CLIENT: 1, Kind.SERVER: 0}
    assert table.counts(7, 30) == report.FleetCounts(sites=4, brokers=1, expiring=1, revoked=1)


def test_the_next_change_of_a_status_by_the_clock(tmp_path: Path) -> None:
    def record(cn: str, seconds_left: float) -> CertRecord:
        not_after = NOW.timestamp() + seconds_left
        return CertRecord(cn, f"{cn}.crt", cn, Kind.CLIENT, 1, (), 0.0, not_after, "", True, identity=cn)

    week = 7 * 86400
    assert fleet_module._next_status_change([], NOW, 7) == NOW + dt.timedelta(hours=1)
    expires = [record("a", -50), record("b", 600), record("c", 900), record("d", 99 * 86400)]
    assert fleet_module._next_status_change(expires, NOW, 7).timestamp() == pytest.approx(NOW.timestamp() + 600)
    starts_expiring = [record("a", week + 300), record("b", week - 5), record("c", week + 200)]
    change = fleet_module._next_status_change(starts_expiring, NOW, 7)
    assert change.timestamp() == pytest.approx(NOW.timestamp() + 200)


def test_the_broker_check_s_certificates_are_left_out_of_a_snapshot_s_records() -> None:
    names = ["a", "app-pki-canary-1", "app-pki-canary-2", "app-pki-canary-2", "app-pki-canaryx", "app-pki-x", "z"]
    records = tuple(
        CertRecord(n, f"{n}.crt", n, Kind.SERVER, i, (), 0.0, 1.0, "", True, identity=n) for i, n in enumerate(names)
    )
    assert [r.identity for r in fleet_module._without_canaries(records)] == ["a", "app-pki-canaryx", "app-pki-x", "z"]
    assert fleet_module._without_canaries(records[:1]) == [records[0]]


def test_expiries_per_week_counts_only_valid_certificates(tmp_path: Path) -> None:
    monday = (NOW - dt.timedelta(days=NOW.weekday())).replace(hour=12, minute=0, second=0, microsecond=0)
    for i, days in enumerate([0, 1, 7, 8, 9, 30, 400]):
        when = monday + dt.timedelta(days=days)
        if when > NOW:
            write_certificate(tmp_path, f"s{i}", f"s{i}", not_after=when)
    table = report.rows(Inventory(tmp_path).records(), NOW, frozenset(), 7)
    weeks = report.expiries_per_week(table, NOW)
    assert len(weeks) == 53 and weeks[0][0] == monday.date()
    assert weeks[1][1] == 3  # days 7, 8, 9
    assert weeks[4][1] == 1  # day 30
    assert sum(count for _, count in weeks) == sum(
        1 for r in table if r.record.not_after < monday + dt.timedelta(weeks=53)
    )


def test_archive_names_never_collide(tmp_path: Path) -> None:
    store = CertStore(tmp_path, lock_wait=1)
    assert store.free_name("site-1", "revoked") == "site-1.revoked"
    (tmp_path / "site-1.revoked").mkdir()
    (tmp_path / "site-1.revoked.2").mkdir()
    assert store.free_name("site-1", "revoked") == "site-1.revoked.3"
    assert store.free_name("site-1", "expired") == "site-1.expired"
    with pytest.raises(ValueError, match="unknown folder label"):
        store.free_name("site-1", "deleted")


def test_unchanged_folders_are_not_listed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        write_certificate(tmp_path, f"s{i}", f"s{i}", not_after=NOW + dt.timedelta(days=30))
    listed: list[str] = []
    real = inventory_module._crt_files

    def counting(folder: str) -> list[str]:
        listed.append(folder)
        return real(folder)

    monkeypatch.setattr(inventory_module, "_crt_files", counting)
    inventory = Inventory(tmp_path)
    inventory.records()
    assert len(listed) == 5
    listed.clear()
    inventory.records()
    assert listed == []  # nothing changed: no folder read again
    write_certificate(tmp_path, "s2", "s2-extra", not_after=NOW + dt.timedelta(days=30))  # a new file in s2
    assert {r.cn for r in inventory.records()} >= {"s2-extra"}
    assert listed == [str(tmp_path / "s2")]


def test_a_snapshot_costs_what_changed_and_sees_folders_made_renamed_or_replaced(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    for i in range(20):
        write_certificate(tmp_path, f"site-{i}", f"site-{i}", not_after=now + dt.timedelta(days=30))
    inventory = Inventory(tmp_path, sweep_seconds=3600)
    first = inventory.snapshot()
    assert len(first.records) == 20 and inventory.parse_count == 20
    assert inventory.snapshot() is first, "nothing changed: the same snapshot, nothing looked into"

    write_certificate(tmp_path, "site-new", "site-new", not_after=now + dt.timedelta(days=30))
    second = inventory.snapshot()
    assert second.generation == first.generation + 1 and len(second.records) == 21
    assert inventory.parse_count == 21, "only the new folder's certificate was parsed"

    # A re-issue: the live folder renamed away, another made under its name.
    (tmp_path / "site-3").rename(tmp_path / "site-3.replaced")
    write_certificate(tmp_path, "site-3", "site-3", not_after=now + dt.timedelta(days=60))
    third = inventory.snapshot()
    assert sorted(r.folder for r in third.records if r.identity == "site-3") == ["site-3", "site-3.replaced"]

    # A file replaced by hand inside a folder: seen by the next sweep, not before.
    crt = tmp_path / "site-5" / "site-5.crt"
    crt.write_bytes(make_certificate("site-5", not_after=now + dt.timedelta(days=90)))
    os.utime(crt, ns=(1, 1))
    assert inventory.snapshot() is third
    inventory.sweep_seconds = 0
    swept = inventory.snapshot()
    assert swept.generation == third.generation + 1
    assert next(r for r in swept.records if r.folder == "site-5").not_after > now + dt.timedelta(days=80)
    assert swept.by_serial[next(r for r in swept.records if r.folder == "site-5").serial].folder == "site-5"


def test_parsed_records_are_kept_across_a_restart_and_used_only_while_their_file_is_unchanged(
    tmp_path: Path,
) -> None:
    now = dt.datetime.now(dt.UTC)
    certs, cache = tmp_path / "certs", tmp_path / "cache" / "inventory.json"
    for i in range(5):
        write_certificate(certs, f"site-{i}", f"site-{i}", not_after=now + dt.timedelta(days=30))
    before = Inventory(certs, cache_file=cache)
    records = before.snapshot().records
    for _ in range(100):  # kept in the background
        if cache.exists():
            break
        time.sleep(0.05)
    crt = certs / "site-2" / "site-2.crt"
    crt.write_bytes(make_certificate("site-2", not_after=now + dt.timedelta(days=90)))
    os.utime(crt, ns=(1, 1))

    after = Inventory(certs, cache_file=cache)  # the GUI started again
    again = after.snapshot().records
    assert after.parse_count == 1, "only the file changed while the GUI was down is parsed again"
    assert [r for r in again if r.folder != "site-2"] == [r for r in records if r.folder != "site-2"]
    assert next(r for r in again if r.folder == "site-2").not_after > now + dt.timedelta(days=80)

    cache.write_text("{not json")  # a damaged cache is only a slower start
    assert len(Inventory(certs, cache_file=cache).snapshot().records) == 5


def test_what_a_decision_reads_reaches_the_next_snapshot(tmp_path: Path) -> None:
    """of_identity (a decision under the identity's lock) updates the known files: the pages must not keep
    an older snapshot because of it, even though nothing else changed."""
    now = dt.datetime.now(dt.UTC)
    write_certificate(tmp_path, "site-1", "site-1", not_after=now + dt.timedelta(days=30))
    inventory = Inventory(tmp_path, sweep_seconds=3600)
    before = inventory.snapshot()
    crt = tmp_path / "site-1" / "site-1.crt"
    crt.write_bytes(make_certificate("site-1", not_after=now + dt.timedelta(days=90)))
    os.utime(crt, ns=(1, 1))
    fresh = inventory.of_identity("site-1")
    assert fresh[0].not_after > now + dt.timedelta(days=80)
    after = inventory.snapshot()
    assert after.generation > before.generation
    assert after.records[0].not_after > now + dt.timedelta(days=80)


def _kept(cache: Path) -> None:
    for _ in range(100):  # kept in the background
        if cache.exists():
            return
        time.sleep(0.05)


def test_a_start_shows_the_snapshot_kept_while_certs_is_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the records kept by the last run, and certs/ as it was when they were (nothing added, removed or
    renamed), the GUI's first page shows them without looking into any folder: a file changed by hand inside
    a folder meanwhile is seen by the first sweep, as between two sweeps. A folder added is seen at once."""
    certs, cache = tmp_path / "certs", tmp_path / "cache" / "inventory.bin"
    for i in range(4):
        write_certificate(certs, f"site-{i}", f"site-{i}", not_after=NOW + dt.timedelta(days=30))
    settled = time.time_ns() - 10 * 10**9
    os.utime(certs, ns=(settled, settled))  # certs/ last changed well before the look
    kept = Inventory(certs, cache_file=cache, sweep_in_background=True).snapshot().records
    _kept(cache)
    crt = certs / "site-1" / "site-1.crt"
    crt.write_bytes(make_certificate("site-1", not_after=NOW + dt.timedelta(days=90)))
    os.utime(crt, ns=(1, 1))

    def no_look(*_: object, **__: object) -> None:
        raise AssertionError("certs/ was looked into")

    again = Inventory(certs, cache_file=cache, sweep_in_background=True)  # the GUI started again
    with monkeypatch.context() as patch:
        patch.setattr(inventory_module, "_subfolders", no_look)
        assert again.snapshot().records == kept
    assert again.parse_count == 0
    unreadable = Inventory(certs, cache_file=cache, sweep_in_background=True)
    assert unreadable.snapshot().records == kept
    unreadable._unread = [(paths, b"not marshal", records) for paths, _, records in unreadable._unread]
    unreadable._dirty = True  # the next refresh makes a new snapshot: kept listings unreadable, it looks at all
    assert len(unreadable._refresh(sweep=False).records) == 4
    assert again.records() != kept and again.parse_count == 1  # a full look finds the changed file
    for _ in range(100):  # and keeps it, in the background
        kept_files = inventory_module._load_cache(cache)[0]
        if any(r.not_after > NOW + dt.timedelta(days=80) for _, _, records in kept_files for r in records):
            break
        time.sleep(0.05)

    write_certificate(certs, "site-9", "site-9", not_after=NOW + dt.timedelta(days=30))  # certs/ changes
    third = Inventory(certs, cache_file=cache, sweep_in_background=True)
    assert "site-9" in {r.folder for r in third.snapshot().records}
    assert next(r for r in third.snapshot().records if r.folder == "site-1").not_after > NOW + dt.timedelta(days=80)


def test_a_look_too_close_to_a_change_of_certs_is_not_trusted_at_the_next_start(tmp_path: Path) -> None:
    """certs/ changed within a clock tick of the look: a folder added later in that tick leaves its mtime as it
    was, so the snapshot of that look is not kept to be shown as it is."""
    certs, cache = tmp_path / "certs", tmp_path / "cache" / "inventory.bin"
    for i in range(3):
        write_certificate(certs, f"site-{i}", f"site-{i}", not_after=NOW + dt.timedelta(days=30))
    Inventory(certs, cache_file=cache, sweep_in_background=True).snapshot()
    _kept(cache)
    stamp = os.stat(certs).st_mtime_ns
    write_certificate(certs, "site-9", "site-9", not_after=NOW + dt.timedelta(days=30))
    os.utime(certs, ns=(stamp, stamp))  # the same mtime: the change fell in the tick of the look
    again = Inventory(certs, cache_file=cache, sweep_in_background=True)
    assert "site-9" in {r.folder for r in again.snapshot().records}
    assert again.parse_count == 1


def test_a_ledger_that_grew_is_looked_at_alone_while_certs_is_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sites renew all day: a certificate the CA signed (a journal line) costs a look at the ledger's folder, not
    at 100,000 folders of certs/, on the next page and at a start with the records kept, while certs/ is as
    it was at a look made well after its last change. A change of certs/ is looked at as ever."""
    monkeypatch.setattr(inventory_module, "SAVE_SECONDS", 0.5)
    certs, cache, log = tmp_path / "certs", tmp_path / "cache" / "inventory.bin", tmp_path / "issued.log"
    for i in range(3):
        write_certificate(certs, f"site-{i}", f"site-{i}", not_after=NOW + dt.timedelta(days=30))
    settled = time.time_ns() - 10 * 10**9
    os.utime(certs, ns=(settled, settled))
    log.write_bytes(request_line("renewed-1"))
    ledger = Ledger(log, tmp_path / "ledger")
    inventory = Inventory(certs, ledger, cache_file=cache, sweep_in_background=True)
    assert {r.cn for r in inventory.snapshot().records} == {"site-0", "site-1", "site-2", "renewed-1"}

    def no_look(*_: object, **__: object) -> None:
        raise AssertionError("certs/ was looked into")

    with log.open("ab") as journal:
        journal.write(request_line("renewed-2"))
    with monkeypatch.context() as patch:
        patch.setattr(inventory_module, "_subfolders", no_look)
        assert "renewed-2" in {r.cn for r in inventory.snapshot().records}
    # The look a sweep makes long after the last change of either folder is one a start may trust: kept, once
    # SAVE_SECONDS have passed since the last write (a write that must wait is made later, not dropped).
    os.utime(tmp_path / "ledger", ns=(settled, settled))
    inventory.records()
    for _ in range(100):
        if inventory_module._load_cache(cache)[1] is not None:
            break
        time.sleep(0.05)

    with log.open("ab") as journal:  # while the GUI is down
        journal.write(request_line("renewed-3"))
    again = Inventory(certs, Ledger(log, tmp_path / "ledger"), cache_file=cache, sweep_in_background=True)
    with monkeypatch.context() as patch:
        patch.setattr(inventory_module, "_subfolders", no_look)
        shown = {r.cn for r in again.snapshot().records}
    assert shown == {"site-0", "site-1", "site-2", "renewed-1", "renewed-2", "renewed-3"}
    assert again.parse_count == 1

    write_certificate(certs, "site-9", "site-9", not_after=NOW + dt.timedelta(days=30))  # certs/ changes
    assert "site-9" in {r.cn for r in again.snapshot().records}


def test_a_start_puts_what_the_ledger_gained_into_the_kept_snapshot_as_a_full_look_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sites renewing while the GUI was down: at the start, the ledger's new files go into the kept snapshot one
    by one, without reading the kept listings or looking into certs/, in the order and with the hiding of a
    full look (a copy of a certificate filed in certs/ is not shown twice). A kept ledger file gone (by hand),
    or more new ones than LEDGER_GROWN_MAX: everything is looked at as ever."""
    monkeypatch.setattr(inventory_module, "SAVE_SECONDS", 0.5)
    certs, cache, log, ledger_dir = (
        tmp_path / "certs", tmp_path / "cache" / "inventory.bin", tmp_path / "issued.log", tmp_path / "ledger"
    )  # fmt: skip
    for i in range(3):
        write_certificate(certs, f"site-{i}", f"site-{i}", not_after=NOW + dt.timedelta(days=30 + i))
    settled = time.time_ns() - 10 * 10**9
    os.utime(certs, ns=(settled, settled))
    log.write_bytes(request_line("site-1", "/1.0/renew"))

    def start() -> Inventory:
        return Inventory(certs, Ledger(log, ledger_dir), cache_file=cache, sweep_in_background=True)

    def full_look() -> list[CertRecord]:
        return Inventory(certs, Ledger(log, ledger_dir)).records()

    def no_look(*_: object, **__: object) -> None:
        raise AssertionError("certs/ was looked into")

    start().snapshot()
    (kept_renewal,) = ledger_dir.glob("*.crt")
    os.utime(ledger_dir, ns=(settled, settled))
    first = start()
    first.records()  # a look long after either folder changed: kept with its snapshot
    for _ in range(100):
        shown = inventory_module._load_cache(cache)[1]
        if shown is not None and shown.ledger_files == (str(kept_renewal),):
            break
        time.sleep(0.05)

    os.utime(ledger_dir, ns=(settled + 5, settled + 5))  # the ledger's folder touched, nothing new in it
    touched = start()
    assert touched.snapshot().generation == 1 and touched._unread  # the same records: the same generation

    filed = x509.load_pem_x509_certificate((certs / "site-1" / "site-1.crt").read_bytes())
    with log.open("ab") as journal:  # while the GUI is down
        journal.write(request_line("site-0", "/1.0/renew"))
        journal.write(request_line("site-2", "/1.0/renew"))
        der = filed.public_bytes(serialization.Encoding.DER)  # the CA's line for a certificate filed in certs/
        journal.write(request_line("site-1", "/1.0/sign", certificate=base64.b64encode(der).decode()))
    again = start()
    with monkeypatch.context() as patch:
        patch.setattr(inventory_module, "_subfolders", no_look)
        shown_now = list(again.snapshot().records)
    assert again._unread and again.parse_count == 3, "the kept listings unread, the three new files parsed"
    assert len(list(ledger_dir.glob("*.crt"))) == 4
    assert shown_now == full_look() and len(shown_now) == 6  # three filed, three renewals
    assert [r.folder for r in shown_now if r.serial == filed.serial_number] == ["site-1"]
    generation, again.cache_file = again.snapshot().generation, None  # (no write: the later starts use the file)
    assert again.records() == shown_now  # the first sweep: it reads the kept listings
    assert again.parse_count == 3 and again.snapshot().generation == generation  # nothing parsed twice

    with monkeypatch.context() as patch:
        patch.setattr(inventory_module, "LEDGER_GROWN_MAX", 2)
        many = start()
        assert list(many.snapshot().records) == shown_now and not many._unread  # 3 new: looked at as ever

    kept_renewal.unlink()  # a kept ledger file gone
    gone = start()
    assert [r.serial for r in gone.snapshot().records] == [r.serial for r in full_look()] and not gone._unread


@pytest.mark.parametrize(
    "damage", ["empty", "text", "cut short", "a byte changed", "no end", "more after the end", "other fields"]
)
def test_a_damaged_cache_of_any_shape_is_only_a_slower_start(tmp_path: Path, damage: str) -> None:
    now = dt.datetime.now(dt.UTC)
    for i in range(30):
        write_certificate(tmp_path / "certs", f"site-{i}", f"site-{i}", not_after=now + dt.timedelta(days=3 + i))
    cache = tmp_path / "inventory.bin"
    kept = Inventory(tmp_path / "certs", cache_file=cache)
    expected = kept.snapshot().records
    for _ in range(100):  # kept in the background
        if cache.exists():
            break
        time.sleep(0.05)
    assert Inventory(tmp_path / "certs", cache_file=cache).snapshot().records == expected  # as kept: read back

    whole = cache.read_bytes()
    middle = len(whole) // 2
    cache.write_bytes(
        {
            "empty": b"",
            "text": b'{"version": 2}\n["e", "x", [1], []]\n',
            "cut short": whole[:middle],
            "a byte changed": whole[:middle] + bytes([whole[middle] ^ 0x55]) + whole[middle + 1 :],
            "no end": whole[:-1],
            "more after the end": whole + marshal.dumps(None),
            "other fields": whole.replace(b",label\n", b",label,colour\n", 1),
        }[damage]
    )
    again = Inventory(tmp_path / "certs", cache_file=cache)
    assert again.snapshot().records == expected
    assert again.parse_count == 30, "nothing of a damaged file is used: every certificate is parsed again"
