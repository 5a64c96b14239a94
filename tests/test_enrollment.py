"""Token enrolment, the ledger of what the CA signed, revoking a whole site, re-issuing a broker."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest
from cryptography import x509

from certfactory import request_line, write_certificate
from checks import enrol_with_token
from conftest import OPERATOR, RunningCA, gui_fleet
from pki import report
from pki.audit import MadeToken
from pki.ca import MINTER
from pki.enrollment import MAX_TOKEN_HOURS, Enrollment
from pki.fleet import Fleet
from pki.inventory import Inventory
from pki.issuing import ActiveCertificateExists, IssueRequest
from pki.ledger import Ledger, SpentTokens
from pki.minter import decrypt_provisioner_key
from pki.model import Kind, Status
from pki.roles import Actor, Forbidden, Role
from pki.step import CARefused, run_step
from pki.tokens import TokenState, TokenStatus, token_ref_of, token_states
from pki.validate import InvalidInput


def enroll_on_site(fleet: Fleet, token: str, cn: str, folder: str = "") -> Path:
    """A site host enrolling with the token: its folder holds its own key and certificate."""
    site = fleet.settings.certs_dir.parent / (folder or f"site-{cn}")
    enrol_with_token(fleet.settings, site, token, cn)
    return site


def renew_on_site(fleet: Fleet, site: Path) -> None:
    run_step(
        ["ca", "renew", "--force", "--ca-url", fleet.settings.public_ca_url, "--root", str(fleet.settings.root),
         str(site / "c.crt"), str(site / "c.key")],
        step_path=site / "step", timeout=20, step_bin=fleet.settings.step_bin,
    )  # fmt: skip


@pytest.fixture
def fleet(ca: RunningCA, tmp_path: Path) -> Fleet:
    return gui_fleet(ca, tmp_path)


def token_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


def test_enrolment_token_lives_for_hours_and_works_once(fleet: Fleet) -> None:
    enrollment = fleet.enroll(OPERATOR, "site-501", hours=48, broker="mqtt.ak-sg.com:8883")
    claims = token_claims(enrollment.token)
    assert claims["sub"] == "site-501" and claims["sans"] == ["site-501"]
    assert claims["exp"] - claims["iat"] == 48 * 3600
    assert claims["aud"] == f"{fleet.settings.public_ca_url}/1.0/sign"
    assert claims["sha"] == fleet.ca.root_fingerprint() == enrollment.fingerprint
    assert enrollment.command().endswith(f" --token-file - <<'TOKEN'\n{enrollment.token}\nTOKEN")
    assert "--token " not in enrollment.command()
    assert enrollment.command().startswith("sudo bash enroll-site.sh --site site-501 --ca-url ")

    site = enroll_on_site(fleet, enrollment.token, "site-501")
    cert = x509.load_pem_x509_certificates((site / "c.crt").read_bytes())[0]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    with pytest.raises(CARefused):
        enroll_on_site(fleet, enrollment.token, "site-501", folder="second-host")

    entry = fleet.audit.entries()[0]
    assert entry["action"] == "token" and entry["cn"] == "site-501"
    assert enrollment.token not in fleet.settings.audit_log.read_text()


def test_enrolment_token_survives_a_ca_restart(fleet: Fleet, ca: RunningCA) -> None:
    enrollment = fleet.enroll(OPERATOR, "site-502", hours=1, broker="mqtt.ak-sg.com:8883")
    ca.restart()
    enroll_on_site(fleet, enrollment.token, "site-502")


@pytest.mark.parametrize(
    ("site", "hours", "broker", "message"),
    [
        ("../x", 24, "mqtt.ak-sg.com:8883", "may hold only"),
        ("site-ok", 0, "mqtt.ak-sg.com:8883", "from 1 to"),
        ("site-ok", MAX_TOKEN_HOURS + 1, "mqtt.ak-sg.com:8883", "from 1 to"),
        ("site-ok", "x", "mqtt.ak-sg.com:8883", "whole number of hours"),
        ("site-ok", 24, "mqtt.ak-sg.com", "not like"),
        ("site-ok", 24, "bad host:8883", "not like"),
    ],
)
def test_bad_enrolment_input_mints_nothing(fleet: Fleet, site: str, hours: object, broker: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        fleet.enroll(OPERATOR, site, hours=hours, broker=broker)  # type: ignore[arg-type]
    assert fleet.audit.entries() == []


def test_ledger_knows_token_enrolments_and_renewals_and_revoke_takes_them_all(fleet: Fleet, ca: RunningCA) -> None:
    enrollment = fleet.enroll(OPERATOR, "site-503", hours=2, broker="mqtt.ak-sg.com:8883")
    site = enroll_on_site(fleet, enrollment.token, "site-503")
    first = serial_of(site / "c.crt")
    time.sleep(1.1)  # a renewal one second later expires one second later
    renew_on_site(fleet, site)
    second = serial_of(site / "c.crt")
    assert first != second
    ca.wait_in_journal(second)

    records = fleet.inventory.of_identity("site-503")
    assert {r.serial for r in records} == {first, second}
    assert all(r.source == "CA journal" and not r.has_key for r in records)
    by_serial = {row.record.serial: row for row in fleet.table().rows if row.identity == "site-503"}
    assert by_serial[first].superseded and not by_serial[second].superseded

    # The site has a valid certificate: neither the Issue page nor another token may make a second one.
    with pytest.raises(ActiveCertificateExists, match="CA journal"):
        fleet.issue(OPERATOR, IssueRequest("site-503", Kind.CLIENT, "", 30, "EC P-256"))
    with pytest.raises(ActiveCertificateExists, match="CA journal"):
        fleet.enroll(OPERATOR, "Site-503", hours=1, broker="mqtt.ak-sg.com:8883")

    revoked = fleet.revoke(OPERATOR, "site-503", reason_code=5, confirmation="site-503")
    assert sorted(revoked.serials) == sorted([first, second]) and revoked.renamed == {}
    assert revoked.confirmed
    crl = fleet.ca.crl_info().revoked
    assert first in crl and second in crl
    statuses = {row.record.serial: row.status for row in fleet.table().rows if row.identity == "site-503"}
    assert set(statuses.values()) == {Status.REVOKED}
    # A revoked site cannot renew.
    with pytest.raises(CARefused):
        renew_on_site(fleet, site)


def test_the_ledger_knows_spent_tokens_and_says_when_a_certificate_line_cannot_be_read(tmp_path: Path) -> None:
    log = tmp_path / "issued.log"
    ledger = Ledger(log, tmp_path / "ledger")

    def claims(token_id: str) -> str:  # a token without its signature, as start-ca.sh journals a spent one
        def part(data: dict[str, str]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        return f"{part({'alg': 'ES256'})}.{part({'jti': token_id, 'sub': 'x'})}"

    ref_a, ref_b = token_ref_of(f"{claims('id-a')}.sig"), token_ref_of(f"{claims('id-b')}.sig")
    spent_only = json.dumps({"path": "/1.0/sign", "status": 403, "ott-claims": claims("id-b")}).encode() + b"\n"
    refused = json.dumps({"path": "/1.0/sign", "status": 401, "ott-claims": claims("id-c")}).encode() + b"\n"
    log.write_bytes(
        spent_only
        + request_line("site-a", "/1.0/sign", 201, **{"ott-claims": claims("id-a")})
        + request_line("site-b", "/1.0/sign", 201, **{"ott-claims": claims("id-b")})  # fills the empty mark
        + request_line("site-c", "/1.0/sign", 201, **{"ott-claims": "unparsed"})
        + refused
    )
    spent = ledger.spent_tokens()
    serials = {r.cn: f"{r.serial:X}" for r in Inventory(tmp_path / "none", ledger).records()}
    assert spent.by_ref == {ref_a: serials["site-a"], ref_b: serials["site-b"]}
    assert [(cn, serial) for cn, _, serial in spent.unnamed] == [("site-c", serials["site-c"])]
    assert ledger.problem is None
    with log.open("ab") as journal:
        journal.write(b'{"certificate":"AAA","ott-claims":"x" "broken"}\n')
    ledger.sync()
    assert ledger.problem and "1 line(s)" in ledger.problem


def test_ledger_sync_is_incremental_and_survives_a_new_log(tmp_path: Path) -> None:
    log = tmp_path / "step-ca.log"
    ledger = Ledger(log, tmp_path / "ledger")
    assert ledger.sync().added == 0  # no log yet
    line = request_line

    log.write_bytes(b"badger INFO: not json\n" + line("a") + line("b", "/renew") + line("c", "/sign", 403))
    assert ledger.sync().added == 2
    assert ledger.sync().added == 0  # nothing new: nothing read
    d = line("d")
    with log.open("ab") as out:
        out.write(d[:-20])  # half a line: waits
    assert ledger.sync().added == 0
    with log.open("ab") as out:
        out.write(d[-20:])
    assert ledger.sync().added == 1
    log.unlink()
    log.write_bytes(line("e"))  # rotated: a new file from the start
    assert ledger.sync().added == 1
    assert len(list((tmp_path / "ledger").glob("*.crt"))) == 4


def test_the_ledger_folder_changes_with_its_certificates_only_and_reads_the_old_bookkeeping(tmp_path: Path) -> None:
    """A restarted GUI shows the snapshot it kept while the ledger's folder is as it was: the ledger's own
    position in the journal and its copy of the CRL are kept where writing them does not change that folder.
    What a version before kept next to the certificates is read until the new place has something."""
    log, folder = tmp_path / "issued.log", tmp_path / "ledger"
    folder.mkdir()
    (folder / ".position.json").write_text(json.dumps({"inode": 0, "offset": 0}))
    (folder / ".crl.der").write_bytes(b"the CRL kept before")
    ledger = Ledger(log, folder)
    assert ledger.last_crl() == b"the CRL kept before"
    log.write_bytes(request_line("a"))
    assert ledger.sync().added == 1
    before = folder.stat().st_mtime_ns, sorted(p.name for p in folder.iterdir())
    os.utime(folder, ns=(1, 1))
    with log.open("ab") as out:  # a token spent with nothing signed: the position moves, no certificate comes
        out.write(json.dumps({"path": "/1.0/sign", "status": 403, "ott-claims": "x.y"}).encode() + b"\n")
    ledger.sync()
    ledger.keep_crl(b"a new CRL")
    assert folder.stat().st_mtime_ns == 1 and sorted(p.name for p in folder.iterdir()) == before[1]
    assert Ledger(log, folder).last_crl() == b"a new CRL"
    assert Ledger(log, folder).sync().added == 0  # the position is read from its new place
    log.write_bytes(log.read_bytes() + request_line("b"))
    assert ledger.sync().added == 1 and folder.stat().st_mtime_ns != 1


def test_a_rotated_journal_longer_than_the_old_position_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "issued.log"
    ledger = Ledger(log, tmp_path / "ledger")
    log.write_bytes(request_line("first"))
    assert ledger.sync().added == 1
    rotated = tmp_path / "issued.log.1"
    log.rename(rotated)  # logrotate: the old file moves away, a new one starts and outgrows the old offset
    log.write_bytes(request_line("second") + request_line("third") + request_line("fourth"))
    assert log.stat().st_size > rotated.stat().st_size
    assert ledger.sync().added == 3
    assert len(list((tmp_path / "ledger").glob("*.crt"))) == 4


def test_broker_certificate_is_reissued_and_the_old_folder_kept(fleet: Fleet) -> None:
    issued = fleet.issue(OPERATOR, IssueRequest("mqtt-504.example", Kind.SERVER, "10.0.80.54", 90, "RSA 2048"))
    old = issued.record
    again = fleet.reissue(OPERATOR, old.serial)
    new = again.record
    assert again.archived_as == ("mqtt-504.example.replaced",)
    assert new.serial != old.serial and new.sans == old.sans and new.key_type == "RSA 2048"
    assert new.kind is Kind.SERVER and abs(
        (new.not_after - new.not_before) - (old.not_after - old.not_before)
    ) < dt.timedelta(minutes=2)
    certs = fleet.settings.certs_dir
    assert sorted(p.name for p in certs.iterdir() if p.name != ".locks") == [
        "mqtt-504.example",
        "mqtt-504.example.replaced",
    ]
    assert (certs / "mqtt-504.example.replaced" / "mqtt-504.example.key").exists()
    old_row = next(r for r in fleet.table().rows if r.record.serial == old.serial)
    assert old_row.status is Status.ACTIVE and old_row.superseded
    assert fleet.audit.entries()[0]["action"] == "reissue"


def test_client_certificates_are_not_reissued(fleet: Fleet) -> None:
    issued = fleet.issue(OPERATOR, IssueRequest("site-505", Kind.CLIENT, "", 30, "EC P-256"))
    with pytest.raises(InvalidInput, match="current broker certificate"):
        fleet.reissue(OPERATOR, issued.record.serial)


def test_server_expiry_warning_30_days_ahead_but_not_for_a_new_short_certificate(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    year_ago = now - dt.timedelta(days=345)
    for cn, left, since in (
        ("broker-soon", 20, year_ago),
        ("broker-later", 40, year_ago),
        ("broker-new-30-days", 30, now),
        ("broker-30-days-old", 9, now - dt.timedelta(days=21)),
    ):
        write_certificate(tmp_path, cn, cn, not_after=now + dt.timedelta(days=left), not_before=since, server=True)
    write_certificate(tmp_path, "site-soon", "site-soon", not_after=now + dt.timedelta(days=20))
    write_certificate(tmp_path, "site-late", "site-late", not_after=now + dt.timedelta(days=3))
    table = report.rows(Inventory(tmp_path).records(), now, frozenset(), 7)
    warned = [r.cn for r in report.server_expiry_warnings(table, now, 30)]
    assert warned == ["broker-30-days-old", "broker-soon"]
    counts = report.fleet_counts(table, now, 7, 30)
    assert (counts.sites, counts.brokers, counts.expiring, counts.revoked) == (2, 4, 3, 0)


def test_only_the_certificate_a_reissue_replaced_is_revoked(fleet: Fleet) -> None:
    old = fleet.issue(OPERATOR, IssueRequest("mqtt-506.example", Kind.SERVER, "", 30, "EC P-256")).record
    new = fleet.reissue(OPERATOR, old.serial).record
    with pytest.raises(InvalidInput, match=r"7B is not a valid certificate of mqtt-506\.example"):
        fleet.revoke(OPERATOR, "mqtt-506.example", reason_code=4, confirmation="mqtt-506.example", serials={123})
    done = fleet.revoke(
        OPERATOR, "mqtt-506.example", reason_code=4, confirmation="mqtt-506.example", serials={old.serial}
    )
    crl = fleet.ca.crl_info().revoked
    assert done.serials == [old.serial]
    assert done.renamed == {"mqtt-506.example.replaced": "mqtt-506.example.revoked"}
    assert old.serial in crl and new.serial not in crl
    assert (fleet.settings.certs_dir / "mqtt-506.example").is_dir()


def test_no_broker_warning_for_a_certificate_a_reissue_replaced(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    write_certificate(tmp_path, "mqtt-507.replaced", "mqtt-507", not_after=now + dt.timedelta(days=20), server=True)
    write_certificate(tmp_path, "mqtt-507", "mqtt-507", not_after=now + dt.timedelta(days=90), server=True)
    table = report.rows(Inventory(tmp_path).records(), now, frozenset(), 7)
    assert report.server_expiry_warnings(table, now, 30) == []
    assert report.expiring_within(table, now, 30) == []


def test_the_journal_holds_certificates_and_spent_token_refs_never_a_token(fleet: Fleet, ca: RunningCA) -> None:
    fleet.issue(OPERATOR, IssueRequest("site-508", Kind.CLIENT, "", 30, "EC P-256"))
    enrollment = fleet.enroll(OPERATOR, "site-508-t", hours=1, broker="mqtt.ak-sg.com:8883")
    enroll_on_site(fleet, enrollment.token, "site-508-t")
    spent = f'"ott-claims":"{enrollment.token.rsplit(".", 1)[0]}"'  # the spent token without its signature
    for _ in range(50):  # the CA writes its line as it answers
        if spent in ca.journal.read_text():
            break
        time.sleep(0.1)
    assert spent in ca.journal.read_text()
    lines = ca.journal.read_text().splitlines()
    assert lines and all(line.startswith("{") for line in lines)
    assert all('"certificate":' in line or '"ott-claims":' in line for line in lines)
    for text in (ca.journal.read_text(), ca.log()):
        assert '"ott":' not in text and enrollment.token.split(".")[2] not in text
    assert '"path":"/health"' in ca.log()  # the full log has everything else


def wait_for_state(fleet: Fleet, token_ref: str, state: TokenState) -> TokenStatus:
    """The token's state once the CA's journal line has reached the ledger (it is written as the CA answers)."""
    for _ in range(50):
        status = next(s for s in fleet.tokens(OPERATOR) if s.made.token_ref == token_ref)
        if status.state is state:
            return status
        time.sleep(0.1)
    raise AssertionError(f"the token stayed {status.state}")


def test_tokens_are_listed_with_the_state_the_ca_gives_them(fleet: Fleet) -> None:
    used = fleet.enroll(OPERATOR, "site-512", hours=2, broker="mqtt.ak-sg.com:8883")
    unused = fleet.enroll(OPERATOR, "site-513", hours=2, broker="mqtt.ak-sg.com:8883")
    statuses = {s.made.site: s for s in fleet.tokens(OPERATOR)}
    assert statuses["site-512"].state is statuses["site-513"].state is TokenState.UNUSED
    assert statuses["site-513"].made.made_by == OPERATOR.name
    serial = enrol_with_token(fleet.settings, fleet.settings.certs_dir.parent / "d512", used.token, "site-512")
    status = wait_for_state(fleet, token_ref_of(used.token), TokenState.USED)
    assert status.serial == f"{serial:X}"
    # Spent tokens leave the vault; the unused one is kept (0600) so that it can be cancelled.
    vault = fleet.settings.token_dir
    assert not (vault / token_ref_of(used.token)).exists()
    assert (vault / token_ref_of(unused.token)).stat().st_mode & 0o777 == 0o600


def test_an_unused_token_is_cancelled_at_the_ca_and_then_refused(fleet: Fleet, tmp_path: Path) -> None:
    enrollment = fleet.enroll(OPERATOR, "site-514", hours=2, broker="mqtt.ak-sg.com:8883")
    token_ref = token_ref_of(enrollment.token)
    before = {r.serial for r in fleet.inventory.records()}
    message = fleet.cancel_token(OPERATOR, token_ref)
    assert "cancelled" in message
    assert wait_for_state(fleet, token_ref, TokenState.CANCELLED).serial == ""
    with pytest.raises(CARefused):  # the CA itself refuses it now
        enrol_with_token(fleet.settings, tmp_path / "d514", enrollment.token, "site-514")
    assert {r.serial for r in fleet.inventory.records()} == before, "no certificate came of it"
    assert not (fleet.settings.token_dir / token_ref).exists()
    cancelled = [e for e in fleet.audit.entries() if e["action"] == "token-cancel"]
    assert cancelled[0]["cn"] == "site-514" and cancelled[0]["outcome"] == "ok"
    assert enrollment.token not in fleet.settings.audit_log.read_text()
    with pytest.raises(InvalidInput, match="is cancelled: there is nothing to cancel"):
        fleet.cancel_token(OPERATOR, token_ref)
    # A second token for the site no longer warns about the cancelled one.
    assert fleet.enroll(OPERATOR, "site-514", hours=1, broker="mqtt.ak-sg.com:8883").earlier_tokens == ()


def test_a_used_token_cannot_be_cancelled_and_a_viewer_cannot_cancel(fleet: Fleet, tmp_path: Path) -> None:
    enrollment = fleet.enroll(OPERATOR, "site-515", hours=2, broker="mqtt.ak-sg.com:8883")
    token_ref = token_ref_of(enrollment.token)
    with pytest.raises(Forbidden):
        fleet.cancel_token(Actor("vera", Role.VIEWER, "127.0.0.1"), token_ref)
    enrol_with_token(fleet.settings, tmp_path / "d515", enrollment.token, "site-515")
    wait_for_state(fleet, token_ref, TokenState.USED)
    with pytest.raises(InvalidInput, match="is used"):
        fleet.cancel_token(OPERATOR, token_ref)


def test_token_states_follow_the_ca_then_the_clock() -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    def made(token_ref: str, hours: int) -> MadeToken:
        return MadeToken("site-x", token_ref, now - dt.timedelta(hours=3), now + dt.timedelta(hours=hours), "otto", "")

    tokens = [made("a", 1), made("b", -1), made("c", 1), made("d", -1), made("", 1), made("e", 1), made("f", 1)]
    # A certificate of site-x signed with a token the journal could not name: the use of the earliest
    # unused token made before it ("" here), one token per certificate.
    unnamed = [("site-x", now - dt.timedelta(minutes=30), "2A"), ("site-y", now - dt.timedelta(minutes=30), "3B")]
    spent = SpentTokens({"a": "1F", "d": ""}, unnamed)
    states = {s.made.token_ref: (s.state, s.serial) for s in token_states(tokens, spent, {"c"}, now)}
    assert states == {
        "a": (TokenState.USED, "1F"),
        "b": (TokenState.EXPIRED, ""),
        "c": (TokenState.CANCELLED, ""),
        "d": (TokenState.CANCELLED, ""),
        "": (TokenState.USED, "2A"),
        "e": (TokenState.UNUSED, ""),
        "f": (TokenState.UNUSED, ""),
    }


def test_a_second_token_for_a_site_names_the_first_one_still_usable(fleet: Fleet) -> None:
    def token() -> Enrollment:
        return fleet.enroll(OPERATOR, "site-509", hours=3, broker="mqtt.ak-sg.com:8883")

    first = token()
    second = token()
    assert first.earlier_tokens == ()
    assert second.earlier_tokens == (first.expires.replace(microsecond=0),)
    # Once the CA has spent the first token, it is no longer one that "can still be used".
    enroll_on_site(fleet, first.token, "site-509")
    wait_for_state(fleet, token_ref_of(first.token), TokenState.USED)
    fleet.revoke(OPERATOR, "site-509", reason_code=5, confirmation="site-509")
    assert token().earlier_tokens == (second.expires.replace(microsecond=0),)


def test_lines_the_old_journal_got_after_the_last_sync_are_read_when_it_is_rotated(tmp_path: Path) -> None:
    log = tmp_path / "issued.log"
    ledger = Ledger(log, tmp_path / "ledger")
    log.write_bytes(request_line("before"))
    assert ledger.sync().added == 1
    with log.open("ab") as out:
        out.write(request_line("late"))  # step-ca wrote one more line into the old file...
    log.rename(tmp_path / "issued.log.1")  # ...then the journal was rotated
    log.write_bytes(request_line("after"))
    assert ledger.sync().added == 2
    assert ledger.sync().added == 0
    assert len(list((tmp_path / "ledger").glob("*.crt"))) == 3


def test_the_provisioner_key_is_opened_once_for_many_tokens_and_a_wrong_password_is_said(
    fleet: Fleet, ca: RunningCA, tmp_path: Path
) -> None:
    before = MINTER.decryptions
    tokens = [fleet.enroll(OPERATOR, f"site-53{i}", hours=1, broker="mqtt.ak-sg.com:8883").token for i in range(3)]
    assert MINTER.decryptions - before <= 1, "decrypted once per process (0 if an earlier test already did)"
    serial = enrol_with_token(fleet.settings, tmp_path / "d530", tokens[0], "site-530")  # the CA takes it
    assert serial
    listed = fleet.ca._provisioner_list()
    encrypted = next(p["encryptedKey"] for p in listed if p["name"] == fleet.settings.client_provisioner)
    with pytest.raises(ValueError, match="does not open its key"):
        decrypt_provisioner_key("iot-devices", encrypted, b"not the password")
