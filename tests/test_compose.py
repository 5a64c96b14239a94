"""Production as README gives it, run for real: `docker compose build && docker compose up -d` of a copy of
this repository on a private Docker Engine 26 with Compose v2 (tests/compose/engine.sh), its base images
replaced by test-only stand-ins (tests/compose/standins.sh). Everything it reaches is on loopback or in
the containers it started. Needs root (a private dockerd); the images and the engine are cached under
~/.cache/app-pki/docker, so a warm run costs about a minute and a half.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from playwright.sync_api import expect, sync_playwright

from conftest import REPO, TOOLS, free_port
from pki.bundle import mosquitto_acl, mosquitto_broker_config

# On a new machine the first test also pays for the stand-in images (five debootstraps and builds, many
# minutes): the module fixture's setup counts towards that test's timeout, so the usual 300 s would kill it.
pytestmark = [pytest.mark.compose, pytest.mark.timeout(2700)]
ENGINE, STANDINS = REPO / "tests" / "compose" / "engine.sh", REPO / "tests" / "compose" / "standins.sh"
PASSWORD = "the compose test's bootstrap password"


class Deployment:
    """A copy of the repository with a test .env on free ports, driven with docker compose."""

    def __init__(self, folder: Path, env: dict[str, str], extra: str = "") -> None:
        self.folder = folder
        self.env = env
        self.ca_port, self.crl_port, self.gui_port = free_port(), free_port(), free_port()
        self.metrics_port = free_port()
        (folder / ".env").write_text(
            "PKI_PUBLIC_HOSTS=localhost\n"
            f"PKI_PUBLIC_CA_URL=https://localhost:{self.ca_port}\n"
            f"PKI_CRL_URL=http://localhost:{self.crl_port}/1.0/crl\n"
            f"PKI_PASSWORD={PASSWORD}\n"
            f"CA_PORT={self.ca_port}\nCRL_PORT={self.crl_port}\nGUI_PORT={self.gui_port}\n"
            f"METRICS_PORT={self.metrics_port}\n" + extra
        )

    def dc(self, *args: str, check: bool = True, stdin: bytes | None = None, timeout: float = 900) -> bytes:
        done = subprocess.run(
            ["docker", "compose", *args], cwd=self.folder, env=self.env, input=stdin,
            capture_output=True, timeout=timeout,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"docker compose {' '.join(args)}: {done.returncode}\n{done.stderr.decode()}")
        return done.stdout

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["docker", "compose", *args], cwd=self.folder, env=self.env, input=stdin,
            capture_output=True, timeout=600,
        )  # fmt: skip

    def states(self) -> dict[str, dict[str, object]]:
        raw = self.dc("ps", "-a", "--format", "json").decode()
        entries = [json.loads(line) for line in raw.splitlines() if line.strip()]
        return {str(e["Service"]): e for e in entries}

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if all(states.get(s, {}).get("Health") == "healthy" for s in ("step-ca", "pki-gui")):
                return
            if time.monotonic() > deadline:
                logs = self.dc("logs", "--tail", "40", check=False).decode(errors="replace")
                raise AssertionError(f"not healthy within {timeout} s: {states}\n{logs}")
            time.sleep(2)

    def gui_python(self, code: str) -> str:
        """Python run in the GUI container with the GUI's own code and settings."""
        return self.dc("exec", "-T", "pki-gui", "python", "-c", code).decode()

    def root(self) -> Path:
        path = self.folder / "root_ca.crt"
        path.write_bytes(self.dc("exec", "-T", "pki-gui", "cat", "/app/ca/root_ca.crt"))
        return path

    def ca_files_digest(self) -> str:
        """SHA-256 over ca.json and every secret, read inside the CA's container."""
        listing = self.dc(
            "exec", "-T", "step-ca", "sh", "-c", "sha256sum /home/step/config/ca.json /home/step/secrets/*"
        )
        return hashlib.sha256(listing).hexdigest()

    def crl(self) -> x509.CertificateRevocationList:
        with urllib.request.urlopen(f"http://localhost:{self.crl_port}/1.0/crl", timeout=10) as answer:
            return x509.load_der_x509_crl(answer.read())


ISSUE = """
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.roles import Actor, Role
from pki.settings import load_settings
fleet = Fleet(load_settings())
who = Actor("compose-test", Role.OPERATOR, "127.0.0.1")
print(fleet.issue(who, IssueRequest("{cn}", Kind.CLIENT, "", 30, "EC P-256")).record.serial)
"""

