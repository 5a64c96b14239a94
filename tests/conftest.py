"""A real step-ca for the tests, set up by the project's own scripts/init-ca.sh.

One CA per test session (own STEPPATH, free loopback ports), stopped at the end; its log is attached
to the report of every failing test that used it. Nothing here is mocked: if step or step-ca are
missing the session fails (run `make test`, which installs them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import pki.step
from pki.ca import StepCA
from pki.fleet import Fleet
from pki.roles import Actor, Role
from pki.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".tools" / "bin"
INIT_CA = REPO / "scripts" / "init-ca.sh"
START_CA = REPO / "scripts" / "start-ca.sh"


OPERATOR = Actor("test-operator", Role.OPERATOR, "127.0.0.1")
"""Who the tests act as: the least role that may change the fleet."""


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not given before in this test run: the kernel may hand out the same
    ephemeral port twice in a row (a CA and its CRL port once got the same one)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def tool_env(**extra: str) -> dict[str, str]:
    """The environment for the project's scripts: the pinned tools first on PATH, no STEP_* leaks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STEP", "PKI_"))}
    env["PATH"] = f"{TOOLS}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class RunningCA:
    """A step-ca process on loopback made by init-ca.sh, with the GUI-side settings that reach it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.steppath = base / "ca"
        self.gui_dir = base / "gui"
        self.log_path = base / "step-ca.log"
        self.journal = base / "issued.log"
        """The issuance journal start-ca.sh writes (certificate lines only): the ledger's source."""
        self.port = free_port()
        self.crl_port = free_port()
        self.url = f"https://localhost:{self.port}"
        self.crl_url = f"http://127.0.0.1:{self.crl_port}/1.0/crl"
        self.process: subprocess.Popen[bytes] | None = None

    def init_env(self, **overrides: str) -> dict[str, str]:
        settings = {
            "STEPPATH": str(self.steppath),
            "PKI_GUI_DIR": str(self.gui_dir),
            "PKI_CA_ADDRESS": f"127.0.0.1:{self.port}",
            "PKI_CRL_ADDRESS": f"127.0.0.1:{self.crl_port}",
            "PKI_CRL_URL": self.crl_url,
            # short enough that the renewal-after-expiry test waits seconds, not minutes
            "PKI_CERT_MIN_DURATION": "10s",
        }
        settings.update(overrides)
        return tool_env(**settings)

    def run_init(self, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(INIT_CA)], env=self.init_env(**overrides), capture_output=True, text=True, timeout=120
        )

    def start(self) -> None:
        """Start step-ca as production does (scripts/start-ca.sh), its JSON log in log_path."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["bash", str(START_CA)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=tool_env(STEPPATH=str(self.steppath), PKI_CA_LOG=str(self.journal)),
            )
        deadline = time.monotonic() + 30
        ca = StepCA(self.settings())
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"step-ca exited:\n{self.log()}")
            try:
                ca.health(timeout=5)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def wait_in_journal(self, serial: int, timeout: float = 15) -> None:
        """Until the journal holds `serial`: step-ca logs a request after answering it, so the line lands a
        moment after the client already has its certificate (the GUI sees it on its next rerun)."""
        needle = f'"serial":"{serial}"'
        deadline = time.monotonic() + timeout
        while needle not in (self.journal.read_text() if self.journal.exists() else ""):
            if time.monotonic() > deadline:
                raise TimeoutError(f"serial {serial} did not reach {self.journal}")
            time.sleep(0.1)

    def step_ca_pid(self) -> int:
        """The step-ca process itself (start-ca.sh is its parent)."""
        assert self.process is not None
        found = subprocess.run(["pgrep", "-P", str(self.process.pid), "step-ca"], capture_output=True, text=True)
        return int(found.stdout.split()[0])

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def settings(self, **env: str) -> Settings:
        values = {
            "PKI_GUI_DIR": str(self.gui_dir),
            "STEP_CA_URL": self.url,
            "PKI_CERTS_DIR": str(self.base / "certs"),
            "PKI_STEPPATH": str(self.base / "gui-step"),
            "PKI_STEP_BIN": str(TOOLS / "step"),
            "PKI_STEP_TIMEOUT": "20",
            "PKI_AUDIT_LOG": str(self.base / "audit.log"),
            "PKI_CA_LOG": str(self.journal),
            "PKI_LEDGER_DIR": str(self.base / "ledger"),
        }
        values.update(env)
        return load_settings(values)


def gui_fleet(ca: RunningCA, base: Path, **env: str) -> Fleet:
    """A GUI's facade on `ca` with its own certs/, audit trail and ledger under `base` (the ledger is
    fed by the CA's real journal, so it knows every certificate that CA signed)."""
    own = {
        "PKI_DATA_DIR": str(base / "data"),
        "PKI_CERTS_DIR": str(base / "certs"),
        "PKI_AUDIT_LOG": str(base / "audit.log"),
        "PKI_LEDGER_DIR": str(base / "ledger"),
        "PKI_STEPPATH": str(base / "gui-step"),
    }
    return Fleet(ca.settings(**(own | env)))


