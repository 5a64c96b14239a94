"""README.md followed as written, on real Mosquitto: make run, a broker from its bundle, a back-end reading
every site, a site enrolled by token, a message, a forced renewal, a revocation, the CRL refresh, the site
cut off, and Ctrl-C.

The shell blocks are taken from README.md itself; only what cannot be the same on a test machine is
substituted: ports, the installation prefix (/etc/... under a folder of the test), the public names of the
example company, and the service manager (no systemd here: the broker is restarted by its supervisor). A
README command that breaks fails this test. What README tells the operator to do in the GUI is done
through the same core the pages call (Fleet).
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import tempfile
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from conftest import OPERATOR, REPO, TOOLS, free_port, tool_env
from mqtt import Mosquitto, Subscriber, require_tools, wait_for_port
from pki.bundle import FLEET_READER, broker_install_commands, fleet_reader_command
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.settings import load_settings

README = REPO / "README.md"
EXAMPLE_CRL_URL = "http://pki.ak-sg.com:9080/1.0/crl"
EXAMPLE_CA_URL = "https://pki.ak-sg.com:9000"
BROKER = "mqtt.ak-sg.com"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="installs for the mosquitto user and lets Mosquitto drop root, as on Debian: needs root"
)


def section(heading: str) -> str:
    """The text under `heading` (a whole line such as '## Quick start') up to the next heading of its level
    or above."""
    lines = README.read_text().splitlines()
    start = lines.index(heading) + 1
    level = len(heading) - len(heading.lstrip("#"))
    end = next(
        (i for i in range(start, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[i])),
        len(lines),
    )
    return "\n".join(lines[start:end]) + "\n"


def bash_blocks(heading: str) -> list[str]:
    """The ```bash blocks of a section, as a reader copies them (a list item's indentation removed)."""
    blocks = re.findall(r"^( *)```bash\n(.*?)^\1```", section(heading), re.M | re.S)
    return [textwrap.dedent(indent + body) for indent, body in blocks]


def substituted(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"README no longer says {old!r}:\n{text}"
        text = text.replace(old, new)
    return text


def run_in_terminal(script: str, cwd: Path, passphrase: str = "", timeout: float = 180) -> tuple[int, str]:
    """`script` in bash on a terminal of its own (as pasted by an operator), typing `passphrase` whenever
    something asks for a pass phrase. Returns the exit code and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own with the terminal as its controlling tty
        os.chdir(cwd)
        os.execvpe("bash", ["bash", "-euo", "pipefail", "-c", script], tool_env())  # noqa: S606 (a pasted block)
    output, answered = b"", 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closed: the script ended
            break
        if not chunk:
            break
        output += chunk
        while answered < output.lower().count(b"pass phrase"):
            os.write(fd, passphrase.encode() + b"\n")
            answered += 1
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


class MakeRun:
    """`make run` on a terminal, as README's quick start starts it; `ctrl_c()` stops it the same way."""

    def __init__(self, command: str, data_dir: Path) -> None:
        self.output = b""
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(REPO)
            os.execvpe("bash", ["bash", "-c", command], tool_env(PKI_DATA_DIR=str(data_dir)))  # noqa: S606
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.output += chunk

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def wait_for(self, line: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.text():
            if time.monotonic() > deadline or os.waitpid(self.pid, os.WNOHANG) != (0, 0):
                raise AssertionError(f"make run never said {line!r}:\n{self.text()[-3000:]}")
            time.sleep(0.2)

    def ctrl_c(self) -> int:
        os.write(self.fd, b"\x03")  # the terminal turns it into SIGINT for the whole foreground group
        for _ in range(300):
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.reader.join(timeout=5)
                return status
            time.sleep(0.1)
        os.killpg(self.pid, signal.SIGKILL)
        raise AssertionError(f"make run did not stop on Ctrl-C:\n{self.text()[-3000:]}")


def world_readable_dir(prefix: str) -> Path:
    """A folder Mosquitto can still reach once it has dropped to its own user (pytest's are 0700)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    return folder


def executable(path: Path, text: str) -> Path:
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def places() -> Iterator[dict[str, Path]]:
    made = {name: world_readable_dir(f"app-pki-readme-{name}-") for name in ("data", "broker", "site", "backend")}
    yield made
    for folder in made.values():
        subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_readme_walk_through(places: dict[str, Path]) -> None:
    require_tools()
    ca_port, crl_port, gui_port = free_port(), free_port(), free_port()
    broker_port, site_port = free_port(), free_port()
    data, broker_dir, site_dir, backend = places["data"], places["broker"], places["site"], places["backend"]
    running: list[Mosquitto | Subscriber] = []

    # --- Quick start: make run, with the ports its table says how to change ---
    (quick_start,) = bash_blocks("## Quick start")
    make_line = next(line for line in quick_start.splitlines() if line.startswith("make run"))
    make_run = MakeRun(
        f"{make_line.split('#')[0].strip()} CA_PORT={ca_port} CRL_PORT={crl_port} GUI_PORT={gui_port}", data
    )
    try:
        make_run.wait_for("Press Ctrl-C to stop both.")
        assert f"GUI:  http://127.0.0.1:{gui_port}" in make_run.text()
        fleet = Fleet(
            load_settings(
                {
                    "STEP_CA_URL": f"https://localhost:{ca_port}",
                    "STEP_CA_ROOT": str(data / "gui" / "root_ca.crt"),
                    "PKI_DATA_DIR": str(data),
                    "PKI_GUI_DIR": str(data / "gui"),
                    "PKI_CA_LOG": str(data / "logs" / "issued.log"),
                    "PKI_STEP_BIN": str(TOOLS / "step"),
                }
            )
        )
        settings = fleet.settings
        fingerprint = fleet.ca.root_fingerprint()
        dialled = f"127.0.0.1:{broker_port}"

        # --- The broker side: its certificate and bundle, installed with README's commands ---
        issued = fleet.issue(OPERATOR, IssueRequest(BROKER, Kind.SERVER, f"{BROKER}\n127.0.0.1", 90, "EC P-256"))
        bundle, passphrase = fleet.bundle(OPERATOR, issued.record.serial)
        install = bash_blocks("### Mosquitto on Debian")[0]
        assert install == broker_install_commands(BROKER, EXAMPLE_CRL_URL), "README and the bundle say the same"
        readme_txt = zipfile.ZipFile(io.BytesIO(bundle)).read("README.txt").decode()
        assert textwrap.indent(broker_install_commands(BROKER, settings.crl_url), "  ") in readme_txt
        (broker_dir / f"{BROKER}.zip").write_bytes(bundle)
        etc = broker_dir / "etc" / "mosquitto"
        (etc / "conf.d").mkdir(parents=True)  # what Debian's mosquitto package leaves
        pid_file = Mosquitto.pid_file_of(broker_dir, "broker")
        # The broker's service: restarted by its supervisor once it runs; before, "restart" starts nothing.
        restart_broker = executable(
            broker_dir / "restart-broker",
            f'[ -f "{pid_file}" ] || exit 0\nexec ' + Mosquitto.restart_command_for(pid_file, broker_port),
        )
        reload_broker = executable(broker_dir / "reload-broker", f'kill -HUP "$(cat {pid_file})"')
        script = substituted(
            install,
            {
                EXAMPLE_CRL_URL: settings.crl_url,
                "sudo bash install-broker.sh": "bash install-broker.sh",
                "--crl-url": (
                    f"--prefix {broker_dir} --reload-cmd {reload_broker} --restart-cmd {restart_broker} --crl-url"
                ),
            },
        )
        code, shown = run_in_terminal(script, broker_dir, passphrase)
        assert code == 0 and "Broker mqtt.ak-sg.com is installed" in shown, shown
        key = etc / "certs" / f"{BROKER}.key"
        assert key.stat().st_mode & 0o777 == 0o600 and key.owner() == "mosquitto", (
            "Mosquitto 2 reads it after dropping root"
        )
        assert (etc / "crl.pem").read_text().startswith("-----BEGIN X509 CRL-----"), "the CRL is there before the start"
        unit = (broker_dir / "etc/systemd/system/app-pki-crl-refresh.service").read_text()
        exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))[len("ExecStart=") :]
        assert exec_start.startswith(f"{broker_dir}/usr/local/sbin/app-pki-refresh-crl "), (
            "a fixed path, not the ZIP's folder"
        )
        # Debian's mosquitto.conf includes conf.d; only the port differs from what the bundle wrote.
        conf = etc / "conf.d" / "app-pki.conf"
        conf.write_text(substituted(conf.read_text(), {"listener 8883 0.0.0.0": f"listener {broker_port} 127.0.0.1"}))
        broker = Mosquitto(broker_dir, "broker", f"include_dir {etc / 'conf.d'}\n", broker_port, keep_root=False)
        running.append(broker)
        assert broker.pid_file == pid_file

        # --- A back-end that reads every site ---
        reader = fleet.issue(OPERATOR, IssueRequest(FLEET_READER, Kind.CLIENT, "", 30, "EC P-256"))
        reader_zip, reader_passphrase = fleet.bundle(OPERATOR, reader.record.serial)
        (backend / f"{FLEET_READER}.zip").write_bytes(reader_zip)
        (read_all,) = bash_blocks("#### A back-end that reads every site")
        assert read_all == fleet_reader_command(f"{BROKER}:8883")
        prepare, subscribe = read_all.split("mosquitto_sub", 1)
        code, shown = run_in_terminal(prepare, backend, reader_passphrase)
        assert code == 0, shown
        argv = shlex.split(
            substituted(
                "mosquitto_sub" + subscribe.replace("\\\n", " "),
                {f"-h {BROKER} -p 8883": f"-h 127.0.0.1 -p {broker_port}"},
            )
        )
        monitor = Subscriber.of(argv, cwd=backend / FLEET_READER, out=backend / "read.txt")
        running.append(monitor)

        # --- A site enrolled by token, with the command the GUI shows ---
        enrollment = fleet.enroll(OPERATOR, "site-001", hours=1, broker=dialled)
        token_block, check_block = bash_blocks("### By token (recommended: the private key never leaves the site)")
        values = {
            EXAMPLE_CA_URL: settings.public_ca_url,
            "<root fingerprint>": fingerprint,
            f"{BROKER}:8883": dialled,
            "<token>": enrollment.token,
        }
        one_line = re.sub(r" \\\n\s*", " ", substituted(token_block, values)).strip()  # README wraps it
        assert one_line == enrollment.command(), "README shows what the GUI shows"
        restart_site = executable(
            site_dir / "restart-site",
            "exec " + Mosquitto.restart_command_for(Mosquitto.pid_file_of(site_dir, "site"), site_port),
        )
        enrol = substituted(
            token_block,
            values
            | {
                "sudo bash enroll-site.sh": (
                    f"bash {settings.enroll_script} --prefix {site_dir} --reload-cmd {restart_site}"
                )
            },
        )
        code, shown = run_in_terminal(enrol, site_dir)
        assert code == 0 and "Site site-001 is enrolled" in shown, shown
        site_conf = (
            f"listener {site_port} localhost\nallow_anonymous true\ninclude_dir {site_dir}/etc/mosquitto/conf.d\n"
        )
        site = Mosquitto(site_dir, "site", site_conf, site_port, keep_root=False)
        running.append(site)
        check = substituted(check_block, {"-p 1883": f"-p {site_port}"})

        def publish_check() -> None:
            run_in_terminal(check, site_dir, timeout=30)

        assert monitor.wait_for("sites/site-001/hello from site-001", timeout=60, publish=publish_check), (
            broker.log_text()[-3000:] + site.log_text()[-3000:]
        )

        # --- Renewing: --check says it is not due, --force renews and the bridge goes on ---
        site_crt = site_dir / "etc/mosquitto/certs/site-001.crt"
        first_serial = x509.load_pem_x509_certificates(site_crt.read_bytes())[0].serial_number
        check_renewal, force_renewal = substituted(
            bash_blocks("## Renewing")[0], {"sudo /etc/app-pki/": f"{site_dir}/etc/app-pki/"}
        ).splitlines()
        code, shown = run_in_terminal(check_renewal, site_dir)
        assert code == 0 and "Nothing to do" in shown, shown
        code, shown = run_in_terminal(force_renewal, site_dir)
        assert code == 0 and "Renewed the certificate of site-001" in shown, shown
        renewed_serial = x509.load_pem_x509_certificates(site_crt.read_bytes())[0].serial_number
        assert renewed_serial != first_serial
        wait_for_port(site_port)
        assert monitor.wait_for("sites/site-001/hello from site-001", timeout=60, publish=publish_check, fresh=True)

        # --- Revoking, then README's refresh on the broker: the site is cut off ---
        revoked = fleet.revoke(OPERATOR, "site-001", reason_code=1, confirmation="site-001")
        assert set(revoked.serials) == {first_serial, renewed_serial}
        (refresh_now,) = bash_blocks("## Revoking")
        assert refresh_now.strip() == "sudo systemctl start app-pki-crl-refresh"
        code, shown = run_in_terminal(exec_start, broker_dir)  # what the unit runs
        assert code == 0 and "Replaced" in shown, shown
        wait_for_port(broker_port)
        monitor.mark()
        for _ in range(12):  # six seconds of a site trying to publish
            publish_check()
            time.sleep(0.5)
        assert not monitor.since_mark(), "a revoked site still delivers"
        assert broker.log_text().count("certificate verify failed") >= 1, broker.log_text()[-3000:]
        code, shown = run_in_terminal(force_renewal, site_dir)
        assert code == 1 and "the CA did not renew the certificate of site-001" in shown, shown
    finally:
        for process in reversed(running):
            process.stop()
        status = make_run.ctrl_c()

    # --- Ctrl-C: both stopped, said so, and nothing that looks like a crash ---
    said = make_run.text()
    assert "app-pki stopped." in said, said[-2000:]
    assert "stopped on its own" not in said and "Error" not in said, said[-2000:]
    assert (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT) or os.waitstatus_to_exitcode(status) == 0