REVOKE = """
from pki.fleet import Fleet
from pki.roles import Actor, Role
from pki.settings import load_settings
fleet = Fleet(load_settings())
who = Actor("compose-test", Role.OPERATOR, "127.0.0.1")
print(fleet.revoke(who, "{cn}", reason_code=1, confirmation="{cn}").serials)
"""

TOKEN = """
from pki.fleet import Fleet
from pki.roles import Actor, Role
from pki.settings import load_settings
fleet = Fleet(load_settings())
e = fleet.enroll(Actor("compose-test", Role.OPERATOR, "127.0.0.1"), "{site}", hours=1, broker="127.0.0.1:8883")
print(e.fingerprint)
print(e.token)
"""


@pytest.fixture(scope="module")
def engine() -> Iterator[dict[str, str]]:
    """The private Docker engine with the stand-in images; yields the environment docker compose runs in."""
    if os.geteuid() != 0:
        pytest.fail("the compose test starts a private dockerd and needs root (CI runs as root)")
    started = subprocess.run(["bash", str(ENGINE), "start"], capture_output=True, text=True, timeout=900)
    assert started.returncode == 0, started.stderr[-3000:]
    lines = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    # Compose prefers the shell's variables to .env: none of the test's own may leak in (make exports GUI_PORT).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STEP", "PKI_", "DOCKER", "COMPOSE_"))
        and k not in ("CA_PORT", "CRL_PORT", "GUI_PORT", "METRICS_PORT")
    }
    env.update(DOCKER_HOST=lines["DOCKER_HOST"], DOCKER_CONFIG=lines["DOCKER_CONFIG"])
    env["PATH"] = f"{Path(lines['DOCKER']).parent}{os.pathsep}{TOOLS}{os.pathsep}{env['PATH']}"
    try:
        built = subprocess.run(["bash", str(STANDINS)], env=env, capture_output=True, text=True, timeout=1800)
        assert built.returncode == 0, built.stderr[-3000:]
        yield env
    finally:
        stopped = subprocess.run(["bash", str(ENGINE), "stop"], capture_output=True, text=True, timeout=300)
        assert stopped.returncode == 0, stopped.stderr[-2000:]


