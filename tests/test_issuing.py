"""Issue and revoke use-cases against the real CA: filing, archiving, refusals, audit."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import pytest
from cryptography import x509

from certfactory import write_certificate
from checks import check_bundle
from conftest import RunningCA, free_port
from pki.audit import AuditLog
from pki.bundle import make_bundle
from pki.ca import CertKind, StepCA
from pki.inventory import Inventory, Kind, Status
from pki.issuing import ActiveCertificateExists, Issued, IssueRequest, issue_certificate, revoke_cn
from pki.settings import Settings
from pki.step import CARefused, CAUnreachable
from pki.validate import InvalidInput


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    return tmp_path / "certs"


def gui_settings(ca: RunningCA, certs: Path, **env: str) -> Settings:
    """Settings of a GUI with its own certs/ folder and audit log."""
    return ca.settings(PKI_CERTS_DIR=str(certs), PKI_AUDIT_LOG=str(certs.parent / "audit.log"), **env)


def issue(ca: RunningCA, certs: Path, cn: str, kind: CertKind = CertKind.CLIENT, **kw: object) -> Issued:
    settings = gui_settings(ca, certs)
    step_ca = StepCA(settings)
    request = IssueRequest(
        cn=cn, kind=kind, sans=kw.get("sans", ""), days=kw.get("days", 30), key_type=kw.get("key_type", "EC P-256")
    )
    return issue_certificate(
        step_ca,
        Inventory(certs),
        request,
        max_days=730,
        revoked_serials=kw.get("revoked", step_ca.crl_info().revoked),
        audit=AuditLog(settings.audit_log),
    )


def test_issue_files_certificate_and_key_safely(ca: RunningCA, certs: Path) -> None:
    issued = issue(ca, certs, "site-201", sans="site-201\n10.0.60.11")
    folder = certs / "site-201"
    assert sorted(p.name for p in folder.iterdir()) == ["site-201.crt", "site-201.key"]
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / "site-201.key").stat().st_mode & 0o777 == 0o600
    chain = x509.load_pem_x509_certificates((folder / "site-201.crt").read_bytes())
    assert len(chain) == 2  # leaf + intermediate
    assert issued.record.kind is Kind.CLIENT and issued.record.sans == ("site-201", "10.0.60.11")
    assert [p.name for p in certs.iterdir()] == ["site-201"]  # no staging folder left


def test_server_certificate_gets_its_cn_as_a_san(ca: RunningCA, certs: Path) -> None:
    issued = issue(ca, certs, "broker-1.example", CertKind.SERVER, sans="10.0.80.51")
    assert issued.record.kind is Kind.SERVER
    assert issued.record.sans == ("broker-1.example", "10.0.80.51")


def test_active_cn_is_refused_and_nothing_changes(ca: RunningCA, certs: Path) -> None:
    issue(ca, certs, "site-202")
    before = (certs / "site-202" / "site-202.crt").read_bytes()
    with pytest.raises(ActiveCertificateExists, match="Revoke"):
        issue(ca, certs, "site-202")
    assert (certs / "site-202" / "site-202.crt").read_bytes() == before
    assert [p.name for p in certs.iterdir()] == ["site-202"]


def test_revoke_renames_and_reissue_keeps_every_old_folder(ca: RunningCA, certs: Path) -> None:
    settings = gui_settings(ca, certs)
    step_ca, inventory, audit = StepCA(settings), Inventory(certs), AuditLog(settings.audit_log)
    first = issue(ca, certs, "site-203").record
    crl = step_ca.crl_info().revoked
    with pytest.raises(InvalidInput, match="type the common name exactly"):
        revoke_cn(
            step_ca, inventory, "site-203", reason_code=1, confirmation="site-20", revoked_serials=crl, audit=audit
        )
    assert (certs / "site-203").exists()

    revoked = revoke_cn(
        step_ca, inventory, "site-203", reason_code=1, confirmation="site-203", revoked_serials=crl, audit=audit
    )
    assert revoked.folder == "site-203.revoked" and revoked.serials == [first.serial]
    assert first.serial in step_ca.crl_info().revoked

    second = issue(ca, certs, "site-203").record
    revoke_cn(
        step_ca, inventory, "site-203", reason_code=4, confirmation="site-203",
        revoked_serials=step_ca.crl_info().revoked, audit=audit,
    )  # fmt: skip
    third = issue(ca, certs, "site-203").record
    assert sorted(p.name for p in certs.iterdir()) == ["site-203", "site-203.revoked", "site-203.revoked.2"]
    assert len({first.serial, second.serial, third.serial}) == 3
    statuses = {r.folder: r.status(dt.datetime.now(dt.UTC), step_ca.crl_info().revoked, 7) for r in inventory.records()}
    assert statuses == {
        "site-203": Status.ACTIVE,
        "site-203.revoked": Status.REVOKED,
        "site-203.revoked.2": Status.REVOKED,
    }

    actions = [(e["action"], e["outcome"]) for e in audit.entries()]
    assert actions.count(("issue", "ok")) == 3 and actions.count(("revoke", "ok")) == 2


def test_cn_revoked_outside_the_gui_is_archived_as_revoked_on_reissue(ca: RunningCA, certs: Path) -> None:
    settings = gui_settings(ca, certs)
    first = issue(ca, certs, "site-204").record
    StepCA(settings).revoke(first.serial, 0)  # e.g. with the step CLI: the folder keeps its name
    issued = issue(ca, certs, "site-204")
    assert issued.archived_as == "site-204.revoked"


def test_a_refused_issue_leaves_nothing_behind(ca: RunningCA, certs: Path) -> None:
    settings = gui_settings(ca, certs)
    request = IssueRequest(cn="site-205", kind=CertKind.CLIENT, sans="", days=731, key_type="EC P-256")
    # 731 days with a max_days of 800 passes local validation; the CA itself refuses it.
    with pytest.raises(CARefused, match="authorized maximum"):
        issue_certificate(
            StepCA(settings), Inventory(certs), request, max_days=800, revoked_serials=frozenset(),
            audit=AuditLog(settings.audit_log),
        )  # fmt: skip
    assert list(certs.iterdir()) == []
    failed = AuditLog(settings.audit_log).entries()[0]
    assert failed["action"] == "issue" and failed["outcome"] == "failed"


def test_ca_down_issue_is_a_clear_error_and_creates_nothing(ca: RunningCA, certs: Path) -> None:
    settings = gui_settings(ca, certs, STEP_CA_URL=f"https://localhost:{free_port()}")
    request = IssueRequest(cn="site-206", kind=CertKind.CLIENT, sans="", days=30, key_type="EC P-256")
    with pytest.raises(CAUnreachable, match="cannot be reached"):
        issue_certificate(
            StepCA(settings), Inventory(certs), request, max_days=730, revoked_serials=frozenset(),
            audit=AuditLog(settings.audit_log),
        )  # fmt: skip
    assert list(certs.iterdir()) == []


def test_bundle_has_four_files_a_verifying_chain_and_the_matching_key(
    ca: RunningCA, certs: Path, tmp_path: Path
) -> None:
    record = issue(ca, certs, "site-207").record
    settings = gui_settings(ca, certs)
    data = make_bundle(record, settings.root.read_bytes(), "mqtt.ak-sg.com:8883", settings.crl_url)
    check_bundle(data, "site-207", tmp_path / "unzipped")
    readme = zipfile.ZipFile(io.BytesIO(data)).read("README.txt").decode()
    assert "bridge_certfile /etc/mosquitto/certs/site-207.crt" in readme
    assert "address mqtt.ak-sg.com:8883" in readme and "bridge_tls_version tlsv1.2" in readme

    server = issue(ca, certs, "mqtt.ak-sg.com", CertKind.SERVER).record
    server_readme = (
        zipfile.ZipFile(
            io.BytesIO(make_bundle(server, settings.root.read_bytes(), "mqtt.ak-sg.com:8883", settings.crl_url))
        )
        .read("README.txt")
        .decode()
    )
    for line in ("verify = verify_peer", "fail_if_no_peer_cert = true", "enable_crl_check = true"):
        assert line in server_readme


def test_audit_lines_are_json(ca: RunningCA, certs: Path) -> None:
    issue(ca, certs, "site-208")
    lines = gui_settings(ca, certs).audit_log.read_text().splitlines()
    assert all(json.loads(line)["time"] for line in lines)


def test_expired_cn_is_issued_again_and_the_old_folder_kept_as_expired(ca: RunningCA, certs: Path) -> None:
    write_certificate(certs, "site-209", "site-209", not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    issued = issue(ca, certs, "site-209")
    assert issued.archived_as == "site-209.expired"
    assert sorted(p.name for p in certs.iterdir()) == ["site-209", "site-209.expired"]
    assert (certs / "site-209.expired" / "site-209.key").exists()


def test_a_session_that_loses_the_race_revokes_and_keeps_its_certificate(ca: RunningCA, certs: Path) -> None:
    settings = gui_settings(ca, certs)
    real_ca = StepCA(settings)

    class OtherSessionMeanwhile(StepCA):
        """The real CA; right after it signs, another session files certs/site-210 first."""

        def issue(self, *args, **kwargs):
            real_ca.issue(*args, **kwargs)
            write_certificate(certs, "site-210", "site-210", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=9))

    request = IssueRequest(cn="site-210", kind=CertKind.CLIENT, sans="", days=30, key_type="EC P-256")
    with pytest.raises(InvalidInput, match="another session at the same moment") as err:
        issue_certificate(
            OtherSessionMeanwhile(settings), Inventory(certs), request, max_days=730,
            revoked_serials=frozenset(), audit=AuditLog(settings.audit_log),
        )  # fmt: skip
    kept = certs / "site-210.revoked"
    assert kept.is_dir() and (kept / "site-210.key").exists()
    serial = x509.load_pem_x509_certificates((kept / "site-210.crt").read_bytes())[0].serial_number
    assert serial in real_ca.crl_info().revoked
    assert "site-210.revoked" in str(err.value)
    assert not [p for p in certs.iterdir() if p.name.startswith(".")]


def test_server_cn_must_be_a_host_name_and_is_refused_before_anything_runs(ca: RunningCA, certs: Path) -> None:
    with pytest.raises(InvalidInput, match="must be its host name"):
        issue(ca, certs, "my_broker", CertKind.SERVER)
    assert not certs.exists() or list(certs.iterdir()) == []
    assert not (certs.parent / "audit.log").exists()
