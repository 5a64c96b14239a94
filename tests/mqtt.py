"""Real MQTT peers on loopback for the fleet tests: Mosquitto brokers and bridges, HAProxy, clients.

Each Mosquitto runs under a small supervisor loop (as systemd's Restart=always would), so that
"restart the broker" is `kill $(cat pid_file)`, the same command scripts use in production.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

from conftest import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def require_tools() -> None:
    for tool in (MOSQUITTO, HAPROXY, "mosquitto_pub", "mosquitto_sub", "curl", "openssl"):
        if not (Path(tool).exists() or shutil.which(tool)):
            raise RuntimeError(f"{tool} is missing: apt-get install mosquitto mosquitto-clients haproxy curl openssl")


def wait_for_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.1)


def as_root_lines() -> str:
    # Mosquitto started as root drops to the mosquitto user, which cannot read 0600 keys owned by root.
    return "user root\n" if os.geteuid() == 0 else ""


class Mosquitto:
    """A supervised mosquitto; `restart()` kills it and the loop starts it again."""

    def __init__(self, base: Path, name: str, config: str, port: int, *, keep_root: bool = True) -> None:
        """`keep_root=False`: started as root it drops to the mosquitto user, as Debian's package runs it
        (then it writes its pid file as that user, into `pid_file_of(base, name)`'s folder)."""
        self.base = base
        self.port = port
        self.pid_file = self.pid_file_of(base, name)
        self.pid_file.parent.mkdir(exist_ok=True)
        if not keep_root:
            shutil.chown(self.pid_file.parent, "mosquitto")
        self.log = base / f"{name}.log"
        self.config = base / f"{name}.conf"
        user = as_root_lines() if keep_root else ""
        self.config.write_text(f"pid_file {self.pid_file}\n{user}log_type all\n{config}")
        self.supervisor = subprocess.Popen(
            ["bash", "-c", f'while true; do "{MOSQUITTO}" -c "{self.config}" >>"{self.log}" 2>&1; sleep 0.3; done'],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port(port)
        except TimeoutError:
            self.stop()
            raise TimeoutError(f"mosquitto {name} did not start:\n{self.log_text()[-3000:]}") from None

    @staticmethod
    def pid_file_of(base: Path, name: str) -> Path:
        return base / f"run-{name}" / f"{name}.pid"

    @property
    def restart_command(self) -> str:
        """Kill it and return once the supervisor's new mosquitto listens (like `systemctl restart`)."""
        return self.restart_command_for(self.pid_file, self.port)

    @staticmethod
    def restart_command_for(pid_file: Path, port: int) -> str:
        script = (
            f'old=$(cat "{pid_file}"); kill "$old"; for _ in $(seq 200); do '
            f'new=$(cat "{pid_file}" 2>/dev/null || true); '
            f'if [ -n "$new" ] && [ "$new" != "$old" ] && (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; '
            "then exit 0; fi; sleep 0.1; done; exit 1"
        )
        return f"bash -c {shlex.quote(script)}"

    def restart(self) -> None:
        subprocess.run(["sh", "-c", self.restart_command], check=True, timeout=30)

    def current_pid(self) -> str:
        """The running mosquitto's pid, or '' between a stop and the supervisor's restart."""
        try:
            return self.pid_file.read_text().strip()
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        os.killpg(self.supervisor.pid, 15)
        self.supervisor.wait(timeout=10)


class HAProxy:
    """HAProxy in TCP passthrough (no TLS termination), as in front of the real broker."""

    def __init__(self, base: Path, backend_port: int) -> None:
        self.port = free_port()
        config = base / "haproxy.cfg"
        config.write_text(
            f"""\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 5m
    timeout server 5m
frontend mqtt_tls
    bind 127.0.0.1:{self.port}
    default_backend broker
backend broker
    server broker 127.0.0.1:{backend_port}
"""
        )
        self.process = subprocess.Popen(
            [HAPROXY, "-f", str(config), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=(base / "haproxy.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class Subscriber:
    """mosquitto_sub on the broker with a client certificate, collecting 'topic payload' lines."""

    def __init__(self, base: Path, port: int, cafile: Path, cert: Path, key: Path, topic: str) -> None:
        argv = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "--cafile", str(cafile), "--cert", str(cert),
                "--key", str(key), "-t", topic, "-v", "-q", "1", "-i", "monitor"]  # fmt: skip
        self._start(argv, base / f"sub-{free_port()}.txt", None)

    @classmethod
    def of(cls, argv: list[str], *, cwd: Path, out: Path) -> Subscriber:
        """A subscriber running exactly `argv` (a command as documented) in `cwd`."""
        subscriber = cls.__new__(cls)
        subscriber._start(argv, out, cwd)
        return subscriber

    def _start(self, argv: list[str], out: Path, cwd: Path | None) -> None:
        self.out = out
        self._mark = 0
        self.process = subprocess.Popen(
            argv, cwd=cwd, stdout=self.out.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        time.sleep(0.5)

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines()

    def mark(self) -> None:
        """From now on, `since_mark()` and `wait_for(fresh=True)` see only what arrives after this."""
        self._mark = len(self.lines())

    def since_mark(self) -> list[str]:
        return self.lines()[self._mark :]

    def wait_for(self, line: str, timeout: float = 20, publish: object = None, *, fresh: bool = False) -> bool:
        """True once `line` arrived (after the mark, if `fresh`); `publish()` (if given) is called every
        half second until then."""
        if fresh:
            self.mark()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in self.since_mark():
                return True
            if callable(publish):
                publish()
            time.sleep(0.5)
        return line in self.since_mark()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def publish(port: int, topic: str, message: str, *tls: str) -> subprocess.CompletedProcess[str]:
    """mosquitto_pub once; `tls` are extra arguments (--cafile, --cert, --key ...)."""
    return subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", message, "-q", "1", *tls],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
