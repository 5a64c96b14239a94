"""Two step-ca replicas sharing one PostgreSQL database behind HAProxy (TCP), as README "High
availability" sets them up: PostgreSQL from Debian's packages in a throw-away cluster, both replicas
started by scripts/start-ca.sh, the GUI's core reading the inventory from the database with a read-only
role. A bulk job of 500 certificates runs while one replica is killed and started again."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cryptography import x509

from conftest import INIT_CA, OPERATOR, REPO, START_CA, TOOLS, free_port, tool_env
from mqtt import HAPROXY, wait_for_port
from pki.bulk import Mode, Outcome
from pki.ca import StepCA
from pki.fleet import Fleet
from pki.keys import new_private_key, signing_request
from pki.settings import load_settings
from pki.step import StepError, run_step

PG_BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]) if glob.glob("/usr/lib/postgresql/*/bin") else None
AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
STEPCA_PASSWORD = "stepca-password-for-the-test"
GUI_PASSWORD = "gui-reader-password-for-the-test"
# README "High availability", step 1: the roles, the database, then ca/stepca-db.sql as the stepca role.
ROLES = f"""
CREATE ROLE stepca LOGIN PASSWORD '{STEPCA_PASSWORD}';
CREATE ROLE pki_gui LOGIN PASSWORD '{GUI_PASSWORD}';
CREATE DATABASE stepca OWNER stepca;
\\c stepca
GRANT USAGE ON SCHEMA public TO pki_gui;
SET ROLE stepca;
{(REPO / "ca" / "stepca-db.sql").read_text()}
"""


class Postgres:
    """A PostgreSQL cluster of its own in a temporary folder, on a loopback port."""

    def __init__(self) -> None:
        assert PG_BIN is not None, "apt-get install postgresql"
        self.base = Path(tempfile.mkdtemp(prefix="app-pki-pg-"))
        self.port = free_port()
        if AS_POSTGRES:
            shutil.chown(self.base, "postgres", "postgres")
        data = self.base / "data"
        subprocess.run([*AS_POSTGRES, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                        "--auth-host=scram-sha-256"], check=True, capture_output=True)  # fmt: skip
        self.process = subprocess.Popen(
            [*AS_POSTGRES, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.base),
             "-c", "listen_addresses=127.0.0.1"],
            stdout=(self.base / "postgres.log").open("ab") if not AS_POSTGRES else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for_port(self.port)
        self.psql(ROLES)

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [*AS_POSTGRES, str(PG_BIN / "psql"), "-h", str(self.base), "-p", str(self.port), "-U", "postgres",
             "-d", database, "-v", "ON_ERROR_STOP=1", "-At"],
            input=sql, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def url(self, user: str, password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/stepca?sslmode=disable"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.base, ignore_errors=True)


class Replica:
    def __init__(self, steppath: Path, base: Path, name: str, port: int, crl_port: int) -> None:
        self.steppath, self.base, self.name, self.port, self.crl_port = steppath, base, name, port, crl_port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.base / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["bash", str(START_CA)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=tool_env(STEPPATH=str(self.steppath), PKI_CA_LOG=str(self.base / f"{self.name}-issued.log"),
                             PKI_CA_LISTEN=f"127.0.0.1:{self.port}", PKI_CRL_LISTEN=f"127.0.0.1:{self.crl_port}"),
            )  # fmt: skip
        wait_for_port(self.port)

    def kill_step_ca(self) -> None:
        """SIGKILL to step-ca itself (not to start-ca.sh): a replica that dies mid-request."""
        assert self.process is not None
        found = subprocess.run(["pgrep", "-P", str(self.process.pid), "step-ca"], capture_output=True, text=True)
        os.kill(int(found.stdout.split()[0]), signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    cluster = Postgres()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def replicas(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("ha")
    steppath, gui_dir = base / "ca", base / "gui"
    front, crl_front = free_port(), free_port()
    init_env = tool_env(
        STEPPATH=str(steppath), PKI_GUI_DIR=str(gui_dir), PKI_CA_ADDRESS=f"127.0.0.1:{front}",
        PKI_CRL_ADDRESS=f"127.0.0.1:{crl_front}", PKI_CRL_URL=f"http://127.0.0.1:{crl_front}/1.0/crl",
        PKI_STEPCA_DB_URL=postgres.url("stepca", STEPCA_PASSWORD),
    )  # fmt: skip
    first = subprocess.run(["bash", str(INIT_CA)], env=init_env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert STEPCA_PASSWORD not in (gui_dir / "ca-settings.env").read_text()
    assert "STEPCA_DB=postgresql://stepca@127.0.0.1" in (gui_dir / "ca-settings.env").read_text()
    again = subprocess.run(["bash", str(INIT_CA)], env=init_env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0 and "Nothing changed" in again.stdout, again.stderr
    # The same database under a CA folder of its own: refused, and nothing of a CA is left behind.
    other = base / "other-ca"
    elsewhere = init_env | {"STEPPATH": str(other), "PKI_GUI_DIR": str(base / "og")}
    refused = subprocess.run(["bash", str(INIT_CA)], env=elsewhere, capture_output=True, text=True, timeout=180)
    assert refused.returncode == 1 and "already holds the provisioners of another CA" in refused.stderr
    assert not (other / "config").exists()
    # A password in the query is refused before anything happens, and never shown.
    third = base / "third-ca"
    in_query = elsewhere | {
        "STEPPATH": str(third),
        "PKI_STEPCA_DB_URL": f"{postgres.url('stepca')}&password={STEPCA_PASSWORD}",
    }
    refused = subprocess.run(["bash", str(INIT_CA)], env=in_query, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "password in its query" in refused.stderr
    assert STEPCA_PASSWORD not in refused.stderr + refused.stdout and not third.exists()

    one = Replica(steppath, base, "replica-1", free_port(), free_port())
    two = Replica(steppath, base, "replica-2", free_port(), free_port())
    for replica in (one, two):
        replica.start()
    haproxy_cfg = base / "haproxy.cfg"
    haproxy_cfg.write_text(f"""global
  maxconn 2000
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch
frontend ca
  bind 127.0.0.1:{front}
  default_backend replicas
