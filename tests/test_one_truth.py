"""One truth per certificate, against the real CA: what the CA's journal and CRL say is what counts.

Concurrent issuers of one identity (threads sharing a GUI, separate processes) leave exactly one valid
certificate at the CA; case and trailing-dot variants are the same identity; a disk that fills up
after the CA signed loses nothing; a folder's name never makes a certificate revoked; Reconcile lists
every disagreement and resolves it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from certfactory import write_certificate
from checks import enrol_with_token, expired_certificates
from conftest import OPERATOR, REPO, RunningCA, gui_fleet
from pki import report
from pki.fleet import Fleet
from pki.inventory import Inventory
from pki.issuing import ActiveCertificateExists, FilingFailed, IssueRequest, IssueUncertain, NotIssued
from pki.keys import new_private_key, private_key_pem, signing_request
from pki.model import Kind, Status, identity_of
from pki.reconcile import Action, Problem
from pki.step import CAUnreachable, StepTimeout, run_step
from pki.store import IdentityBusy
from pki.validate import InvalidInput

THREADS, PROCESSES = 8, 4


def request(cn: str, kind: Kind = Kind.CLIENT, sans: str = "") -> IssueRequest:
    return IssueRequest(cn=cn, kind=kind, sans=sans, days=30, key_type="EC P-256")


def signed_by_ca(ca: RunningCA, identity: str) -> dict[int, x509.Certificate]:
    """Every certificate the CA's own journal says it signed for `identity` (not the GUI's view)."""
    found = {}
    for line in ca.journal.read_text().splitlines():
        entry = json.loads(line)
        if "certificate" not in entry:
            continue  # a sign request that spent a token without a certificate
        cert = x509.load_der_x509_certificate(base64.b64decode(entry["certificate"]))
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        if names and identity_of(str(names[0].value)) == identity:
            found[cert.serial_number] = cert
    return found


def valid_at_ca(ca: RunningCA, fleet: Fleet, identity: str) -> set[int]:
    """Serials of `identity` the CA signed, not on its CRL, unexpired: valid by the CA's own records."""
    revoked = fleet.ca.crl_info().revoked
    now = dt.datetime.now(dt.UTC)
    return {s for s, c in signed_by_ca(ca, identity).items() if s not in revoked and c.not_valid_after_utc > now}


def disagreements(fleet: Fleet, *identities: str) -> list:
    """Reconcile's findings about these identities (the session CA also holds other tests' certificates)."""
    return [d for d in fleet.reconcile(fleet.table()) if d.identity in identities]


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# -- concurrent issuers -----------------------------------------------------------------------------


def race_threads(fleet: Fleet, cn: str) -> list[object]:
    """THREADS sessions of one GUI press "Issue" for `cn` at the same moment."""
    results: list[object] = [None] * THREADS
    start = threading.Barrier(THREADS)

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = fleet.issue(OPERATOR, request(cn)).record.serial
        except Exception as exc:  # every outcome is collected and checked below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


ISSUER_PROGRAM = """
import json, os, sys, time
sys.path.insert(0, os.environ["APP_PKI_STREAMLIT"])
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.roles import Actor, Role
from pki.settings import load_settings
OPERATOR = Actor("test-operator", Role.OPERATOR, "127.0.0.1")
fleet = Fleet(load_settings())
fleet.limits()
go = os.environ["GO_FILE"]
while not os.path.exists(go):
    time.sleep(0.001)
try:
    serial = fleet.issue(OPERATOR, IssueRequest(sys.argv[1], Kind.CLIENT, "", 30, "EC P-256")).record.serial
    print(json.dumps({"serial": serial}))
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
"""


def race_processes(fleet: Fleet, cn: str, gate: Path) -> list[object]:
    """PROCESSES separate GUI processes sharing certs/ (like GUI containers) issue `cn` at once."""
    s = fleet.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEP", "PKI_"))}
    env.update(
        APP_PKI_STREAMLIT=str(REPO / "streamlit"), GO_FILE=str(gate), STEP_CA_URL=s.ca_url,
        PKI_GUI_DIR=str(s.gui_dir), PKI_CERTS_DIR=str(s.certs_dir), PKI_STEP_BIN=s.step_bin,
        PKI_AUDIT_LOG=str(s.audit_log), PKI_CA_LOG=str(s.ca_log), PKI_LEDGER_DIR=str(s.ledger_dir),
    )  # fmt: skip
    procs = []
    for i in range(PROCESSES):
        env_i = dict(env, PKI_STEPPATH=str(s.step_path) + f"-{i}")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", ISSUER_PROGRAM, cn],
                env=env_i,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    time.sleep(3)  # every process is up and waiting at the gate
    gate.touch()
    results: list[object] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        answer = json.loads(out.strip().splitlines()[-1])
        results.append(answer.get("serial", answer))
    return results


