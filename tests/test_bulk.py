"""Bulk enrolment against the real CA: the check before anything happens, tokens and certificates
as jobs, a CA stopped mid-job, a GUI process killed mid-job, a rerun of the same file."""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from checks import enrol_with_token
from conftest import OPERATOR, RunningCA, free_port, gui_fleet, module_env
from pki.bulk import UNCERTAIN_TRIES, BulkJobs, JobStatus, Mode, Outcome, plan, read_sites
from pki.ca import StepCA
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.keys import key_id, new_private_key, private_key_pem, signing_request
from pki.model import Kind
from pki.roles import Actor, Forbidden, Role
from pki.tokens import TokenState
from pki.validate import InvalidInput

BROKER = "mqtt.example.test:8883"


def wait_finished(fleet: Fleet, job_id: str, timeout: float = 120) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = fleet.bulk.status(job_id)
        if status.finished:
            return status
        assert time.monotonic() < deadline, f"job {job_id} not finished: {status.counts}, {status.waiting}"
        time.sleep(0.2)


def valid_per_identity(fleet: Fleet, prefix: str) -> Counter[str]:
    """Valid certificates per identity as the CA's journal (the ledger) and certs/ show them, read afresh."""
    fresh = Fleet(fleet.settings)
    serials = {(row.record.identity, row.record.serial) for row in fresh.table().rows if row.valid}
    return Counter(identity for identity, _ in serials if identity.startswith(prefix))


def test_reading_a_file_and_checking_every_row_before_anything_happens() -> None:
    text = (
        "\ufeffSite,Note,SANs\n"
        "site-a,north,\n"
        "# a comment\n"
        "\n"
        "SITE-A,again,\n"  # the same identity as line 2
        "bad name,,\n"
        "site-b,,site-b.example.test 10.0.0.7\n"
        "site-c,,*.com\n"
        "site-d,has a valid certificate,\n"
        "site-e,has a token,\n"
        f"site-f,{'x' * 300},\n"
    )
    rows = read_sites(text)
    assert [r.line for r in rows] == [2, 5, 6, 7, 8, 9, 10, 11]
    assert rows[3].sans == "site-b.example.test 10.0.0.7" and rows[0].note == "north"
    assert [r.site for r in read_sites("site-1\n  site-2 \n\n#x\n")] == ["site-1", "site-2"]
    assert [(r.site, r.sans) for r in read_sites("site-1,a.example.test,hello\n")] == [("site-1", "a.example.test")]

    planned = plan(
        rows, mode=Mode.TOKENS, lifetime="24", max_days=365, broker=BROKER,
        valid_certificates={"site-d": "1A, until 2027-01-01"},
        unused_tokens={"site-e": dt.datetime(2027, 1, 1, tzinfo=dt.UTC)}, source_name="f.csv", source_sha256="0",
    )  # fmt: skip
    by_line = {r.line: r for r in planned.rows}
    assert [r.identity for r in planned.todo] == ["site-a", "site-b"]
    assert by_line[7].sans == ("site-b.example.test", "10.0.0.7")
    assert "line 2" in by_line[5].problem
    assert "letters, digits" in by_line[6].problem
    assert by_line[8].problem and by_line[8].identity == "site-c"
    assert "valid certificate" in by_line[9].skip and "unused enrolment token" in by_line[10].skip
    assert "200" in by_line[11].problem
    with pytest.raises(InvalidInput, match="no site"):
        plan([], mode=Mode.TOKENS, lifetime=24, max_days=1, broker=BROKER, valid_certificates={}, unused_tokens={},
             source_name="", source_sha256="")  # fmt: skip
    with pytest.raises(InvalidInput, match="hours"):
        plan(rows, mode=Mode.TOKENS, lifetime=1000, max_days=1, broker=BROKER, valid_certificates={},
             unused_tokens={}, source_name="", source_sha256="")  # fmt: skip
    with pytest.raises(InvalidInput, match="maximum of 30"):
        plan(rows, mode=Mode.CERTIFICATES, lifetime=31, max_days=30, broker=BROKER, valid_certificates={},
             unused_tokens={}, source_name="", source_sha256="")  # fmt: skip