frontend crl
  bind 127.0.0.1:{crl_front}
  default_backend crls
backend replicas
  server one 127.0.0.1:{one.port} check inter 300ms fall 1 rise 1
  server two 127.0.0.1:{two.port} check inter 300ms fall 1 rise 1 backup
backend crls
  server one 127.0.0.1:{one.crl_port} check inter 300ms fall 1 rise 1
  server two 127.0.0.1:{two.crl_port} check inter 300ms fall 1 rise 1 backup
""")
    haproxy = subprocess.Popen([HAPROXY, "-f", str(haproxy_cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_for_port(front)
    password_file = base / "gui-db.password"
    password_file.write_text(GUI_PASSWORD + "\n")
    gui_env = {
        "PKI_GUI_DIR": str(gui_dir), "STEP_CA_URL": f"https://localhost:{front}", "PKI_DATA_DIR": str(base / "data"),
        "PKI_CERTS_DIR": str(base / "certs"), "PKI_STEPPATH": str(base / "gui-step"),
        "PKI_STEP_BIN": str(TOOLS / "step"),
        "PKI_CA_DB_URL": postgres.url("pki_gui"), "PKI_CA_DB_PASSWORD_FILE": str(password_file),
        "PKI_STEP_TIMEOUT": "20",
    }  # fmt: skip
    yield {"one": one, "two": two, "gui_env": gui_env, "base": base, "steppath": steppath}
    haproxy.terminate()
    haproxy.wait(timeout=10)
    for replica in (one, two):
        replica.stop()


def replica_settings(gui_env: dict[str, str], replica: Replica) -> dict[str, str]:
    return gui_env | {"STEP_CA_URL": f"https://localhost:{replica.port}"}


def test_bulk_of_500_while_a_replica_is_killed_gives_each_site_one_certificate(
    replicas: dict[str, object], postgres: Postgres
) -> None:
    one, two = replicas["one"], replicas["two"]
    assert isinstance(one, Replica) and isinstance(two, Replica)
    gui_env = replicas["gui_env"]
    assert isinstance(gui_env, dict)
    fleet = Fleet(load_settings(gui_env))
    names = [f"ha-{i:03}" for i in range(500)]
    planned = fleet.bulk_plan(OPERATOR, "\n".join(names), source_name="ha", mode=Mode.CERTIFICATES, lifetime=30,
                              broker="mqtt.example.test:8883")  # fmt: skip
    job = fleet.bulk_start(OPERATOR, planned)
    deadline = time.monotonic() + 60
    while len(fleet.bulk.results(job)) < 100:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    one.kill_step_ca()  # mid-job: requests in flight to it fail, HAProxy sends the next ones to two
    time.sleep(1)
    one.start()
    deadline = time.monotonic() + 300
    while not fleet.bulk.status(job).finished:
        assert time.monotonic() < deadline, fleet.bulk.status(job).counts
        time.sleep(0.2)
    status = fleet.bulk.status(job)
    assert status.counts == {Outcome.DONE: 500, Outcome.SKIPPED: 0, Outcome.FAILED: 0}, [
        r for r in status.results.values() if r.outcome is not Outcome.DONE
    ]

    # The CA's own records: its database holds exactly one certificate per site, and each is filed here.
    rows = postgres.psql("SELECT encode(nvalue, 'hex') FROM x509_certs", "stepca").split()
    signed = [x509.load_der_x509_certificate(bytes.fromhex(r)) for r in rows]
    by_site = Counter(
        str(c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
        for c in signed
        if str(c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value).startswith("ha-")
    )
    assert by_site == Counter(dict.fromkeys(names, 1)), "no site signed twice, none lost"
    table = Fleet(load_settings(gui_env)).table()
    valid = Counter(r.record.identity for r in table.rows if r.valid and r.record.identity.startswith("ha-"))
    assert valid == Counter(dict.fromkeys(names, 1))

    # Revocations through either replica: each replica's CRL lists every one.
    revoked = []
    for name in names[:10]:
        done = fleet.revoke(OPERATOR, name, reason_code=4, confirmation=name)
        assert done.serials, done
        revoked.extend(done.serials)
    time.sleep(1)
    for replica in (one, two):
        crl = StepCA(load_settings(replica_settings(gui_env, replica))).crl_info().revoked
        assert set(revoked) <= crl, replica.name


def test_a_certificate_signed_by_either_replica_is_in_the_inventory_without_a_journal(
    replicas: dict[str, object], tmp_path: Path
) -> None:
    """A site enrolled straight at replica two (no journal is read: the GUI reads the database)."""
    two = replicas["two"]
    gui_env = replicas["gui_env"]
    assert isinstance(two, Replica) and isinstance(gui_env, dict)
    fleet = Fleet(load_settings(gui_env))
    assert fleet.ledger.ca_log is None
    enrollment = fleet.enroll(OPERATOR, "ha-token-site", hours=1, broker="mqtt.example.test:8883")
    direct = load_settings(replica_settings(gui_env, two))
    run_step(
        ["ca", "certificate", "ha-token-site", str(tmp_path / "s.crt"), str(tmp_path / "s.key"),
         "--ca-url", direct.ca_url, "--root", str(direct.root)],
        step_path=tmp_path / "step", timeout=20, step_bin=direct.step_bin, extra_env={"STEP_TOKEN": enrollment.token},
    )  # fmt: skip
    serial = x509.load_pem_x509_certificates((tmp_path / "s.crt").read_bytes())[0].serial_number
    # Another process (the alerts runner, a metrics scrape) copies the certificate into the ledger first.
    Fleet(load_settings(gui_env)).table()
    fresh = Fleet(load_settings(gui_env))
    rows = [r for r in fresh.table().rows if r.record.serial == serial]
    assert rows and rows[0].valid and rows[0].record.identity == "ha-token-site"
    deadline = time.monotonic() + 30
    while True:  # the token shows as used, with that certificate, from the database's spent tokens
        state = next(s for s in fresh.tokens(OPERATOR) if s.made.site == "ha-token-site")
        if state.serial or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (state.state.value, state.serial) == ("used", f"{serial:X}")
    # A cancel is confirmed from the database at once: spent, without a certificate.
    fleet.enroll(OPERATOR, "ha-cancelled", hours=1, broker="mqtt.example.test:8883")
    ref = next(s.made.token_ref for s in fleet.tokens(OPERATOR) if s.made.site == "ha-cancelled")
    started = time.monotonic()
    assert "is cancelled" in fleet.cancel_token(OPERATOR, ref)
    assert time.monotonic() - started < 5
    assert next(s for s in fleet.tokens(OPERATOR) if s.made.site == "ha-cancelled").state.value == "cancelled"
    # Without PKI_CA_DB_URL the GUI says that one replica's journal is not all.
    blind = Fleet(load_settings({k: v for k, v in gui_env.items() if k != "PKI_CA_DB_URL"}))
    assert "PKI_CA_DB_URL is not set" in (blind.ledger.problem or "")
    # The GUI's role may read, never write.
    connection = psycopg.connect(gui_env["PKI_CA_DB_URL"], password=GUI_PASSWORD, autocommit=True)
    with connection, pytest.raises(psycopg.errors.InsufficientPrivilege):
        connection.execute("DELETE FROM x509_certs")
    assert json.dumps(gui_env).count(STEPCA_PASSWORD) == 0


def test_backup_and_restore_carry_the_shared_database(
    replicas: dict[str, object], postgres: Postgres, tmp_path: Path
) -> None:
    base = replicas["base"]
    assert isinstance(base, Path)
    key = tmp_path / "backup.key"
    made = subprocess.run(["age-keygen", "-o", str(key)], capture_output=True, text=True, check=True)
    recipient = made.stderr.split("Public key: ")[1].strip()
    env = tool_env(PKI_DATA_DIR=str(base), PKI_CERTS_DIR=str(base / "certs"), PGPASSWORD=STEPCA_PASSWORD)
    out = tmp_path / "ha.backup"
    with_password = postgres.url("stepca", STEPCA_PASSWORD)
    refused = subprocess.run(["bash", "scripts/backup.sh", "--recipient", recipient, "--out", str(out), "--pg-url",
                              with_password], env=env, capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert refused.returncode == 1 and "holds a password" in refused.stderr and not out.exists()
    done = subprocess.run(["bash", "scripts/backup.sh", "--recipient", recipient, "--out", str(out), "--pg-url",
                           postgres.url("stepca")], env=env, capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert STEPCA_PASSWORD.encode() not in out.read_bytes()

    postgres.psql("CREATE DATABASE restored OWNER stepca;")
    target = postgres.url("stepca").replace("/stepca?", "/restored?")
    restore_env = env | {"PKI_DATA_DIR": str(tmp_path / "data"), "PKI_CERTS_DIR": str(tmp_path / "certs")}
    without = subprocess.run(["bash", "scripts/restore.sh", "--identity", str(key), str(out)], env=restore_env,
                             capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert without.returncode == 1 and "give --pg-url" in without.stderr and not (tmp_path / "data").exists()
    restored = subprocess.run(["bash", "scripts/restore.sh", "--identity", str(key), "--pg-url", target, str(out)],
                              env=restore_env, capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    count = "SELECT count(*) FROM x509_certs"
    assert postgres.psql(count, "restored") == postgres.psql(count, "stepca")
    assert int(postgres.psql(count, "restored")) > 500
    assert (tmp_path / "data" / "ca" / "config" / "ca.json").exists()
    again = subprocess.run(["bash", "scripts/restore.sh", "--identity", str(key), "--force", "--pg-url", target,
                            str(out)], env=restore_env, capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert again.returncode == 1 and "is not empty" in again.stderr


def test_two_spends_of_one_token_at_one_moment_cannot_both_succeed(postgres: Postgres) -> None:
    """What step-ca's PostgreSQL driver does to spend a token (nosql's CmpAndSwap): SELECT ... FOR UPDATE
    of the missing row, then an upsert. Interleaved in two transactions, without ca/stepca-db.sql's trigger
    both would succeed; with it the second fails."""
    url = postgres.url("stepca")
    first = psycopg.connect(url, password=STEPCA_PASSWORD)
    second = psycopg.connect(url, password=STEPCA_PASSWORD)
    select = "SELECT nvalue FROM used_ott WHERE nkey = %s FOR UPDATE"
    upsert = ("INSERT INTO used_ott (nkey, nvalue) VALUES (%s, %s) "
              "ON CONFLICT (nkey) DO UPDATE SET nvalue = excluded.nvalue")  # fmt: skip
    key = b"test-jti-raced"
    with first, second:
        assert first.execute(select, (key,)).fetchone() is None
        assert second.execute(select, (key,)).fetchone() is None  # both saw no spent token
        first.execute(upsert, (key, b"first"))
        outcome: list[str] = []

        def second_spend() -> None:
            try:
                second.execute(upsert, (key, b"second"))  # waits for the first to commit
                second.commit()
                outcome.append("spent twice")
            except psycopg.Error as exc:
                second.rollback()
                outcome.append(str(exc))

        waiting = threading.Thread(target=second_spend)
        waiting.start()
        time.sleep(0.5)
        first.commit()
        waiting.join(10)
    assert outcome and "spent already" in outcome[0], outcome


def test_one_token_sent_to_both_replicas_at_once_signs_once(replicas: dict[str, object], postgres: Postgres) -> None:
    """step-ca spends a token with SELECT ... FOR UPDATE of a missing row and an upsert: on PostgreSQL two
    requests at one moment would both pass. ca/stepca-db.sql's trigger refuses the second."""
    one, two, gui_env = replicas["one"], replicas["two"], replicas["gui_env"]
    assert isinstance(one, Replica) and isinstance(two, Replica) and isinstance(gui_env, dict)
    fleet = Fleet(load_settings(gui_env))
    for attempt in range(3):
        site = f"ha-race-{attempt}"
        token = fleet.enroll(OPERATOR, site, hours=1, broker="mqtt.example.test:8883").token
        csr = signing_request(site, [], new_private_key("EC P-256")).decode()
        targets = [StepCA(load_settings(replica_settings(gui_env, r))) for r in (one, two) * 4]
        start = threading.Barrier(len(targets))
        answers: list[str] = []

        def send(ca: StepCA, start: threading.Barrier, body: dict[str, str], answers: list[str]) -> None:
            start.wait()
            try:
                ca._post_json(f"{ca.settings.ca_url}/1.0/sign", body)
                answers.append("signed")
            except StepError as exc:
                answers.append(f"refused {exc.returncode}")

        body = {"csr": csr, "ott": token}
        threads = [threading.Thread(target=send, args=(ca, start, body, answers)) for ca in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers.count("signed") == 1, answers
        rows = postgres.psql("SELECT encode(nvalue, 'hex') FROM x509_certs", "stepca").split()
        names = [
            x509.load_der_x509_certificate(bytes.fromhex(r)).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            for r in rows
        ]
        assert sum(1 for n in names if n and n[0].value == site) == 1