@contextlib.contextmanager
def deployed(
    engine: dict[str, str], folder: Path, project: str, *, extra_env: str = "", profiles: tuple[str, ...] = ()
) -> Iterator[Deployment]:
    """The repository as a fresh clone has it (tracked and new files, nothing git ignores), built and up
    as project `project`; `down -v` afterwards."""
    # The project's name for compose and for the scripts that call it (backup.sh, restore.sh).
    env = engine | {"COMPOSE_PROJECT_NAME": project}
    if profiles:
        env["COMPOSE_PROFILES"] = ",".join(profiles)
    try:
        files = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
            check=True,
        ).stdout.split(b"\0")  # fmt: skip
        for name in filter(None, (f.decode() for f in files)):
            if (REPO / name).is_file():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, folder / name)
        (folder / "certs").mkdir(exist_ok=True)
        os.chown(folder / "certs", 1000, 1000)  # README: sudo chown 1000:1000 certs
        deployment = Deployment(folder, env, extra_env)
        deployment.dc("build", timeout=1800)
        deployment.dc("up", "-d", timeout=600)
        deployment.wait_healthy()
        yield deployment
    finally:
        if folder.exists():
            subprocess.run(["docker", "compose", "down", "-v", "--remove-orphans"], cwd=folder,
                           env=env, capture_output=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def deployment(engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(engine, tmp_path_factory.mktemp("compose") / "app-pki", "apppki-test") as running:
        yield running


def test_init_succeeds_and_the_gui_serves_https_from_our_root(deployment: Deployment) -> None:
    states = deployment.states()
    assert states["step-ca-init"]["ExitCode"] == 0
    context = ssl.create_default_context(cafile=str(deployment.root()))  # our root, and the name localhost
    url = f"https://localhost:{deployment.gui_port}/_stcore/health"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        assert answer.read() == b"ok"
    with pytest.raises(OSError):  # no plain HTTP
        urllib.request.urlopen(f"http://localhost:{deployment.gui_port}/_stcore/health", timeout=10)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_context(ignore_https_errors=True).new_page()  # the chain is checked above
        page.goto(f"https://localhost:{deployment.gui_port}/")
        page.get_by_label("User name").fill("admin")
        page.get_by_role("textbox", name="Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible(timeout=60_000)
        browser.close()


def test_issue_and_revoke_through_the_gui_container_and_the_crl_from_the_host(deployment: Deployment) -> None:
    serial = int(deployment.gui_python(ISSUE.format(cn="compose-site-1")))
    assert (deployment.folder / "certs" / "compose-site-1" / "compose-site-1.crt").exists()
    assert str(serial) in deployment.gui_python(REVOKE.format(cn="compose-site-1"))
    assert deployment.crl().get_revoked_certificate_by_serial_number(serial) is not None


def enrol_site(deployment: Deployment, site: str, prefix: Path) -> Path:
    """A token from the GUI container, then enroll-site.sh on the host against the published CA port, into
    `prefix`; returns the site's certificate file."""
    fingerprint, token = deployment.gui_python(TOKEN.format(site=site)).split()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "enroll-site.sh"), "--site", site,
         "--ca-url", f"https://localhost:{deployment.ca_port}", "--fingerprint", fingerprint,
         "--broker", "127.0.0.1:8883", "--token-file", "-", "--prefix", str(prefix), "--schedule", "none",
         "--reload-cmd", "true"],
        input=token + "\n", capture_output=True, text=True, timeout=180, env=deployment.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return prefix / "etc" / "mosquitto" / "certs" / f"{site}.crt"


def test_a_site_enrols_with_enroll_site_against_the_published_port(deployment: Deployment, tmp_path: Path) -> None:
    site_crt = enrol_site(deployment, "compose-site-2", tmp_path)
    leaf = x509.load_pem_x509_certificates(site_crt.read_bytes())[0]
    verified = subprocess.run(
        [str(TOOLS / "step"), "certificate", "verify", str(site_crt), "--roots", str(deployment.root())],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert leaf.subject.rfc4514_string() == "CN=compose-site-2"


def test_the_alerts_service_looks(deployment: Deployment) -> None:
    deadline = time.monotonic() + 120
    while b"condition(s), sent" not in deployment.dc("logs", "pki-alerts"):
        assert time.monotonic() < deadline, deployment.dc("logs", "pki-alerts").decode()
        time.sleep(2)
    assert deployment.states()["pki-alerts"]["State"] == "running"
    with urllib.request.urlopen(f"http://127.0.0.1:{deployment.metrics_port}/metrics", timeout=30) as answer:
        assert "\napp_pki_ca_up 1\n" in answer.read().decode()  # the CA as the alerts container sees it


def test_the_broker_check_runs_in_the_gui_container(deployment: Deployment, tmp_path: Path) -> None:
    """A Mosquitto of ours on the host side of the deployment's own bridge (its gateway address, never
    another interface), configured as our bundle says; the check runs in the GUI container."""
    gateway = (
        subprocess.run(
            ["docker", "network", "inspect", "apppki-test_default", "--format", "{{(index .IPAM.Config 0).Gateway}}"],
            env=deployment.env, capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    cn = "compose-broker.example.test"
    issue = ISSUE.replace('Kind.CLIENT, ""', f'Kind.SERVER, "{gateway}"').format(cn=cn)
    deployment.gui_python(issue)
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(deployment.root(), certs / "ca.crt")
    for suffix in (".crt", ".key"):
        shutil.copy(deployment.folder / "certs" / cn / f"{cn}{suffix}", certs / f"{cn}{suffix}")
    crl = tmp_path / "crl.pem"
    fetched = subprocess.run(
        ["bash", str(REPO / "scripts" / "refresh-crl.sh"), "--url", f"http://localhost:{deployment.crl_port}/1.0/crl",
         "--ca-file", str(certs / "ca.crt"), "--ca-file", str(certs / f"{cn}.crt"), "--out", str(crl)],
        capture_output=True, text=True, timeout=60, env=deployment.env,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    (tmp_path / "acl").write_text(mosquitto_acl())
    port = free_port()
    config = tmp_path / "broker.conf"
    listener = mosquitto_broker_config(
        cn, cert_dir=str(certs), crl_file=str(crl), acl_file=str(tmp_path / "acl"), bind=gateway, port=port
    )
    config.write_text("user root\n" + listener)
    broker = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/{gateway}/{port}"], capture_output=True).returncode:
            assert time.monotonic() < deadline and broker.poll() is None, "the broker did not start"
            time.sleep(0.2)
        done = deployment.run("exec", "-T", "pki-gui", "python", "-m", "pki.broker_check", f"{gateway}:{port}")
        out = done.stdout.decode()
        lines = {line.split()[1].rstrip("."): line.split()[0] for line in out.splitlines() if line[:4].strip()}
        # The revoked canary was revoked just now, after the broker fetched its CRL: WAIT, not FAIL.
        assert lines == {"1": "PASS", "2": "PASS", "3": "PASS", "4": "PASS", "5": "WAIT", "6": "PASS"}, out
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def test_the_gui_container_sees_no_ca_secret(deployment: Deployment) -> None:
    listing = deployment.dc("exec", "-T", "pki-gui", "find", "/app/ca", "/app/ca-log").decode()
    assert "secrets" not in listing and "config" not in listing and "_key" not in listing, listing


def test_backup_destroy_restore(deployment: Deployment, tmp_path: Path) -> None:
    backup, key = tmp_path / "pki.backup", tmp_path / "backup.key"
    subprocess.run(["age-keygen", "-o", str(key)], capture_output=True, check=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], capture_output=True, text=True, check=True).stdout.strip()
    before = deployment.ca_files_digest()
    revoked = {e.serial_number for e in deployment.crl()}
    made = subprocess.run(
        ["bash", "scripts/backup.sh", "--compose", "--recipient", public, "--out", str(backup)],
        cwd=deployment.folder, env=deployment.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    deployment.wait_healthy()  # step-ca was paused for the copy and runs again
    after_backup = int(deployment.gui_python(ISSUE.format(cn="compose-site-3")))

    deployment.dc("down", "-v")  # everything gone: volumes and the GUI's data
    shutil.rmtree(deployment.folder / "certs")
    (deployment.folder / "certs").mkdir()
    restored = subprocess.run(
        ["bash", "scripts/restore.sh", "--compose", "--identity", str(key), str(backup)],
        cwd=deployment.folder, env=deployment.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    deployment.dc("up", "-d")
    deployment.wait_healthy()
    assert deployment.ca_files_digest() == before  # the same CA: keys, passwords, config
    assert revoked <= {e.serial_number for e in deployment.crl()}
    assert (deployment.folder / "certs" / "compose-site-1.revoked" / "compose-site-1.crt").exists()
    by_serial = deployment.dc("exec", "-T", "pki-gui", "python", "-m", "pki.revoke", f"{after_backup:X}").decode()
    assert "revoked" in by_serial
    assert deployment.crl().get_revoked_certificate_by_serial_number(after_backup) is not None
    assert int(deployment.gui_python(ISSUE.format(cn="compose-site-4"))) != after_backup  # and it issues again


def test_restart_and_down_up_change_nothing(deployment: Deployment) -> None:
    before = deployment.ca_files_digest()
    deployment.dc("restart")
    deployment.wait_healthy()
    assert deployment.ca_files_digest() == before
    deployment.dc("down")
    deployment.dc("up", "-d")
    deployment.wait_healthy()
    assert deployment.ca_files_digest() == before


def test_a_changed_crl_url_stops_the_init_and_the_ca_keeps_running(deployment: Deployment) -> None:
    changed = deployment.run("run", "--rm", "-e", "PKI_CRL_URL=http://elsewhere.example/1.0/crl", "step-ca-init")
    assert changed.returncode == 3, changed.stderr.decode()
    assert deployment.states()["step-ca"]["Health"] == "healthy"


def test_stop_ends_every_service_without_sigkill(deployment: Deployment) -> None:
    deployment.dc("stop", timeout=120)
    codes = {name: state["ExitCode"] for name, state in deployment.states().items()}
    assert 137 not in codes.values(), codes


TABLE = """
from pki.fleet import Fleet
from pki.settings import load_settings
fleet = Fleet(load_settings())
print(fleet.ledger.ca_log, fleet.ledger.database is not None)
for row in fleet.table().rows:
    if row.valid:
        print(row.record.identity, row.record.serial)
"""


def test_two_replicas_on_postgresql_behind_haproxy(
    engine: dict[str, str], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """`docker compose --profile ha up -d` with .env.example's replica settings: the GUI and the sites go
    through ca-proxy; with one replica stopped, issuing and enrolling go on; the GUI knows every
    certificate from the shared database; it never sees the CA's database password."""
    replica_settings = (
        "PKI_CA_DNS_NAMES=localhost,step-ca,ca-proxy\n"
        "PKI_STEPCA_DB_URL=postgresql://stepca@step-ca-db:5432/stepca?sslmode=disable\n"
        "PKI_CA_DB_URL=postgresql://pki_gui@step-ca-db:5432/stepca?sslmode=disable\n"
        "PKI_CA_INTERNAL_URL=https://ca-proxy:9000\n"
        f"STEP_CA_BIND=127.0.0.1\nSTEP_CA_PORT={free_port()}\nSTEP_CRL_PORT={free_port()}\n"
    )
    folder = tmp_path_factory.mktemp("compose-ha") / "app-pki"
    with deployed(engine, folder, "apppki-ha", extra_env=replica_settings, profiles=("ha",)) as ha:
        deadline = time.monotonic() + 180
        while ha.states().get("step-ca-2", {}).get("Health") != "healthy":
            assert time.monotonic() < deadline, ha.states()
            time.sleep(2)
        assert {s for s, state in ha.states().items() if state["State"] == "running"} >= {
            "ca-proxy", "step-ca", "step-ca-2", "step-ca-db", "pki-gui",
        }  # fmt: skip
        first = int(ha.gui_python(ISSUE.format(cn="ha-site-1")))

        ha.dc("stop", "step-ca")  # one replica down: ca-proxy sends everything to the other
        try:
            second = int(ha.gui_python(ISSUE.format(cn="ha-site-2")))
            third = x509.load_pem_x509_certificates(enrol_site(ha, "ha-site-3", tmp_path).read_bytes())[0].serial_number
            assert str(first) in ha.gui_python(REVOKE.format(cn="ha-site-1"))
            assert ha.crl().get_revoked_certificate_by_serial_number(first) is not None
        finally:
            ha.dc("start", "step-ca")

        lines = ha.gui_python(TABLE).splitlines()
        assert lines[0] == "None True", "the GUI reads the database, not a journal"
        valid = dict(line.split() for line in lines[1:])
        assert valid.get("ha-site-2") == str(second) and valid.get("ha-site-3") == str(third)
        assert "ha-site-1" not in valid
        # The GUI has the read-only role's password; the CA's own is nowhere in its container.
        assert ha.dc("exec", "-T", "pki-gui", "sh", "-c", "ls /app/ca; ls / /run").decode().count("pgpass") == 0
        denied = ha.run("exec", "-T", "pki-gui", "python", "-c", (
            "import psycopg; from pathlib import Path; c = psycopg.connect("
            "'postgresql://pki_gui@step-ca-db:5432/stepca?sslmode=disable', "
            "password=Path('/app/ca/ca-db.password').read_text().strip(), autocommit=True); "
            "c.execute('DELETE FROM x509_certs')"
        ))  # fmt: skip
        assert denied.returncode != 0 and b"permission denied" in denied.stderr
        # A second `up` sets up nothing again.
        ha.dc("up", "-d", timeout=600)
        ha.wait_healthy()
        assert ha.states()["step-ca-init"]["ExitCode"] == 0

        # backup.sh --compose takes the database too; restored after `down -v`, the GUI knows the same fleet.
        key = tmp_path / "backup.key"
        made = subprocess.run(["age-keygen", "-o", str(key)], capture_output=True, text=True, check=True)
        recipient = made.stderr.split("Public key: ")[1].strip()
        backup = tmp_path / "ha.backup"
        command = ["bash", "scripts/backup.sh", "--compose", "--recipient", recipient, "--out", str(backup)]
        done = subprocess.run(command, cwd=ha.folder, env=ha.env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        ha.dc("down", "-v", timeout=300)
        command = ["bash", "scripts/restore.sh", "--compose", "--force", "--identity", str(key), str(backup)]
        restored = subprocess.run(command, cwd=ha.folder, env=ha.env, capture_output=True, text=True, timeout=900)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        ha.dc("up", "-d", timeout=600)
        ha.wait_healthy()
        assert dict(line.split() for line in ha.gui_python(TABLE).splitlines()[1:]) == valid