def check_one_winner(ca: RunningCA, fleet: Fleet, identity: str, results: list[object], before: set[int]) -> int:
    winners = [r for r in results if isinstance(r, int)]
    assert len(winners) == 1, results
    for loser in (r for r in results if r != winners[0]):
        if isinstance(loser, Exception):
            assert isinstance(loser, ActiveCertificateExists | IdentityBusy), loser
            assert "already has an active certificate" in str(loser) or "being changed" in str(loser)
        else:  # a process's answer; anything else (None: a thread that never finished) fails here
            assert isinstance(loser, dict) and loser["error"] in ("ActiveCertificateExists", "IdentityBusy"), loser
    ca.wait_in_journal(winners[0])
    assert valid_at_ca(ca, fleet, identity) == {winners[0]}  # the CA's journal and CRL, not the GUI
    assert set(signed_by_ca(ca, identity)) - before == {winners[0]}  # the losers never had anything signed
    live = fleet.settings.certs_dir / identity / f"{identity}.crt"
    assert x509.load_pem_x509_certificates(live.read_bytes())[0].serial_number == winners[0]
    row = next(r for r in fleet.table().rows if r.record.serial == winners[0])
    assert row.status is Status.ACTIVE and row.record.is_live
    return winners[0]


@pytest.fixture(scope="module")
def expired_folders(running_ca: RunningCA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """certs/ folders holding an expired certificate of the real CA, made once for the race tests."""
    bases = {name: tmp_path_factory.mktemp(name) for name in ("threads", "processes")}
    expired_certificates(
        running_ca, [(bases["threads"] / "certs", "race-t-exp"), (bases["processes"] / "certs", "race-p-exp")]
    )
    return bases


@pytest.mark.parametrize("previous", ["none", "revoked", "expired"])
@pytest.mark.parametrize("racers", ["threads", "processes"])
def test_concurrent_issuers_leave_exactly_one_valid_certificate_at_the_ca(
    ca: RunningCA, tmp_path: Path, expired_folders: dict[str, Path], racers: str, previous: str
) -> None:
    identity = f"race-{racers[0]}-{previous[:3]}"
    base = expired_folders[racers] if previous == "expired" else tmp_path
    fleet = gui_fleet(ca, base)
    certs = fleet.settings.certs_dir
    if previous == "revoked":
        old = fleet.issue(OPERATOR, request(identity)).record
        fleet.ca.revoke(old.serial, 1)  # at the CA only: certs/{identity}/ keeps its name
    before = set(signed_by_ca(ca, identity))
    previous_files = {p.name: p.read_bytes() for p in (certs / identity).iterdir()} if previous != "none" else {}

    results = race_threads(fleet, identity) if racers == "threads" else race_processes(fleet, identity, tmp_path / "go")
    winner = check_one_winner(ca, fleet, identity, results, before)

    expected = [identity] + ([f"{identity}.{previous}"] if previous != "none" else [])
    assert visible(certs) == sorted(expected)
    archived = certs / f"{identity}.{previous}"
    if previous != "none":  # nothing deleted, nothing overwritten
        assert {p.name: p.read_bytes() for p in archived.iterdir()} == previous_files
    assert not [p for p in certs.iterdir() if p.name.startswith(".issue-")]
    signed_lines = [e for e in fleet.audit.entries(None) if e["action"] == "sign"]
    signed_here = [e["serial"] for e in signed_lines if e["cn"] == identity]
    assert signed_here == [f"{winner:X}"] + ([f"{old.serial:X}"] if previous == "revoked" else [])
    assert disagreements(fleet, identity) == []


# -- one identity, whatever its spelling ------------------------------------------------------------


def test_case_and_trailing_dot_variants_of_an_active_identity_are_refused(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    server = fleet.issue(OPERATOR, request("Mqtt-Truth.Example.COM.", Kind.SERVER))
    assert server.record.cn == "mqtt-truth.example.com"
    assert server.normalised_from == "Mqtt-Truth.Example.COM."
    assert server.record.sans == ("mqtt-truth.example.com",)
    for variant in (
        "mqtt-truth.example.com",
        "MQTT-TRUTH.EXAMPLE.COM",
        "Mqtt-Truth.Example.Com",
        "mqtt-truth.example.com.",
    ):
        with pytest.raises(
            ActiveCertificateExists, match=r"mqtt-truth\.example\.com already has an active certificate"
        ):
            fleet.issue(OPERATOR, request(variant, Kind.SERVER))
    fleet.issue(OPERATOR, request("site-truth-001"))
    for variant in ("SITE-TRUTH-001", "site-truth-001.", "Site-Truth-001."):
        with pytest.raises(ActiveCertificateExists, match="site-truth-001 already has an active certificate"):
            fleet.issue(OPERATOR, request(variant))
        with pytest.raises(ActiveCertificateExists, match="site-truth-001 already has an active certificate"):
            fleet.enroll(OPERATOR, variant, hours=1, broker="mqtt.ak-sg.com:8883")
    assert visible(fleet.settings.certs_dir) == ["mqtt-truth.example.com", "site-truth-001"]
    assert len(valid_at_ca(ca, fleet, "mqtt-truth.example.com")) == 1
    assert len(valid_at_ca(ca, fleet, "site-truth-001")) == 1


@pytest.mark.parametrize("wildcard", ["*.com", "*"])
def test_a_wildcard_over_a_whole_top_level_domain_is_refused(ca: RunningCA, tmp_path: Path, wildcard: str) -> None:
    fleet = gui_fleet(ca, tmp_path)
    with pytest.raises(InvalidInput, match=r"needs at least two labels after '\*\.'"):
        fleet.issue(OPERATOR, request("mqtt-wild.example.com", Kind.SERVER, sans=wildcard))
    assert signed_by_ca(ca, "mqtt-wild.example.com") == {}
    assert not fleet.settings.certs_dir.exists()


# -- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_certs(tmp_path: Path) -> Iterator[Path]:
    """certs/ on its own 64 KiB tmpfs, mounted for this test (the suite runs as root in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root)")
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(certs)], check=True)
    yield certs
    subprocess.run(["umount", str(certs)], check=True)


def fill(certs: Path, leave_pages: int) -> Path:
    """Fill the file system of `certs` so that only `leave_pages` 4 KiB pages stay free."""
    filler = certs / ".filler"
    free = os.statvfs(certs).f_bavail * os.statvfs(certs).f_frsize
    with filler.open("ab") as out:
        out.write(b"\0" * (free - leave_pages * 4096))
    assert os.statvfs(certs).f_bavail * os.statvfs(certs).f_frsize == leave_pages * 4096
    return filler


def test_a_full_disk_before_the_ca_is_asked_issues_nothing(ca: RunningCA, tmp_path: Path, small_certs: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    fill(small_certs, 0)
    with pytest.raises(NotIssued, match="The CA was not asked: nothing was issued and nothing changed"):
        fleet.issue(OPERATOR, request("site-full-0"))
    same_disk = gui_fleet(ca, tmp_path, PKI_AUDIT_LOG=str(small_certs / ".audit.log"))  # the audit trail too
    with pytest.raises(NotIssued, match="nothing was issued"):
        same_disk.issue(OPERATOR, request("site-full-0"))
    assert signed_by_ca(ca, "site-full-0") == {}
    assert visible(small_certs) == []
    assert not [p for p in small_certs.iterdir() if p.name.startswith(".issue-")]
    assert fleet.audit.entries()[0]["outcome"] == "failed"


def test_a_disk_that_fills_after_the_ca_signed_loses_nothing(ca: RunningCA, tmp_path: Path, small_certs: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    filler = fill(small_certs, 1)  # room for the key, none for the certificate
    with pytest.raises(FilingFailed) as failed:
        fleet.issue(OPERATOR, request("site-full-1"))
    serial = failed.value.serial
    message = str(failed.value)
    assert f"serial {serial:X}" in message and "No space left on device" in message
    assert "certs/site-full-1.quarantine/ holds its private key" in message and "Reconcile" in message
    # The serial went into the audit trail the moment step returned; the ledger has the certificate.
    assert {"action": "sign", "serial": f"{serial:X}"}.items() <= fleet.audit.entries()[1].items()
    assert fleet.audit.entries()[0]["outcome"] == "quarantined"
    assert (fleet.settings.ledger_dir / f"{serial:X}.crt").exists()
    quarantine = small_certs / "site-full-1.quarantine"
    assert (quarantine / "site-full-1.key").stat().st_size > 0
    assert valid_at_ca(ca, fleet, "site-full-1") == {serial}

    # Counted as the identity's valid certificate: a retry says where it is instead of signing another.
    with pytest.raises(ActiveCertificateExists, match=f"serial {serial:X}"):
        fleet.issue(OPERATOR, request("site-full-1"))

    shown = disagreements(fleet, "site-full-1")
    assert [(d.problem, d.folder, d.serial_hex, d.actions) for d in shown] == [
        (Problem.QUARANTINED, "site-full-1.quarantine", f"{serial:X}", (Action.FILE, Action.REVOKE))
    ]
    revoked = fleet.revoke(OPERATOR, "site-full-1", reason_code=4, confirmation="site-full-1", serials={serial})
    assert revoked.confirmed and serial in fleet.ca.crl_info().revoked
    assert valid_at_ca(ca, fleet, "site-full-1") == set()

    # Once there is room again, filing puts it with the revoked ones: nothing was ever deleted.
    filler.unlink()
    later = disagreements(fleet, "site-full-1")
    assert [d.actions for d in later] == [(Action.FILE,)]
    assert fleet.resolve(OPERATOR, later[0], Action.FILE) == "Filed as certs/site-full-1.revoked/."
    kept = small_certs / "site-full-1.revoked"
    assert sorted(p.name for p in kept.iterdir()) == ["site-full-1.crt", "site-full-1.key"]
    chain = x509.load_pem_x509_certificates((kept / "site-full-1.crt").read_bytes())
    assert [c.serial_number for c in chain][:1] == [serial] and len(chain) == 2
    assert disagreements(fleet, "site-full-1") == []
    assert fleet.audit.entries()[0]["action"] == "file"


def test_a_quarantined_certificate_is_filed_as_the_live_one_when_it_is_the_only_valid(
    ca: RunningCA, tmp_path: Path, small_certs: Path
) -> None:
    fleet = gui_fleet(ca, tmp_path)
    filler = fill(small_certs, 1)
    with pytest.raises(FilingFailed) as failed:
        fleet.issue(OPERATOR, request("site-full-2"))
    filler.unlink()
    (found,) = disagreements(fleet, "site-full-2")
    assert fleet.resolve(OPERATOR, found, Action.FILE) == "Filed as certs/site-full-2/."
    record = fleet.record(failed.value.serial)
    assert record is not None and record.is_live and record.has_key
    assert fleet.bundle(OPERATOR, record.serial)  # the key matches: it is the certificate's own


# -- the CA decides the status --------------------------------------------------------------------


def test_a_valid_certificate_in_a_revoked_folder_is_valid_and_revoked_by_revoke_site(
    ca: RunningCA, tmp_path: Path
) -> None:
    fleet = gui_fleet(ca, tmp_path)
    certs = fleet.settings.certs_dir
    first = fleet.issue(OPERATOR, request("site-inrev")).record
    fleet.revoke(OPERATOR, "site-inrev", reason_code=4, confirmation="site-inrev")
    second = fleet.issue(OPERATOR, request("site-inrev")).record
    # What the old race left behind: a certificate valid at the CA, filed under a .revoked name.
    os.rename(certs / "site-inrev", certs / "site-inrev.revoked.2")
    table = fleet.table()
    rows = {row.record.folder: row for row in table.rows if row.identity == "site-inrev"}
    assert rows["site-inrev.revoked.2"].status is Status.ACTIVE
    assert rows["site-inrev.revoked"].status is Status.REVOKED
    counted = report.status_counts(list(rows.values()))
    assert (counted[Status.ACTIVE], counted[Status.REVOKED]) == (1, 1)
    assert [r.record.serial for r in report.revocable(table.rows)["site-inrev"]] == [second.serial]
    assert [d.problem for d in disagreements(fleet, "site-inrev")] == [Problem.ARCHIVED_VALID]
    with pytest.raises(ActiveCertificateExists, match=r"certs/site-inrev\.revoked\.2"):
        fleet.issue(OPERATOR, request("site-inrev"))

    revoked = fleet.revoke(OPERATOR, "site-inrev", reason_code=1, confirmation="site-inrev")
    assert revoked.serials == [second.serial] and revoked.confirmed
    assert [(o.answer, o.on_crl) for o in revoked.outcomes] == [("revoked", True)]
    assert {first.serial, second.serial} <= fleet.ca.crl_info().revoked
    assert valid_at_ca(ca, fleet, "site-inrev") == set()
    assert visible(certs) == ["site-inrev.revoked", "site-inrev.revoked.2"]
    assert disagreements(fleet, "site-inrev") == []


def test_reconcile_lists_foreign_unfiled_and_duplicate_certificates_and_resolves_them(
    ca: RunningCA, tmp_path: Path
) -> None:
    fleet = gui_fleet(ca, tmp_path)
    certs = fleet.settings.certs_dir
    # An earlier CA's certificate (before a reset): not this CA's, so it does not hold its identity.
    write_certificate(certs, "site-old", "site-old", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=90))
    write_certificate(certs, "site-older", "site-older", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=90))
    issued = fleet.issue(OPERATOR, request("site-old"))
    assert issued.archived_as == ("site-old.foreign",)
    # A certificate signed for this GUI whose folder was lost.
    lost = fleet.issue(OPERATOR, request("site-lost")).record
    shutil.move(certs / "site-lost", tmp_path / "moved-away")
    # Two tokens used for one site: two keys hold one identity.
    one = fleet.enroll(OPERATOR, "site-twice-keys", hours=1, broker="mqtt.ak-sg.com:8883")
    two = fleet.enroll(OPERATOR, "site-twice-keys", hours=1, broker="mqtt.ak-sg.com:8883")
    serials = [
        enrol_with_token(fleet.settings, tmp_path / f"dev-{i}", e.token, "site-twice-keys")
        for i, e in enumerate((one, two))
    ]
    for serial in serials:
        ca.wait_in_journal(serial)

    table = fleet.table()
    rows = {row.record.folder: row.status for row in table.rows if row.identity in ("site-old", "site-older")}
    assert rows == {"site-old": Status.ACTIVE, "site-old.foreign": Status.FOREIGN, "site-older": Status.FOREIGN}
    mine = ("site-old", "site-older", "site-lost", "site-twice-keys")
    found = {(d.problem, d.identity, d.folder): d for d in disagreements(fleet, *mine)}
    assert set(found) == {
        (Problem.FOREIGN, "site-older", "site-older"),
        (Problem.NOT_FILED, "site-lost", ""),
        (Problem.DUPLICATE, "site-twice-keys", ""),
    }
    duplicates = [d for d in disagreements(fleet, *mine) if d.problem is Problem.DUPLICATE]
    assert sorted(d.record.serial for d in duplicates if d.record) == sorted(serials)

    foreign = found[(Problem.FOREIGN, "site-older", "site-older")]
    assert fleet.resolve(OPERATOR, foreign, Action.MARK_FOREIGN) == "Marked as foreign: certs/site-older.foreign/."
    with pytest.raises(InvalidInput, match="does not apply"):
        fleet.resolve(OPERATOR, found[(Problem.NOT_FILED, "site-lost", "")], Action.FILE)
    fleet.revoke(OPERATOR, "site-lost", reason_code=4, confirmation="site-lost", serials={lost.serial})
    fleet.revoke(OPERATOR, "site-twice-keys", reason_code=4, confirmation="site-twice-keys", serials={serials[0]})
    assert disagreements(fleet, *mine) == []
    actions = [e["action"] for e in fleet.audit.entries()]
    assert "mark-foreign" in actions and actions.count("revoke") == 2


def test_a_staging_folder_left_by_a_crash_is_shown_and_filed(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    certs = fleet.settings.certs_dir
    # What a GUI killed between the CA's answer and the filing leaves: a hidden staging folder.
    staging = certs / ".issue-site-crash-0badf00d"
    staging.mkdir(parents=True)
    key = new_private_key("EC P-256")
    (staging / "site-crash.key").write_bytes(private_key_pem(key))
    chain = fleet.ca.sign(signing_request("site-crash", [], key), Kind.CLIENT, days=30)
    serial = x509.load_pem_x509_certificates(chain.encode())[0].serial_number
    ca.wait_in_journal(serial)

    (found,) = disagreements(fleet, "site-crash")
    assert (found.problem, found.folder, found.record and found.record.serial) == (
        Problem.QUARANTINED, staging.name, serial,
    )  # fmt: skip
    with pytest.raises(ActiveCertificateExists, match=f"serial {serial:X}"):
        fleet.issue(OPERATOR, request("site-crash"))
    assert fleet.resolve(OPERATOR, found, Action.FILE) == "Filed as certs/site-crash/."
    assert (certs / "site-crash" / "site-crash.crt").exists()
    assert disagreements(fleet, "site-crash") == []


# -- odd folders, lost answers, an audit trail that cannot be written ----------------------------------


def test_a_live_folder_without_its_certificate_stops_an_issue_before_signing(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    (fleet.settings.certs_dir / "site-empty").mkdir(parents=True)
    with pytest.raises(InvalidInput, match=r"certs/site-empty exists but holds no site-empty\.crt"):
        fleet.issue(OPERATOR, request("site-empty"))
    assert signed_by_ca(ca, "site-empty") == {}


def test_a_certificate_moved_into_an_oddly_named_folder_still_holds_its_identity(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    certs = fleet.settings.certs_dir
    record = fleet.issue(OPERATOR, request("site-odd")).record
    (certs / "site-odd").rename(certs / "site-odd.revoked.1")  # not an archive name: "numbers start at 2"
    with pytest.raises(ActiveCertificateExists, match=r"certs/site-odd\.revoked\.1"):
        fleet.issue(OPERATOR, request("site-odd"))
    revoked = fleet.revoke(OPERATOR, "site-odd", reason_code=4, confirmation="site-odd")
    assert revoked.serials == [record.serial] and revoked.confirmed
    assert revoked.renamed == {"site-odd.revoked.1": "site-odd.revoked"}


def test_a_certificate_the_ca_signed_after_step_gave_up_is_not_lost(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    real_sign = fleet.ca.sign
    late: list[int] = []

    def answer_comes_too_late(csr: bytes, kind: Kind, *, days: int) -> str:
        def sign_later() -> None:
            time.sleep(4)  # longer than the journal is watched
            chain = real_sign(csr, kind, days=days)
            late.append(x509.load_pem_x509_certificates(chain.encode())[0].serial_number)

        threading.Thread(target=sign_later).start()
        raise StepTimeout("The CA did not answer within 20 s (step ca timed out).", ["step"], None, "")

    fleet.ca.sign = answer_comes_too_late  # type: ignore[method-assign]
    with pytest.raises(IssueUncertain, match=r"certs/site-late\.quarantine/"):
        fleet.issue(OPERATOR, request("site-late"))
    fleet.ca.sign = real_sign  # type: ignore[method-assign]
    assert (fleet.settings.certs_dir / "site-late.quarantine" / "site-late.key").exists()
    deadline = time.monotonic() + 20
    while not late and time.monotonic() < deadline:
        time.sleep(0.2)
    ca.wait_in_journal(late[0])
    (found,) = disagreements(fleet, "site-late")
    assert (found.problem, found.record and found.record.serial) == (Problem.QUARANTINED, late[0])
    assert fleet.resolve(OPERATOR, found, Action.FILE) == "Filed as certs/site-late/."
    filed = fleet.record(late[0])
    assert filed is not None and filed.is_live and fleet.bundle(OPERATOR, late[0])


def test_a_certificate_whose_answer_was_lost_is_found_in_the_journal_and_filed_whole(
    ca: RunningCA, tmp_path: Path
) -> None:
    fleet = gui_fleet(ca, tmp_path)
    real_sign = fleet.ca.sign

    def answer_lost(csr: bytes, kind: Kind, *, days: int) -> str:
        real_sign(csr, kind, days=days)  # the CA signs; the connection breaks before step has the answer
        raise CAUnreachable("The CA cannot be reached: connection reset by peer", ["step"], 1, "")

    fleet.ca.sign = answer_lost  # type: ignore[method-assign]
    issued = fleet.issue(OPERATOR, request("mqtt-lost-answer.example", Kind.SERVER))
    chain = x509.load_pem_x509_certificates(issued.record.path.read_bytes())
    assert len(chain) == 2 and chain[0].serial_number == issued.record.serial  # leaf and intermediate
    assert fleet.audit.entries()[1] == fleet.audit.entries()[1] | {"action": "sign", "serial": issued.record.serial_hex}


def test_an_audit_trail_that_cannot_be_written_after_signing_loses_nothing(
    ca: RunningCA, tmp_path: Path, small_certs: Path
) -> None:
    fleet = gui_fleet(ca, tmp_path / "gui", PKI_AUDIT_LOG=str(small_certs / "audit.log"))  # only the audit is full
    fill(small_certs, 0)
    issued = fleet.issue(OPERATOR, request("site-no-audit"))
    assert issued.record.is_live and issued.record.has_key
    assert [w for w in issued.warnings if "could not be written" in w]
    assert valid_at_ca(ca, fleet, "site-no-audit") == {issued.record.serial}


def test_revoking_a_site_that_renews_meanwhile_says_what_is_still_valid(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    enrollment = fleet.enroll(OPERATOR, "site-renews", hours=1, broker="mqtt.ak-sg.com:8883")
    first = enrol_with_token(fleet.settings, tmp_path / "device", enrollment.token, "site-renews")
    ca.wait_in_journal(first)
    real_revoke = fleet.ca.revoke
    renewed: list[int] = []

    def site_renews_first(serial: int, reason_code: int, *, kind: Kind = Kind.CLIENT) -> None:
        time.sleep(1.1)  # a renewal one second later is a new certificate
        run_step(
            ["ca", "renew", "--force", "--ca-url", fleet.settings.public_ca_url, "--root", str(fleet.settings.root),
             str(tmp_path / "device" / "c.crt"), str(tmp_path / "device" / "c.key")],
            step_path=tmp_path / "device" / "step", timeout=20, step_bin=fleet.settings.step_bin,
        )  # fmt: skip
        renewed.append(x509.load_pem_x509_certificates((tmp_path / "device" / "c.crt").read_bytes())[0].serial_number)
        ca.wait_in_journal(renewed[0])
        real_revoke(serial, reason_code, kind=kind)

    fleet.ca.revoke = site_renews_first  # type: ignore[method-assign]
    result = fleet.revoke(OPERATOR, "site-renews", reason_code=1, confirmation="site-renews")
    assert result.serials == [first] and [r.serial for r in result.still_valid] == renewed
    assert not result.confirmed
    assert valid_at_ca(ca, fleet, "site-renews") == set(renewed)


def test_issuing_a_site_with_an_unused_token_warns(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    fleet.enroll(OPERATOR, "site-token-first", hours=2, broker="mqtt.ak-sg.com:8883")
    issued = fleet.issue(OPERATOR, request("site-token-first"))
    assert [w for w in issued.warnings if "An enrolment token made for site-token-first is valid until" in w]


def test_one_unreadable_certificate_does_not_break_the_inventory(tmp_path: Path) -> None:
    key = new_private_key("EC P-256")
    now = dt.datetime.now(dt.UTC)
    odd = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "site-oddext")]))
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Another CA")]))
        .public_key(key.public_key())
        .serial_number(12345)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.UnrecognizedExtension(x509.ExtensionOID.EXTENDED_KEY_USAGE, b"\x04\x01\x00"), False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    folder = tmp_path / "site-oddext"
    folder.mkdir()
    (folder / "site-oddext.crt").write_bytes(odd.public_bytes(serialization.Encoding.PEM))
    write_certificate(tmp_path, "site-fine", "site-fine", not_after=now + dt.timedelta(days=9))
    records = {r.folder: r for r in Inventory(tmp_path).records()}
    assert records["site-oddext"].error and records["site-fine"].error is None
    assert records["site-oddext"].status(now, frozenset(), 7) is Status.INVALID


@pytest.mark.parametrize("folder", [".issue-../../../tmp/x-0000", "../x", "a/b", "", ".."])
def test_reconcile_actions_take_only_plain_folder_names(ca: RunningCA, tmp_path: Path, folder: str) -> None:
    fleet = gui_fleet(ca, tmp_path)
    with pytest.raises(InvalidInput, match="is not a folder"):
        fleet.registrar(OPERATOR).file(folder)
    with pytest.raises(InvalidInput, match="is not a folder"):
        fleet.registrar(OPERATOR).mark_foreign(folder)
    assert not fleet.settings.certs_dir.exists()


def test_adding_a_key_next_to_a_certificate_is_noticed(tmp_path: Path) -> None:
    crt = write_certificate(tmp_path, "site-k", "site-k", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=9))
    crt.with_suffix(".key").unlink()
    inventory = Inventory(tmp_path)
    assert not inventory.records()[0].has_key
    crt.with_suffix(".key").write_text("a key\n")
    assert inventory.records()[0].has_key


def test_a_broker_re_issue_is_no_disagreement(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    old = fleet.issue(OPERATOR, request("mqtt-reissue.example", Kind.SERVER)).record
    fleet.reissue(OPERATOR, old.serial)
    assert disagreements(fleet, "mqtt-reissue.example") == []  # the old one is labelled replaced, as it is


def test_a_revocation_the_ca_refuses_for_every_serial_lists_each_answer(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    one = fleet.issue(OPERATOR, request("mqtt-refused.example", Kind.SERVER)).record
    two = fleet.reissue(OPERATOR, one.serial).record
    down = gui_fleet(ca, tmp_path, STEP_CA_URL="https://localhost:9")  # the same GUI files, a CA that is gone
    result = down.revoke(OPERATOR, "mqtt-refused.example", reason_code=4, confirmation="mqtt-refused.example")
    assert not result.confirmed and result.serials == []
    assert set(result.failures) == {one.serial, two.serial}
    assert all("cannot be reached" in why for why in result.failures.values())
    assert down.audit.entries()[0] | {"outcome": "failed"} == down.audit.entries()[0]
    assert valid_at_ca(ca, fleet, "mqtt-refused.example") == {one.serial, two.serial}


# -- the second round of attacks --------------------------------------------------------------------


def test_a_certificate_found_in_the_journal_is_filed_even_if_the_intermediate_cannot_be_read(
    ca: RunningCA, tmp_path: Path
) -> None:
    fleet = gui_fleet(ca, tmp_path)
    fleet.limits()
    assert fleet.issuer is not None  # read while the file is there
    real_sign = fleet.ca.sign
    intermediate = fleet.settings.intermediate
    moved = intermediate.with_name("intermediate.moved")

    def answer_lost(csr: bytes, kind: Kind, *, days: int) -> str:
        chain = real_sign(csr, kind, days=days)
        ca.wait_in_journal(x509.load_pem_x509_certificates(chain.encode())[0].serial_number)
        intermediate.rename(moved)
        raise StepTimeout("The CA did not answer within 20 s.", ["step"], None, "")

    fleet.ca.sign = answer_lost  # type: ignore[method-assign]
    try:
        issued = fleet.issue(OPERATOR, request("site-no-intermediate"))
    finally:
        moved.rename(intermediate)
    assert issued.record.is_live and issued.record.has_key
    assert valid_at_ca(ca, fleet, "site-no-intermediate") == {issued.record.serial}


def test_a_revocation_whose_last_crl_fetch_fails_names_no_old_certificate_as_new(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    old = fleet.issue(OPERATOR, request("site-crl-gone")).record
    fleet.revoke(OPERATOR, "site-crl-gone", reason_code=4, confirmation="site-crl-gone")
    new = fleet.issue(OPERATOR, request("site-crl-gone")).record
    real_revoke, real_crl = fleet.ca.revoke, fleet.ca.crl_info
    gone = threading.Event()

    def revoke_then_ca_goes(serial: int, reason_code: int, *, kind: Kind = Kind.CLIENT) -> None:
        real_revoke(serial, reason_code, kind=kind)
        gone.set()

    def crl_unless_gone(timeout: float | None = None):  # type: ignore[no-untyped-def]
        if gone.is_set():
            raise CAUnreachable("The CRL cannot be fetched: connection refused", ["GET"], None, "")
        return real_crl(timeout)

    fleet.ca.revoke, fleet.ca.crl_info = revoke_then_ca_goes, crl_unless_gone  # type: ignore[method-assign]
    result = fleet.revoke(OPERATOR, "site-crl-gone", reason_code=4, confirmation="site-crl-gone")
    assert result.serials == [new.serial] and result.still_valid == [] and old.serial != new.serial
    assert not result.confirmed and "connection refused" in (result.crl_problem or "")


def test_changes_stand_and_say_so_when_the_audit_trail_cannot_be_written(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    record = fleet.issue(OPERATOR, request("site-audit-full")).record
    full = gui_fleet(ca, tmp_path, PKI_AUDIT_LOG="/dev/full")
    result = full.revoke(OPERATOR, "site-audit-full", reason_code=4, confirmation="site-audit-full")
    assert result.serials == [record.serial] and result.renamed == {"site-audit-full": "site-audit-full.revoked"}
    assert result.warning and "could not be written" in result.warning
    write_certificate(fleet.settings.certs_dir, "old-foreign", "old-foreign", not_after=record.not_after)
    (found,) = [d for d in full.reconcile(full.table()) if d.identity == "old-foreign"]
    assert "could not be written" in full.resolve(OPERATOR, found, Action.MARK_FOREIGN)
    assert (fleet.settings.certs_dir / "old-foreign.foreign").is_dir()


def test_a_certificate_moved_to_a_folder_of_another_name_is_listed_and_filed_back(
    ca: RunningCA, tmp_path: Path
) -> None:
    fleet = gui_fleet(ca, tmp_path)
    certs = fleet.settings.certs_dir
    record = fleet.issue(OPERATOR, request("site-moved")).record
    (certs / "site-moved").rename(certs / "backup-of-site")
    (found,) = disagreements(fleet, "site-moved")
    assert (found.problem, found.folder, found.actions) == (
        Problem.MISFILED,
        "backup-of-site",
        (Action.FILE, Action.REVOKE),
    )
    assert fleet.resolve(OPERATOR, found, Action.FILE) == "Filed as certs/site-moved/."
    assert fleet.record(record.serial).is_live  # type: ignore[union-attr]
    assert disagreements(fleet, "site-moved") == []


def test_a_folder_the_gui_cannot_read_is_an_invalid_record_not_a_crash() -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to read certs/ as an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="unreadable-"))
    certs = base / "certs"
    write_certificate(certs, "site-ok", "site-ok", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=9))
    write_certificate(certs, "site-x.bak", "site-x", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=9))
    nobody = pwd.getpwnam("nobody")
    for path in (certs / "site-x.bak", *(certs / "site-x.bak").iterdir()):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)  # another user's, as `sudo cp -a` from elsewhere leaves it
    (certs / "site-x.bak").chmod(0o700)
    program = (
        f"import sys; sys.path.insert(0, {str(REPO / 'streamlit')!r})\n"
        "from pathlib import Path\nfrom pki.inventory import Inventory\n"
        f"inventory = Inventory(Path({str(certs)!r}))\n"
        "for r in inventory.records(): print(r.folder, r.identity, bool(r.error))\n"
        "print('locked view of site-x:', [r.folder for r in inventory.of_identity('site-x')])\n"
    )
    # Root without the capabilities that pass over file modes: it still reads the repository (its own,
    # wherever the clone is), but not another user's 0700 folder.
    done = subprocess.run(
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search",
         sys.executable, "-c", program],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    shutil.rmtree(base)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split("\n")[:-1]) == [
        "locked view of site-x: ['site-x.bak']",  # so an issue of site-x is refused, not blind
        "site-ok site-ok False",
        "site-x.bak site-x.bak True",
    ]


def test_the_audit_index_survives_a_cut_line_and_a_copytruncate(tmp_path: Path) -> None:
    from pki.audit import AuditLog

    audit = AuditLog(tmp_path / "audit.log")
    audit.record("sign", cn="a", serial="A1")
    assert audit.signed_here() == {0xA1: "a"}
    with audit.path.open("ab") as out:
        out.write(b'{"time": "2026-12-01T00:00:00+00:00", "act')  # a write cut short by a full disk
    audit.record("sign", cn="b", serial="B2")
    assert audit.signed_here() == {0xA1: "a", 0xB2: "b"}
    assert [e["serial"] for e in audit.entries() if e["action"] == "sign"] == ["B2", "A1"]
    audit.path.write_bytes(b"")  # copytruncate: the same file, emptied, then written past the old offset
    for serial in ("C3", "D4", "E5", "F6", "A7"):
        audit.record("sign", cn="c", serial=serial)
    assert {0xC3, 0xD4, 0xE5, 0xF6, 0xA7} <= set(audit.signed_here())