def module_env(ca: RunningCA, base: Path, **extra: str) -> dict[str, str]:
    """The environment for `python -m pki.<module>` run as the GUI would on `ca`, its files under `base`."""
    return {
        "PATH": f"{TOOLS}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO / "streamlit"),
        "PKI_DATA_DIR": str(base / "data"),
        "STEP_CA_URL": ca.url,
        "PKI_GUI_DIR": str(ca.gui_dir),
        "PKI_CERTS_DIR": str(base / "certs"),
        "PKI_CA_LOG": str(ca.journal),
        "PKI_LEDGER_DIR": str(base / "ledger"),
        "PKI_STEPPATH": str(base / "gui-step"),
        "PKI_STEP_BIN": str(TOOLS / "step"),
        **extra,
    }


class GuiProcess:
    """The GUI as make run and the container start it (`python -m pki.serve`), on a free loopback port."""

    def __init__(self, ca: RunningCA, base: Path, *, wait: bool = True, **env: str) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = base / "gui.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("STEP", "PKI_"))}
        self.env.update(
            PYTHONPATH=str(REPO / "streamlit"),
            STEP_CA_URL=ca.url,
            STEP_CA_ROOT=str(ca.gui_dir / "root_ca.crt"),
            PKI_GUI_DIR=str(ca.gui_dir),
            PKI_CERTS_DIR=str(base / "certs"),
            PKI_DATA_DIR=str(base / "data"),
            PKI_STEPPATH=str(base / "gui-step"),
            PKI_STEP_BIN=str(TOOLS / "step"),
            PKI_CA_LOG=str(ca.journal),
            PKI_GUI_PORT=str(self.port),
        )
        self.env.update(env)
        self.port = int(self.env["PKI_GUI_PORT"])
        tls = self.env.get("PKI_TLS", "off") != "off" or "PKI_TLS_CERT_FILE" in self.env
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pki.serve"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            health = subprocess.run(
                [sys.executable, "-m", "pki.serve", "--health"], env=self.env, capture_output=True, timeout=30
            )
            if health.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the GUI did not start:\n{self.log()}")
            time.sleep(0.5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else "(no log)"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def started_ca(base: Path, **init_settings: str) -> RunningCA:
    """A new CA in `base`, set up by scripts/init-ca.sh and started by scripts/start-ca.sh."""
    for tool in ("step", "step-ca"):
        if not (TOOLS / tool).exists():
            pytest.fail(f"{TOOLS / tool} is missing: run `make test` (it runs scripts/install-step.sh first).")
    if shutil.which("jq", path=f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}") is None:
        pytest.fail("jq is missing: run scripts/install-step.sh.")
    ca = RunningCA(base)
    done = ca.run_init(**init_settings)
    if done.returncode != 0:
        pytest.fail(f"scripts/init-ca.sh failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    ca.start()
    return ca


@pytest.fixture(scope="session")
def running_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    ca = started_ca(tmp_path_factory.mktemp("pki"))
    yield ca
    ca.stop()


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    """A second, unrelated CA made the same way: the 'wrong CA' of refusal tests."""
    ca = started_ca(tmp_path_factory.mktemp("other-pki"), PKI_CA_NAME="Other CA")
    yield ca
    ca.stop()


@pytest.fixture
def ca(running_ca: RunningCA) -> Iterator[RunningCA]:
    """The session's CA, started again if a test left it stopped."""
    if running_ca.process is None or running_ca.process.poll() is not None:
        running_ca.start()
    yield running_ca


@pytest.fixture
def step_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every step command the app starts (recorded, then really run)."""
    calls: list[list[str]] = []
    real_run = subprocess.run

    def recording_run(argv, *args, **kwargs):
        calls.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(pki.step.subprocess, "run", recording_run)
    return calls


@pytest.fixture
def step_ca(ca: RunningCA) -> StepCA:
    return StepCA(ca.settings())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    running = item.funcargs.get("running_ca") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(running, RunningCA):
        tail = [line[:400] for line in running.log().splitlines()[-40:]]
        report.sections.append(("step-ca log (last 40 lines, cut at 400 characters)", "\n".join(tail)))
