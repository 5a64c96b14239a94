"""Issue and revoke through the facade against the real CA: filing, archiving, refusals, audit."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from cryptography import x509

from checks import check_bundle, expired_certificate
from conftest import OPERATOR, REPO, RunningCA, free_port, gui_fleet
from pki.bundle import site_bridge_config
from pki.fleet import Fleet
from pki.issuing import ActiveCertificateExists, IssueRequest
from pki.model import Kind, Status
from pki.step import CARefused, CAUnreachable
from pki.validate import InvalidInput


@pytest.fixture
def fleet(ca: RunningCA, tmp_path: Path) -> Fleet:
    return gui_fleet(ca, tmp_path)


def request(cn: str, kind: Kind = Kind.CLIENT, sans: str = "", days: int = 30, key_type: str = "EC P-256"):
    return IssueRequest(cn=cn, kind=kind, sans=sans, days=days, key_type=key_type)


def folders(fleet: Fleet) -> list[str]:
    return sorted(p.name for p in fleet.settings.certs_dir.iterdir() if not p.name.startswith("."))


def test_issue_files_certificate_and_key_safely(fleet: Fleet) -> None:
    issued = fleet.issue(OPERATOR, request("site-201", sans="site-201\n10.0.60.11"))
    folder = fleet.settings.certs_dir / "site-201"
    assert sorted(p.name for p in folder.iterdir()) == ["site-201.crt", "site-201.key"]
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "site-201.key").stat().st_mode & 0o777 == 0o600
    chain = x509.load_pem_x509_certificates((folder / "site-201.crt").read_bytes())
    assert len(chain) == 2  # leaf + intermediate
    assert issued.record.kind is Kind.CLIENT and issued.record.sans == ("site-201", "10.0.60.11")
    assert [p.name for p in fleet.settings.certs_dir.iterdir() if p.name != ".locks"] == ["site-201"]
    # The serial was audited as signed before it was filed, and the ledger has it at once.
    actions = [(e["action"], e.get("serial")) for e in reversed(fleet.audit.entries())]
    assert actions == [("sign", issued.record.serial_hex), ("issue", issued.record.serial_hex)]
    assert (fleet.settings.ledger_dir / f"{issued.record.serial_hex}.crt").exists()


def test_server_certificate_gets_its_cn_as_a_san(fleet: Fleet) -> None:
    issued = fleet.issue(OPERATOR, request("broker-1.example", Kind.SERVER, sans="10.0.80.51"))
    assert issued.record.kind is Kind.SERVER
    assert issued.record.sans == ("broker-1.example", "10.0.80.51")


def test_active_identity_is_refused_and_nothing_changes(fleet: Fleet) -> None:
    fleet.issue(OPERATOR, request("site-202"))
    before = (fleet.settings.certs_dir / "site-202" / "site-202.crt").read_bytes()
    with pytest.raises(ActiveCertificateExists, match="already has an active certificate"):
        fleet.issue(OPERATOR, request("site-202"))
    assert (fleet.settings.certs_dir / "site-202" / "site-202.crt").read_bytes() == before
    assert folders(fleet) == ["site-202"]


def test_revoke_renames_and_a_new_issue_keeps_every_old_folder(fleet: Fleet) -> None:
    first = fleet.issue(OPERATOR, request("site-203")).record
    with pytest.raises(InvalidInput, match="type the common name exactly: site-203"):
        fleet.revoke(OPERATOR, "site-203", reason_code=1, confirmation="site-20")
    assert (fleet.settings.certs_dir / "site-203").exists()

    revoked = fleet.revoke(OPERATOR, "site-203", reason_code=1, confirmation="site-203")
    assert revoked.renamed == {"site-203": "site-203.revoked"} and revoked.serials == [first.serial]
    assert revoked.confirmed and [o.answer for o in revoked.outcomes] == ["revoked"]
    assert first.serial in fleet.ca.crl_info().revoked

    second = fleet.issue(OPERATOR, request("site-203")).record
    fleet.revoke(OPERATOR, "site-203", reason_code=4, confirmation="SITE-203")  # the identity, in any case
    third = fleet.issue(OPERATOR, request("site-203")).record
    assert folders(fleet) == ["site-203", "site-203.revoked", "site-203.revoked.2"]
    assert len({first.serial, second.serial, third.serial}) == 3
    statuses = {row.record.folder: row.status for row in fleet.table().rows if row.identity == "site-203"}
    assert statuses == {
        "site-203": Status.ACTIVE,
        "site-203.revoked": Status.REVOKED,
        "site-203.revoked.2": Status.REVOKED,
    }
    actions = [(e["action"], e["outcome"]) for e in fleet.audit.entries()]
    assert actions.count(("issue", "ok")) == 3 and actions.count(("revoke", "ok")) == 2
    assert actions.count(("sign", "ok")) == 3


def test_identity_revoked_outside_the_gui_is_archived_as_revoked_on_a_new_issue(fleet: Fleet) -> None:
    first = fleet.issue(OPERATOR, request("site-204")).record
    fleet.ca.revoke(first.serial, 0)  # e.g. with the step CLI: the folder keeps its name
    issued = fleet.issue(OPERATOR, request("site-204"))
    assert issued.archived_as == ("site-204.revoked",)


def test_a_refused_issue_leaves_nothing_behind(fleet: Fleet) -> None:
    # 731 days passes a (wrongly) higher local limit; the CA itself refuses it.
    with pytest.raises(CARefused, match="authorized maximum"):
        fleet.registrar(OPERATOR).issue(request("site-205", days=731), max_days=800)
    assert folders(fleet) == []
    assert not [p for p in fleet.settings.certs_dir.iterdir() if p.name.startswith(".issue-")]
    failed = fleet.audit.entries()[0]
    assert failed["action"] == "issue" and failed["outcome"] == "failed" and "serial" not in failed


def test_ca_down_issue_is_a_clear_error_and_creates_nothing(ca: RunningCA, tmp_path: Path) -> None:
    down = gui_fleet(ca, tmp_path, STEP_CA_URL=f"https://localhost:{free_port()}")
    with pytest.raises(CAUnreachable, match="cannot be reached"):
        down.registrar(OPERATOR).issue(request("site-206"), max_days=730)
    assert [p.name for p in down.settings.certs_dir.iterdir()] == [".locks"]


def test_bundle_has_four_files_a_verifying_chain_and_the_matching_key(fleet: Fleet, tmp_path: Path) -> None:
    record = fleet.issue(OPERATOR, request("site-207")).record
    data, passphrase = fleet.bundle(OPERATOR, record.serial)
    check_bundle(data, "site-207", tmp_path / "unzipped", passphrase)
    assert passphrase not in data.decode(errors="replace") and len(passphrase) >= 20
    readme = zipfile.ZipFile(io.BytesIO(data)).read("README.txt").decode()
    # The bridge shown is the one enroll-site.sh writes, for the broker asked for.
    bridge = subprocess.run(
        ["bash", str(REPO / "scripts" / "enroll-site.sh"), "--print-bridge", "--site", "site-207",
         "--broker", "mqtt.ak-sg.com:8883"], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "".join(f"  {line}\n" for line in bridge.splitlines()) in readme
    assert "bridge_certfile /etc/mosquitto/certs/site-207.crt" in readme
    assert "address mqtt.ak-sg.com:8883" in readme and "bridge_tls_version tlsv1.2" in readme
    assert f"--fingerprint {fleet.ca.root_fingerprint()}" in readme
    for site in ("site_2.b-c", "x"):  # the script is asked once per broker: the text is still its own
        own = subprocess.run(
            ["bash", str(REPO / "scripts" / "enroll-site.sh"), "--print-bridge", "--site", site,
             "--broker", "mqtt.ak-sg.com:8883"], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert site_bridge_config(REPO / "scripts", site, "mqtt.ak-sg.com:8883") == own
    elsewhere = zipfile.ZipFile(io.BytesIO(fleet.bundle(OPERATOR, record.serial, broker="10.0.60.2:8884")[0]))
    assert "address 10.0.60.2:8884" in elsewhere.read("README.txt").decode()
    with pytest.raises(InvalidInput, match="is not like"):
        fleet.bundle(OPERATOR, record.serial, broker="mqtt.ak-sg.com")

    server = fleet.issue(OPERATOR, request("mqtt-207.example", Kind.SERVER)).record
    server_data, server_passphrase = fleet.bundle(OPERATOR, server.serial)
    check_bundle(server_data, "mqtt-207.example", tmp_path / "server", server_passphrase)
    server_readme = zipfile.ZipFile(io.BytesIO(server_data)).read("README.txt").decode()
    for line in (
        "verify = verify_peer",
        "fail_if_no_peer_cert = true",
        "enable_crl_check = true",
        "sudo bash install-broker.sh --crl-url http",
    ):
        assert line in server_readme


def test_a_bundle_never_carries_a_key_that_is_not_the_certificates(fleet: Fleet) -> None:
    one = fleet.issue(OPERATOR, request("site-210")).record
    two = fleet.issue(OPERATOR, request("site-211")).record
    key = fleet.settings.certs_dir / "site-210" / "site-210.key"
    key.chmod(0o600)
    key.write_bytes((fleet.settings.certs_dir / "site-211" / "site-211.key").read_bytes())
    with pytest.raises(InvalidInput, match="is not the private key of certificate"):
        fleet.bundle(OPERATOR, one.serial)
    assert fleet.bundle(OPERATOR, two.serial)


def test_audit_lines_are_json(fleet: Fleet) -> None:
    fleet.issue(OPERATOR, request("site-208"))
    lines = fleet.settings.audit_log.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["time"] for line in lines)


def test_expired_identity_is_issued_again_and_the_old_folder_kept_as_expired(ca: RunningCA, fleet: Fleet) -> None:
    expired_certificate(ca, fleet.settings.certs_dir, "site-209")
    issued = fleet.issue(OPERATOR, request("site-209"))
    assert issued.archived_as == ("site-209.expired",)
    assert folders(fleet) == ["site-209", "site-209.expired"]
    assert (fleet.settings.certs_dir / "site-209.expired" / "site-209.key").exists()


def test_server_cn_must_be_a_host_name_and_is_refused_before_anything_runs(fleet: Fleet) -> None:
    with pytest.raises(InvalidInput, match="must be its host name"):
        fleet.issue(OPERATOR, request("my_broker", Kind.SERVER))
    assert not fleet.settings.certs_dir.exists()
    assert not fleet.settings.audit_log.exists()


@pytest.mark.parametrize("cn", ["-rf", "../x", "a/b", "$(reboot)", "", "x.revoked.2", "a..b"])
def test_bad_common_name_never_reaches_step(fleet: Fleet, cn: str, step_calls: list[list[str]]) -> None:
    fleet.limits()  # the provisioner list is read first: it is not what this test watches
    step_calls.clear()
    with pytest.raises(InvalidInput):
        fleet.issue(OPERATOR, request(cn))
    assert step_calls == []
    assert not fleet.settings.certs_dir.exists()


def test_the_bundle_names_the_ca_from_its_settings(other_ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(other_ca, tmp_path)
    record = fleet.issue(OPERATOR, request("site-other-ca")).record
    readme = zipfile.ZipFile(io.BytesIO(fleet.bundle(OPERATOR, record.serial)[0])).read("README.txt").decode()
    assert "site-other-ca: client certificate of the Other CA" in readme


def test_the_fleet_table_is_built_once_per_change_of_the_records_or_the_crl(fleet: Fleet) -> None:
    fleet.issue(OPERATOR, request("site-230"))
    one = fleet.table()
    assert fleet.table() is one, "a reload with nothing new reuses the table"
    fleet.issue(OPERATOR, request("site-231"))
    two = fleet.table()
    assert two is not one and {"site-230", "site-231"} <= {row.cn for row in two.rows}
    fleet.revoke(OPERATOR, "site-230", reason_code=5, confirmation="site-230")
    three = fleet.table()
    assert next(row for row in three.rows if row.cn == "site-230").status is Status.REVOKED
    assert [three.rows[i].cn for i in three.search("SITE-231")] == ["site-231"]
