"""No secret on a command line or in a log: every process's arguments are readable by every local user.

A sampler reads /proc/*/cmdline while the GUI core issues, revokes and mints an enrolment token, and
while enroll-site.sh enrols a site with the very command the GUI shows. It must see the step commands run (so it did
watch them) and never a token (a JWT starts with "eyJ") or a provisioner password.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from pathlib import Path

from conftest import OPERATOR, REPO, RunningCA, gui_fleet, tool_env
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.tokens import token_ref_of


class CommandLines:
    """Every distinct command line on this machine while it runs (a sweep of /proc about every ms)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        raw = Path("/proc", pid, "cmdline").read_bytes()
                    except OSError:
                        continue  # it ended meanwhile
                    if raw:
                        self.seen.add(raw.replace(b"\0", b" ").decode(errors="replace").strip())
            time.sleep(0.0005)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def step_commands(self) -> set[str]:
        return {line for line in self.seen if "/step " in f"/{line}" or line.startswith("step ")}


JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.")


def test_no_token_or_password_ever_appears_on_a_command_line(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path / "gui")
    settings = fleet.settings
    passwords = {settings.password_file(p).read_text().strip() for p in ("iot-devices", "iot-servers")}
    assert all(passwords)

    with CommandLines() as sampled:
        issued = fleet.issue(OPERATOR, IssueRequest("site-secret-1", Kind.CLIENT, "", 30, "EC P-256"))
        fleet.issue(OPERATOR, IssueRequest("mqtt-secret.example", Kind.SERVER, "", 30, "RSA 2048"))
        fleet.revoke(OPERATOR, "site-secret-1", reason_code=4, confirmation="site-secret-1")
        fleet.revoke(OPERATOR, "mqtt-secret.example", reason_code=4, confirmation="mqtt-secret.example")
        enrollment = fleet.enroll(OPERATOR, "site-secret-2", hours=1, broker="127.0.0.1:8883")
        # The command the GUI shows, run as it is (the script from the repository, into a prefix).
        script = f"bash {REPO / 'scripts' / 'enroll-site.sh'} --prefix {tmp_path / 'site'} --schedule none"
        command = enrollment.command().replace("sudo bash enroll-site.sh", script)
        # Pasted into a shell: bash reads it as input, as a terminal would give it.
        enrolled = subprocess.run(
            ["bash"], input=command + "\n", capture_output=True, text=True, timeout=120, env=tool_env()
        )
    assert enrolled.returncode == 0, enrolled.stderr
    assert (tmp_path / "site" / "etc/mosquitto/certs/site-secret-2.crt").exists()
    assert issued.record.serial in fleet.ca.crl_info().revoked

    commands = sampled.step_commands()
    # Signing and enrolment tokens need no step process any more (pki.minter); revoking and the site do.
    for watched in ("ca token", "ca revoke", "ca certificate site-secret-2"):
        assert any(watched in line for line in commands), f"never saw `step {watched}`: {sorted(commands)}"
    leaks = [line for line in sampled.seen if "eyJ" in line or any(p in line for p in passwords)]
    assert leaks == []
    assert not [line for line in sampled.seen if enrollment.token[-40:] in line]


def test_the_cas_log_and_journal_keep_no_token(ca: RunningCA, tmp_path: Path) -> None:
    fleet = gui_fleet(ca, tmp_path)
    fleet.issue(OPERATOR, IssueRequest("site-secret-3", Kind.CLIENT, "", 30, "EC P-256"))
    fleet.revoke(OPERATOR, "site-secret-3", reason_code=4, confirmation="site-secret-3")
    cancelled = fleet.enroll(OPERATOR, "site-secret-4", hours=1, broker="127.0.0.1:8883")
    fleet.cancel_token(OPERATOR, token_ref_of(cancelled.token))  # spent at the CA: its request is logged
    spent = f'"ott-claims":"{cancelled.token.rsplit(".", 1)[0]}"'  # spent, kept without its signature
    for _ in range(50):  # the CA writes its line as it answers
        if spent in ca.journal.read_text():
            break
        time.sleep(0.1)
    journal, log = ca.journal.read_text(), ca.log()
    assert spent in journal and spent in log
    assert '"path":"/revoke"' in log and '"certificate":' in journal  # the requests were logged...
    # ...without their one-time tokens (a JWT's header and payload; "eyJ" alone also turns up in base64 DER)
    assert not JWT.search(log) and not JWT.search(journal)
