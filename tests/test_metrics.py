"""Prometheus metrics from the alerts runner: `promtool check metrics` passes, and a real Prometheus
(Debian's) started by the test scrapes them on loopback and answers queries with the fleet's figures.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from conftest import OPERATOR, RunningCA, free_port, gui_fleet, module_env, started_ca
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.step import run_step


@pytest.fixture(scope="module")
def metrics_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCA]:
    ca = started_ca(tmp_path_factory.mktemp("metrics-pki"))
    yield ca
    ca.stop()


def fetch(url: str, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (loopback)
                return answer.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_metrics_scraped_by_prometheus(metrics_ca: RunningCA, tmp_path: Path) -> None:
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install prometheus (scripts/test-packages.sh installs it)")
    fleet = gui_fleet(metrics_ca, tmp_path)
    site_1 = fleet.issue(OPERATOR, IssueRequest("metrics-site-1", Kind.CLIENT, "", 90, "EC P-256")).record
    fleet.issue(OPERATOR, IssueRequest("metrics-site-2", Kind.CLIENT, "", 90, "EC P-256"))
    fleet.revoke(OPERATOR, "metrics-site-2", reason_code=1, confirmation="metrics-site-2")
    fleet.issue(OPERATOR, IssueRequest("metrics-broker.example.test", Kind.SERVER, "", 60, "EC P-256"))
    s = fleet.settings  # a site that never renews: a 20-second certificate, past 75 % of its life
    run_step(
        ["ca", "certificate", "metrics-site-stuck", str(tmp_path / "stuck.crt"), str(tmp_path / "stuck.key"),
         "--provisioner", s.client_provisioner, "--provisioner-password-file",
         str(s.password_file(s.client_provisioner)), "--not-after", "20s", "--ca-url", s.ca_url, "--root",
         str(s.root)],
        step_path=s.step_path, timeout=20, step_bin=s.step_bin,
    )  # fmt: skip

    port = free_port()
    env = module_env(metrics_ca, tmp_path, PKI_METRICS_PORT=str(port))
    runner = subprocess.Popen(
        [sys.executable, "-m", "pki.alerts", "run", "--every", "3600"], env=env, stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alerts.log").open("wb"),
    )  # fmt: skip
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: app-pki\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )  # fmt: skip
    try:
        leaf = x509.load_pem_x509_certificates((tmp_path / "stuck.crt").read_bytes())[0]
        life = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).total_seconds()
        while time.time() < leaf.not_valid_before_utc.timestamp() + 0.76 * life:  # the stuck site is 75 % old
            time.sleep(0.5)
        metrics_ca.wait_in_journal(leaf.serial_number)
        text = fetch(f"http://127.0.0.1:{port}/metrics").decode()
        checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert 'app_pki_site_renewal_overdue{site="metrics-site-stuck"} 1' in text

        def query(expression: str) -> list[dict[str, object]]:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
            return json.loads(fetch(url))["data"]["result"]  # type: ignore[no-any-return]

        deadline = time.monotonic() + 60
        while not query("app_pki_ca_up") and time.monotonic() < deadline:
            time.sleep(1)  # the first scrapes
        assert query("app_pki_ca_up")[0]["value"][1] == "1"  # type: ignore[index]
        assert query('app_pki_certificates{status="revoked",kind="client"}')[0]["value"][1] == "1"  # type: ignore[index]
        assert query('app_pki_certificates{status="active",kind="server"}')[0]["value"][1] == "1"  # type: ignore[index]
        overdue = query("app_pki_renewal_overdue_sites")
        assert overdue[0]["value"][1] == "1"  # type: ignore[index]
        expiry = query('app_pki_site_expiry_timestamp_seconds{site="metrics-site-1"}')
        assert float(expiry[0]["value"][1]) == site_1.not_after.timestamp()  # type: ignore[index]
        assert query("app_pki_crl_next_update_timestamp_seconds > time()")  # a CRL still current
    finally:
        for process in (runner, prometheus):
            process.terminate()
            process.wait(timeout=30)
    assert runner.returncode == 0  # SIGTERM ends the runner cleanly
