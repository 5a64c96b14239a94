"""Start the GUI: Streamlit with this project's flags, its secrets file (single sign-on) and, when asked,
HTTPS. `make run` and the container both start the GUI through here (`python -m pki.serve`).

HTTPS (PKI_TLS):
- `off` (the default; make run on 127.0.0.1): plain HTTP.
- `ca`: a certificate from our own CA for PKI_TLS_HOSTS (default PKI_PUBLIC_HOSTS), issued at start-up
  and re-issued once two thirds of its life have passed (pki.https); Streamlit is then restarted with it.
- PKI_TLS_CERT_FILE and PKI_TLS_KEY_FILE: the operator's own certificate (chain) and key.
Streamlit serves TLS itself (server.sslCertFile): no second process, and the client address the login
throttle keys on stays the real peer's. Its price: a renewal restarts the GUI, which logs everyone out.

`python -m pki.serve --health` is the container's health check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from pki.fleet import Fleet
from pki.https import REPLACE_HINT, GuiCertificate, Served
from pki.issuing import ActiveCertificateExists
from pki.settings import Settings, SettingsError, data_dir, load_settings, tls_hosts
from pki.sso import sso_config, write_secrets
from pki.step import StepError
from pki.validate import InvalidInput

APP = Path(__file__).resolve().parents[1] / "app.py"
RETRY_SECONDS = 5.0


def log(message: str) -> None:
    print(f"pki.serve: {message}", file=sys.stderr, flush=True)


def streamlit_command(env: Mapping[str, str], secrets: Path, served: Served | None) -> list[str]:
    hosts = tls_hosts(env)
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", env.get("PKI_GUI_PORT", "8502"),
        "--server.address", env.get("PKI_GUI_ADDRESS", "127.0.0.1"),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        # A name to print at start-up: without it, headless Streamlit asks a public web service for the
        # host's external address (a PKI host contacts nobody but its CA).
        "--browser.serverAddress", hosts[0] if hosts else "localhost",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--client.showErrorDetails", "none",
        "--secrets.files", str(secrets),
    ]  # fmt: skip
    if served is not None:
        command += ["--server.sslCertFile", str(served.cert), "--server.sslKeyFile", str(served.key)]
    return command


class Supervisor:
    """Runs Streamlit, restarts it with a renewed certificate, and stops it on SIGTERM or SIGINT."""

    def __init__(self, env: dict[str, str], secrets: Path, certificate: GuiCertificate | None) -> None:
        self.env = env
        self.secrets = secrets
        self.certificate = certificate
        self.check_seconds = float(env.get("PKI_TLS_CHECK_SECONDS") or 3600)
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.woken = threading.Event()
        """Set by SIGTERM: a wait for the CA ends at once."""
        self.last_problem = ""

    def stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        self.woken.set()
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()

    def _say_once(self, problem: str) -> None:
        if problem != self.last_problem:  # said once, not every few seconds
            log(problem)
            self.last_problem = problem

    def _certificate_now(self, certificate: GuiCertificate) -> Served | None:
        try:
            return certificate.ensure()
        except ActiveCertificateExists as exc:
            problem = f"{exc} {REPLACE_HINT}"
        except (InvalidInput, StepError, OSError, SettingsError) as exc:
            problem = str(exc)
        except Exception as exc:  # the CA half-answered: try again later, never stop serving
            problem = f"({type(exc).__name__}) {exc}"
        self._say_once(f"the HTTPS certificate cannot be issued or renewed now: {problem}")
        return None

    def _retire_stale(self, certificate: GuiCertificate) -> None:
        """Revoke what earlier renewals replaced, once every GUI sharing certs/ has had a look."""
        try:
            stale = certificate.stale(dt.timedelta(seconds=2 * self.check_seconds))
            if stale:
                certificate.retire(stale)
                log(f"revoked the replaced HTTPS certificate(s) {', '.join(f'{s:X}' for s in stale)}.")
        except Exception as exc:  # tried again at the next look
            self._say_once(f"a replaced HTTPS certificate could not be revoked yet: {exc}")

    def _start(self, served: Served | None) -> subprocess.Popen[bytes] | None:
        if self.stopping:  # a SIGTERM during a renewal: start nothing new
            return None
        child_env = dict(self.env)
        # No client names its own address: X-Forwarded-For is read only from PKI_TRUSTED_PROXIES (views/common).
        child_env["FORWARDED_ALLOW_IPS"] = ""
        self.child = subprocess.Popen(streamlit_command(self.env, self.secrets, served), env=child_env)
        return self.child

    def _wait(self, child: subprocess.Popen[bytes]) -> int | None:
        """The child's exit code, or None after one look's time; returns at once on SIGTERM."""
        deadline = time.monotonic() + self.check_seconds
        while not self.stopping and time.monotonic() < deadline:
            try:
                return child.wait(timeout=1)
            except subprocess.TimeoutExpired:
                continue
        return child.poll()

    def _stop_child(self) -> None:
        """Streamlit gets 8 s to stop, then SIGKILL: within the 10 s docker compose stop allows us."""
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(timeout=8)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()

    def run(self, served: Served | None) -> int:
        certificate = self.certificate
        served = self._first_certificate(certificate) if certificate is not None else served
        child = self._start(served)
        while child is not None:
            code = self._wait(child)
            if self.stopping:
                break
            if code is not None:
                log(f"Streamlit stopped with exit code {code}.")
                return code or 1
            if certificate is None:
                continue
            found = self._certificate_now(certificate)
            if found is not None and served is not None and found.serial != served.serial:
                served = found
                log(f"serving the renewed HTTPS certificate {served.serial:X}: restarting the GUI.")
                self._stop_child()
                child = self._start(served)
            self._retire_stale(certificate)
        self._stop_child()
        return 0

    def _first_certificate(self, certificate: GuiCertificate) -> Served | None:
        """Wait for the CA to give the GUI its certificate (it may still be starting)."""
        while not self.stopping:
            found = self._certificate_now(certificate)
            if found is not None:
                log(f"HTTPS with certificate {found.serial:X} for {', '.join(certificate.hosts)}.")
                return found
            self.woken.wait(RETRY_SECONDS)
        return None


def preflight(settings: Settings) -> str | None:
    """Why the GUI must not start here, or None: it cannot file certificates, or it can see CA secrets."""
    certs = settings.certs_dir
    try:
        certs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=certs, prefix=".write-test-"):
            pass
    except OSError as exc:
        return (
            f"{certs} is not writable by this process (uid {os.getuid()}): {exc.strerror or exc}. Give it to this "
            f"user, e.g. `sudo chown {os.getuid()}:{os.getgid()} certs` next to docker-compose.yml."
        )
    for mount in (settings.gui_dir, settings.ca_log.parent):
        seen = [p for p in (*mount.glob("*"), *mount.glob("*/*_key")) if p.name in ("secrets", "config") or
                p.name.endswith("_key")]  # fmt: skip
        if seen:
            return (
                f"the GUI can see the CA's secrets ({', '.join(str(p) for p in seen[:3])}): it must see only what "
                "init-ca.sh exports. Docker Engine older than 26 ignores `volume.subpath` and mounts the whole CA "
                "volume: upgrade Docker Engine to 26 or newer."
            )
    return None


def health(env: Mapping[str, str]) -> int:
    """0 when the GUI answers its health endpoint (over HTTPS when it serves it)."""
    port = env.get("PKI_GUI_PORT", "8502")
    tls = env.get("PKI_TLS", "off") != "off" or bool(env.get("PKI_TLS_CERT_FILE"))
    context = None
    if tls:
        # The chain is checked in full; the name is not (127.0.0.1 is not one of the public names).
        context = ssl.create_default_context(cafile=env.get("PKI_TLS_HEALTH_ROOT") or env.get("STEP_CA_ROOT"))
        context.check_hostname = False
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/_stcore/health"
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as answer:  # noqa: S310 (loopback)
            return 0 if answer.read() == b"ok" else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pki.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--health", action="store_true", help="check that the GUI answers, and exit")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.health:
        return health(env)
    try:
        secrets = write_secrets(sso_config(env), data_dir(env))
    except (InvalidInput, OSError) as exc:
        log(f"cannot start: {exc}")
        return 2

    try:
        problem = preflight(load_settings(env))
    except SettingsError:
        problem = None  # the CA was never set up: the pages say so
    if problem:
        log(f"cannot start: {problem}")
        return 2

    own_cert, own_key = env.get("PKI_TLS_CERT_FILE", ""), env.get("PKI_TLS_KEY_FILE", "")
    mode = env.get("PKI_TLS", "off")
    served, certificate = None, None
    if bool(own_cert) != bool(own_key):
        log("cannot start: set both PKI_TLS_CERT_FILE and PKI_TLS_KEY_FILE, or neither.")
        return 2
    if own_cert:
        served = Served(Path(own_cert), Path(own_key), None)
    elif mode == "ca":
        hosts = tls_hosts(env)
        if not hosts:
            log("cannot start: PKI_TLS=ca needs the GUI's host names in PKI_TLS_HOSTS or PKI_PUBLIC_HOSTS.")
            return 2
        try:
            fleet = Fleet(load_settings(env))
        except SettingsError as exc:
            log(f"cannot start: {exc}")
            return 2
        days = int(env.get("PKI_TLS_DAYS") or 90)
        renew_after = float(env.get("PKI_TLS_RENEW_AFTER") or 2 / 3)
        certificate = GuiCertificate(fleet, hosts, data_dir(env) / "tls", days, renew_after)
    elif mode != "off":
        log(f"cannot start: PKI_TLS is '{mode}'; it may be 'off' or 'ca' (or give PKI_TLS_CERT_FILE/KEY_FILE).")
        return 2

    supervisor = Supervisor(env, secrets, certificate)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run(served)


if __name__ == "__main__":
    sys.exit(main())