def test_a_viewer_plans_and_starts_nothing(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    viewer = Actor("vera", Role.VIEWER, "127.0.0.1")
    with pytest.raises(Forbidden):
        fleet.bulk_plan(viewer, "site-v1\n", source_name="x", mode=Mode.TOKENS, lifetime=1, broker=BROKER)
    planned = fleet.bulk_plan(OPERATOR, "site-v1\n", source_name="x", mode=Mode.TOKENS, lifetime=1, broker=BROKER)
    with pytest.raises(Forbidden):
        fleet.bulk_start(viewer, planned)
    assert fleet.bulk.job_ids() == []


def test_tokens_in_bulk_enrol_sites_and_a_rerun_skips_them(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    fleet.issue(OPERATOR, IssueRequest("bt-has-cert", Kind.CLIENT, "", 30, "EC P-256"))
    names = [f"bt-{i:03}" for i in range(40)]
    text = "site,sans,note\n" + "".join(f"{n},,row {i}\n" for i, n in enumerate(names))
    text += "bt-has-cert,,\nbt-san,bt-san.example.test,\nbt-000,,twice\n"
    planned = fleet.bulk_plan(OPERATOR, text, source_name="sites.csv", mode=Mode.TOKENS, lifetime=2, broker=BROKER)
    assert len(planned.todo) == 41 and len(planned.skipped) == 1 and len(planned.problems) == 1
    job_id = fleet.bulk_start(OPERATOR, planned)
    status = wait_finished(fleet, job_id)
    assert status.counts == {Outcome.DONE: 41, Outcome.SKIPPED: 0, Outcome.FAILED: 0}

    # One audit line per token, naming the job; the commands hold each unused token once.
    audit = [json.loads(line) for line in fleet.settings.audit_log.read_text().splitlines()]
    made = [e for e in audit if e["action"] == "token" and e.get("job") == job_id]
    assert len(made) == 41 and len({e["cn"] for e in made}) == 41
    assert [e["action"] for e in audit if e.get("job") == job_id and e["action"].startswith("bulk")] == [
        "bulk-start", "bulk-finish",
    ]  # fmt: skip
    commands = list(csv.DictReader(io.StringIO(fleet.bulk_commands(OPERATOR, job_id).decode())))
    assert sorted(c["site"] for c in commands) == sorted([*names, "bt-san"])
    by_site = {c["site"]: c["command"] for c in commands}
    token = by_site["bt-san"].split("<<'TOKEN'\n")[1].split("\n")[0]

    # A site enrols with its token; the SAN of its row is in its certificate.
    serial = enrol_with_token(fleet.settings, tmp_path / "site-bt-san", token, "bt-san")
    crt = x509.load_pem_x509_certificates((tmp_path / "site-bt-san" / "c.crt").read_bytes())[0]
    assert crt.serial_number == serial
    sans = crt.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == ["bt-san", "bt-san.example.test"]
    ca.wait_in_journal(serial)
    assert len(list(csv.DictReader(io.StringIO(fleet.bulk_commands(OPERATOR, job_id).decode())))) == 40, (
        "a used token is not handed out again"
    )

    # The same file again: every site is done (a token unused, or a certificate), nothing is started.
    again = fleet.bulk_plan(OPERATOR, text, source_name="sites.csv", mode=Mode.TOKENS, lifetime=2, broker=BROKER)
    assert again.earlier_job == job_id and again.todo == []
    with pytest.raises(InvalidInput, match="nothing to start"):
        fleet.bulk_start(OPERATOR, again)


def test_certificates_in_bulk_wait_for_a_stopped_ca_and_hand_out_encrypted_bundles(
    ca: RunningCA, tmp_path: Path
) -> None:
    fleet = gui_fleet(ca, tmp_path)
    names = [f"bc-{i:03}" for i in range(60)]
    planned = fleet.bulk_plan(
        OPERATOR, "\n".join(names), source_name="pasted", mode=Mode.CERTIFICATES, lifetime=30, broker=BROKER
    )
    job_id = fleet.bulk_start(OPERATOR, planned)
    deadline = time.monotonic() + 60
    while len(fleet.bulk.results(job_id)) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ca.stop()
    try:
        deadline = time.monotonic() + 60
        while not fleet.bulk.status(job_id).waiting:
            assert time.monotonic() < deadline, "the job says it waits for the CA"
            time.sleep(0.1)
        assert not fleet.bulk.status(job_id).finished
    finally:
        ca.start()
    status = wait_finished(fleet, job_id)
    assert status.counts[Outcome.DONE] == 60, [r for r in status.results.values() if r.outcome is not Outcome.DONE]
    assert valid_per_identity(fleet, "bc-") == Counter(dict.fromkeys(names, 1))

    data, phrases, count = fleet.bulk_bundles(OPERATOR, job_id)
    assert count == 60
    passphrase = {row["site"]: row["passphrase"] for row in csv.DictReader(io.StringIO(phrases.decode()))}
    outer = zipfile.ZipFile(io.BytesIO(data))
    inner = zipfile.ZipFile(io.BytesIO(outer.read("bc-042.zip")))
    key = load_pem_private_key(inner.read("bc-042.key"), password=passphrase["bc-042"].encode())
    crt = x509.load_pem_x509_certificates(inner.read("bc-042.crt"))[0]
    assert key_id(key.public_key()) == key_id(crt.public_key())
    with pytest.raises((ValueError, TypeError)):
        load_pem_private_key(inner.read("bc-042.key"), password=passphrase["bc-041"].encode())
    assert not any(p in data.decode("latin-1") for p in passphrase.values()), "no passphrase inside the bundles"


KILLER = """
import os, signal, sys, time
from pki.bulk import Mode
from pki.fleet import Fleet
from pki.roles import Actor, Role
from pki.settings import load_settings

fleet = Fleet(load_settings())
actor = Actor("killed-gui", Role.OPERATOR, "127.0.0.1")
names = sys.argv[1].split(",")
planned = fleet.bulk_plan(actor, "\\n".join(names), source_name="x", mode=Mode(sys.argv[2]), lifetime=1,
                          broker="mqtt.example.test:8883")
job_id = fleet.bulk_start(actor, planned)
print(job_id, flush=True)
while len(fleet.bulk.results(job_id)) < int(sys.argv[3]):
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("mode", [Mode.CERTIFICATES, Mode.TOKENS])
def test_a_gui_killed_mid_job_resumes_without_a_duplicate(ca: RunningCA, tmp_path: Path, mode: Mode) -> None:
    prefix = f"bk{mode.value[0]}-"
    names = [f"{prefix}{i:03}" for i in range(50)]
    env = module_env(ca, tmp_path, PKI_DATA_DIR=str(tmp_path / "data"), PKI_AUDIT_LOG=str(tmp_path / "audit.log"))
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, ",".join(names), mode.value, "15"], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    job_id = killed.stdout.split()[0]
    fleet = gui_fleet(ca, tmp_path)
    jobs = BulkJobs(fleet.settings.bulk_dir)
    before = jobs.status(job_id)
    assert not before.finished and not before.running and 15 <= len(before.results) < 50

    # Lose the last progress lines as a cut write would: the audit trail still knows what the job did.
    progress = fleet.settings.bulk_dir / job_id / "progress.jsonl"
    lines = progress.read_text().splitlines(keepends=True)
    progress.write_text("".join(lines[:-3]) + lines[-3][:10])

    assert fleet.bulk_resume(OPERATOR, job_id)
    status = wait_finished(fleet, job_id)
    assert len(status.results) == 50
    assert status.counts[Outcome.FAILED] == 0
    assert status.counts[Outcome.DONE] >= 49  # the row in hand at the kill: done, or skipped if not audited
    audit = [json.loads(line) for line in fleet.settings.audit_log.read_text().splitlines()]
    if mode is Mode.CERTIFICATES:
        assert valid_per_identity(fleet, prefix) == Counter(dict.fromkeys(names, 1))
    else:
        made = Counter(e["cn"] for e in audit if e["action"] == "token" and e.get("job") == job_id)
        assert made == Counter(dict.fromkeys(names, 1)), "one token per site"
        statuses = [s for s in fleet.tokens(OPERATOR) if s.made.site.startswith(prefix)]
        assert len(statuses) == 50
    assert [e["action"] for e in audit if e.get("job") == job_id and e["action"].startswith("bulk")] == [
        "bulk-start", "bulk-resume", "bulk-finish",
    ]  # fmt: skip


@pytest.mark.parametrize("mode", [Mode.TOKENS, Mode.CERTIFICATES])
def test_two_operators_starting_the_same_file_at_once_give_each_site_one(
    ca: RunningCA, tmp_path: Path, mode: Mode
) -> None:
    fleet = gui_fleet(ca, tmp_path)
    prefix = f"b2{mode.value[0]}-"
    names = [f"{prefix}{i:03}" for i in range(60)]
    text = "\n".join(names)
    plans = [fleet.bulk_plan(OPERATOR, text, source_name="x", mode=mode, lifetime=1, broker=BROKER) for _ in range(2)]
    assert all(len(p.todo) == 60 for p in plans), "both checked before either started"
    jobs = [fleet.bulk_start(OPERATOR, p) for p in plans]
    statuses = [wait_finished(fleet, job) for job in jobs]
    assert sum(s.counts[Outcome.DONE] for s in statuses) == 60
    assert sum(s.counts[Outcome.SKIPPED] for s in statuses) == 60
    assert all(s.counts[Outcome.FAILED] == 0 for s in statuses)
    if mode is Mode.CERTIFICATES:
        assert valid_per_identity(fleet, prefix) == Counter(dict.fromkeys(names, 1))
    else:
        audit = [json.loads(line) for line in fleet.settings.audit_log.read_text().splitlines()]
        made = Counter(e["cn"] for e in audit if e["action"] == "token" and e.get("job") in jobs)
        assert made == Counter(dict.fromkeys(names, 1))


def test_a_revoked_site_waits_for_the_crl_while_the_ca_is_down(ca: RunningCA, tmp_path: Path) -> None:
    """Re-enrolling a revoked site: without the CA its CRL cannot say the old certificate is revoked, so
    the row waits (it is not skipped for good)."""
    fleet = gui_fleet(ca, tmp_path)
    fleet.issue(OPERATOR, IssueRequest("rvd-1", Kind.CLIENT, "", 30, "EC P-256"))
    fleet.revoke(OPERATOR, "rvd-1", reason_code=1, confirmation="rvd-1")
    planned = fleet.bulk_plan(OPERATOR, "rvd-1\nrvd-2\n", source_name="x", mode=Mode.CERTIFICATES, lifetime=30,
                              broker=BROKER)  # fmt: skip
    ca.stop()
    try:
        job = fleet.bulk_start(OPERATOR, planned)
        deadline = time.monotonic() + 60
        while not fleet.bulk.status(job).waiting:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        ca.start()
    status = wait_finished(fleet, job)
    assert status.counts[Outcome.DONE] == 2, status.results
    assert valid_per_identity(fleet, "rvd-") == Counter({"rvd-1": 1, "rvd-2": 1})


class FailingCA:
    """HTTPS on loopback with a certificate of the real CA: GETs go to the real CA, every signing request
    is answered 500 (a CA, or a proxy before it, failing after it got the request)."""

    def __init__(self, real: RunningCA, tmp_path: Path) -> None:
        key = new_private_key("EC P-256")
        chain = StepCA(real.settings()).sign(signing_request("localhost", ["localhost"], key), Kind.SERVER, days=1)
        (tmp_path / "failing.crt").write_text(chain)
        (tmp_path / "failing.key").write_bytes(private_key_pem(key))
        upstream = ssl.create_default_context(cafile=str(real.settings().root))
        self.posts = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                try:
                    with urllib.request.urlopen(real.url + self.path, context=upstream, timeout=10) as resp:  # noqa: S310
                        self._answer(resp.status, resp.read())
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read())

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts += 1
                self._answer(500, b'{"status":500,"message":"The certificate authority encountered an error."}')

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(tmp_path / "failing.crt", tmp_path / "failing.key")
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"https://localhost:{self.server.server_address[1]}"


def test_a_ca_failing_every_request_fails_the_row_after_a_few_tries(ca: RunningCA, tmp_path: Path) -> None:
    failing = FailingCA(ca, tmp_path)
    try:
        fleet = gui_fleet(ca, tmp_path, STEP_CA_URL=failing.url, PKI_STEP_TIMEOUT="3")
        planned = fleet.bulk_plan(OPERATOR, "q500-1\nq500-2\n", source_name="x", mode=Mode.CERTIFICATES,
                                  lifetime=30, broker=BROKER)  # fmt: skip
        job = fleet.bulk_start(OPERATOR, planned)
        status = wait_finished(fleet, job, timeout=180)
    finally:
        failing.server.shutdown()
    assert status.counts[Outcome.FAILED] == 2
    assert all("left open whether it signed" in r.why for r in status.results.values())
    quarantined = [p.name for p in fleet.settings.certs_dir.iterdir() if ".quarantine" in p.name]
    assert len(quarantined) == 2 * UNCERTAIN_TRIES, "one kept key per try, then the row is given up"
    assert failing.posts == 2 * UNCERTAIN_TRIES


def test_damaged_job_files_are_reported_not_raised(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    planned = fleet.bulk_plan(OPERATOR, "dmg-1\ndmg-2\n", source_name="x", mode=Mode.TOKENS, lifetime=1, broker=BROKER)
    job = fleet.bulk.create(OPERATOR, planned)
    (fleet.settings.bulk_dir / job / "progress.jsonl").write_bytes(
        b'{"line": 1, "identity": "dmg-1", "outcome": "done", "token_ref": "x"}\n\xff\x00\xfe garbage'
    )
    bad = fleet.settings.bulk_dir / "20200101-000000-abcdef"
    bad.mkdir()
    (bad / "job.json").write_text('{"id": "20200101-000000-abcdef", "rows": [')
    statuses = {s.id: s for s in fleet.bulk_jobs(OPERATOR)}
    assert "cannot be read" in statuses[bad.name].problem and statuses[bad.name].total == 0
    assert len(statuses[job].results) == 1 and not statuses[job].problem
    assert fleet.bulk_resume(OPERATOR, job)
    assert wait_finished(fleet, job).counts[Outcome.DONE] == 2


def test_a_status_read_as_a_resume_starts_does_not_stop_it(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    planned = fleet.bulk_plan(OPERATOR, "lck-1\nlck-2\n", source_name="x", mode=Mode.TOKENS, lifetime=1, broker=BROKER)
    job = fleet.bulk.create(OPERATOR, planned)
    lock = fleet.settings.bulk_dir / job / "run.lock"
    lock.touch()
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # what a page's status read holds, for an instant; here for 0.5 s
    try:
        assert fleet.bulk_resume(OPERATOR, job)
        time.sleep(0.5)
    finally:
        os.close(fd)
    assert wait_finished(fleet, job).counts[Outcome.DONE] == 2


def test_bad_files_get_a_message_and_headers_are_found_by_name() -> None:
    with pytest.raises(InvalidInput, match="cannot be read as CSV"):
        read_sites('site,sans,note\nsite-big,,"' + "x" * 140_000 + '"\n')
    with pytest.raises(InvalidInput, match="at most 5 MB"):
        read_sites("a\n" * 3_000_000)
    with pytest.raises(InvalidInput, match="More than 20000 rows"):
        read_sites("".join(f"s-{i}\n" for i in range(20_002)))
    assert [(r.site, r.note) for r in read_sites("id,site,note\n1,site-001,north\n")] == [("site-001", "north")]
    with pytest.raises(InvalidInput, match="names no site column"):
        read_sites("hostname,sans\nsite-1,\n")


def test_commands_leave_out_a_site_certified_meanwhile(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    planned = fleet.bulk_plan(OPERATOR, "tkc-1\ntkc-2\n", source_name="x", mode=Mode.TOKENS, lifetime=2, broker=BROKER)
    job = fleet.bulk_start(OPERATOR, planned)
    wait_finished(fleet, job)
    fleet.issue(OPERATOR, IssueRequest("tkc-1", Kind.CLIENT, "", 30, "EC P-256"))  # by hand, meanwhile
    commands = list(csv.DictReader(io.StringIO(fleet.bulk_commands(OPERATOR, job).decode())))
    assert [c["site"] for c in commands] == ["tkc-2"]


def test_an_older_quarantine_of_the_site_is_left_to_reconcile(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    certs = fleet.settings.certs_dir
    old = fleet.issue(OPERATOR, IssueRequest("oq-1", Kind.CLIENT, "", 30, "EC P-256")).record
    ca.wait_in_journal(old.serial)
    (certs / "oq-1" / "oq-1.crt").unlink()  # what an uncertain issue leaves: the key alone, the certificate in
    (certs / "oq-1").rename(certs / "oq-1.quarantine")  # the ledger
    fleet.revoke(OPERATOR, "oq-1", reason_code=1, confirmation="oq-1")
    planned = fleet.bulk_plan(OPERATOR, "oq-1\n", source_name="x", mode=Mode.CERTIFICATES, lifetime=30, broker=BROKER)
    fleet.issue(OPERATOR, IssueRequest("oq-1", Kind.CLIENT, "", 30, "EC P-256"))  # meanwhile
    job = fleet.bulk_start(OPERATOR, planned)
    assert wait_finished(fleet, job).results[1].outcome is Outcome.SKIPPED
    assert (certs / "oq-1.quarantine").exists()


def test_a_token_job_and_a_certificate_job_of_one_file_never_give_a_site_both(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    names = [f"tcx-{i:03}" for i in range(80)]
    jobs = [
        fleet.bulk_start(
            OPERATOR, fleet.bulk_plan(OPERATOR, text, source_name="x", mode=mode, lifetime=1, broker=BROKER)
        )
        for mode, text in ((Mode.CERTIFICATES, "\n".join(names)), (Mode.TOKENS, "\n".join(reversed(names))))
    ]
    for job in jobs:
        wait_finished(fleet, job)
    certified = {r.identity for r in fleet.bulk.results(jobs[0]).values() if r.outcome is Outcome.DONE}
    unused = {s.made.site for s in fleet.tokens(OPERATOR) if s.state is TokenState.UNUSED}
    assert not certified & unused
    assert certified | unused == set(names)
