"""Prometheus metrics of the fleet, in the text exposition format, served by the alerts runner on its own
port (`python -m pki.alerts run --every N --metrics-port 9464`).

Names follow Prometheus' conventions: the `app_pki_` prefix, base units, `_timestamp_seconds` for points in
time. Made afresh at each scrape (a scrape costs one read of the inventory and the CA's state, which the
facade keeps for a few seconds).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pki.fleet import Fleet
from pki.model import Kind, Status
from pki.report import overdue_renewals


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _family(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        number = f"{value:.17g}"  # every digit: a timestamp in %g would be off by up to an hour
        lines.append(f"{name}{{{inner}}} {number}" if inner else f"{name} {number}")
    return lines


def render(fleet: Fleet, alert_state: Mapping[str, Any], broker_check: Mapping[str, Any] | None = None) -> str:
    """The metrics now."""
    up = 0.0 if fleet.ca_problem() else 1.0
    table = fleet.table()
    now = table.now
    counts: Counter[tuple[str, str]] = Counter()
    for status in Status:
        for kind in (Kind.CLIENT, Kind.SERVER):
            counts[(status.value, kind.value)] = 0
    earliest: dict[str, dt.datetime] = {}
    for row in table.rows:
        counts[(row.status.value, row.record.kind.value)] += 1
        if row.record.kind is Kind.CLIENT and row.valid and not row.superseded:
            earliest[row.identity] = min(earliest.get(row.identity, row.record.not_after), row.record.not_after)
    overdue = sorted({row.identity for row in overdue_renewals(table.rows, now)})
    lines: list[str] = []
    lines += _family("app_pki_ca_up", "gauge", "1 when the CA answers its health check.", [({}, up)])
    lines += _family(
        "app_pki_certificates", "gauge", "Certificates of the fleet by status (as the CA's CRL says) and kind.",
        [({"status": s, "kind": k}, float(n)) for (s, k), n in sorted(counts.items())],
    )  # fmt: skip
    lines += _family(
        "app_pki_site_expiry_timestamp_seconds", "gauge",
        "When the site's earliest valid, not superseded certificate expires.",
        [({"site": site}, when.timestamp()) for site, when in sorted(earliest.items())],
    )  # fmt: skip
    lines += _family(
        "app_pki_site_renewal_overdue", "gauge",
        "1 for a site past 75 % of its certificate's life with no newer certificate (its renewal fails).",
        [({"site": site}, 1.0) for site in overdue],
    )  # fmt: skip
    lines += _family(
        "app_pki_renewal_overdue_sites", "gauge", "How many sites have not renewed in time.",
        [({}, float(len(overdue)))],
    )  # fmt: skip
    info = table.crl.info
    if info is not None and info.next_update is not None:
        lines += _family(
            "app_pki_crl_next_update_timestamp_seconds", "gauge", "When the CA's current CRL must be replaced.",
            [({}, info.next_update.timestamp())],
        )  # fmt: skip
    last = alert_state.get("last_run")
    if last:
        when = dt.datetime.fromisoformat(str(last["time"])).timestamp()
        lines += _family("app_pki_alert_last_run_timestamp_seconds", "gauge", "When the alerts last looked.",
                         [({}, when)])  # fmt: skip
        lines += _family(
            "app_pki_alert_last_run_failed_channels", "gauge", "Channels whose sending failed in the last run.",
            [({}, float(len(last.get("failed", {}))))],
        )  # fmt: skip
    if broker_check:
        when = dt.datetime.fromisoformat(str(broker_check["time"])).timestamp()
        lines += _family("app_pki_broker_check_timestamp_seconds", "gauge", "When the broker check last ran.",
                         [({"broker": str(broker_check["broker"])}, when)])  # fmt: skip
        lines += _family(
            "app_pki_broker_check_passed", "gauge", "1 when the check passed in the last broker check, else 0.",
            [({"broker": str(broker_check["broker"]), "check": f"{r['number']} {r['name']}"},
              1.0 if r["outcome"] == "PASS" else 0.0) for r in broker_check["results"]],
        )  # fmt: skip
    return "\n".join(lines) + "\n"


def serve(address: str, port: int, make: Callable[[], str]) -> ThreadingHTTPServer:
    """GET /metrics on address:port in a daemon thread; returns the server (shutdown() stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            try:
                body = make().encode()
            except Exception as exc:  # a scrape that fails says so; Prometheus marks the target down
                self.send_error(500, explain=type(exc).__name__)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
