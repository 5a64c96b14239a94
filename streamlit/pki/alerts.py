"""Alerts: what an operator must hear about before a site drops off, sent by e-mail and to a webhook.

`python -m pki.alerts run` looks once (cron, make run); `--every SECONDS` keeps looking (the compose
service). Each look finds the events below, sends the new ones as one digest per channel, and remembers
per channel what was sent, in a state file in the GUI's data folder held under a flock for the whole
run (replicas never send twice). A channel that fails gets the same events again next run.

Events (each with the CN, serial, kind, days left and what to do):
- expiry:    a certificate crossed a threshold (sites 30/14/7/1 days, brokers 60/30/14/7/1)
- renewal:   a site's certificate is past 75 % of its life and the CA signed no newer one for the site:
             its renewal timer is failing (sites renew themselves at two thirds)
- crl:       the CRL's next update is near and no newer CRL exists
- ca-down:   the CA has been unreachable longer than PKI_ALERT_CA_DOWN_MINUTES
- reconcile: a disagreement the Reconcile page lists
- lockout:   an address or account locked out after failed logins
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import smtplib
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from pki.broker_check import BrokerCheck
from pki.fleet import Fleet
from pki.metrics import render as render_metrics
from pki.metrics import serve as serve_metrics
from pki.model import Kind
from pki.report import RENEWAL_OVERDUE, overdue_renewals
from pki.settings import SettingsError, data_dir, load_settings

SITE_DAYS = (30, 14, 7, 1)
BROKER_DAYS = (60, 30, 14, 7, 1)


@dataclass(frozen=True)
class Event:
    key: str
    """What makes it the same event on the next run (it is then not sent again)."""
    kind: str
    subject: str
    detail: str
    todo: str
    cn: str = ""
    serial: str = ""
    days_left: int | None = None

    def line(self) -> str:
        return f"[{self.kind}] {self.subject}: {self.detail} What to do: {self.todo}"


@dataclass(frozen=True)
class AlertConfig:
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    """starttls, tls or none."""
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_cafile: str = ""
    mail_from: str = ""
    mail_to: tuple[str, ...] = ()
    webhook_url: str = ""
    ca_down_minutes: float = 15
    crl_hours: float = 24
    renewal_overdue: float = RENEWAL_OVERDUE
    """The share of a site's lifetime after which no newer certificate means its renewal fails."""
    site_days: tuple[int, ...] = SITE_DAYS
    broker_days: tuple[int, ...] = BROKER_DAYS

    @property
    def channels(self) -> list[str]:
        return [name for name, on in (("email", self.smtp_host), ("webhook", self.webhook_url)) if on]


def _secret(env: Mapping[str, str], name: str) -> str:
    """NAME_FILE's content (the way secrets are given), else NAME."""
    path = env.get(f"{name}_FILE", "").strip()
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return env.get(name, "").strip()


def _days(raw: str, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted({int(v) for v in raw.split(",") if v.strip()}, reverse=True)) if raw.strip() else default


def alert_config(env: Mapping[str, str]) -> AlertConfig:
    """The alert settings; ValueError naming the setting (never its secret value) when one is wrong."""
    config = AlertConfig(
        smtp_host=env.get("PKI_ALERT_SMTP_HOST", "").strip(),
        smtp_port=int(env.get("PKI_ALERT_SMTP_PORT") or 587),
        smtp_security=(env.get("PKI_ALERT_SMTP_SECURITY") or "starttls").strip().lower(),
        smtp_user=env.get("PKI_ALERT_SMTP_USER", "").strip(),
        smtp_password=_secret(env, "PKI_ALERT_SMTP_PASSWORD"),
        smtp_cafile=env.get("PKI_ALERT_SMTP_CAFILE", "").strip(),
        mail_from=env.get("PKI_ALERT_MAIL_FROM", "").strip(),
        mail_to=tuple(a.strip() for a in env.get("PKI_ALERT_MAIL_TO", "").split(",") if a.strip()),
        webhook_url=_secret(env, "PKI_ALERT_WEBHOOK_URL"),
        ca_down_minutes=float(env.get("PKI_ALERT_CA_DOWN_MINUTES") or 15),
        crl_hours=float(env.get("PKI_ALERT_CRL_HOURS") or 24),
        renewal_overdue=float(env.get("PKI_ALERT_RENEWAL_OVERDUE_PERCENT") or RENEWAL_OVERDUE * 100) / 100,
        site_days=_days(env.get("PKI_ALERT_SITE_DAYS", ""), SITE_DAYS),
        broker_days=_days(env.get("PKI_ALERT_BROKER_DAYS", ""), BROKER_DAYS),
    )
    if config.smtp_security not in ("starttls", "tls", "none"):
        raise ValueError("PKI_ALERT_SMTP_SECURITY must be starttls, tls or none.")
    if config.webhook_url:
        url = urllib.parse.urlsplit(config.webhook_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("the webhook URL (PKI_ALERT_WEBHOOK_URL_FILE) must be an http:// or https:// address.")
    return config


# -- finding events ---------------------------------------------------------------------------------------


def find_events(
    fleet: Fleet, config: AlertConfig, ca_down_since: float | None, lockouts: Collection[str]
) -> list[Event]:
    """Every alert condition true now (sending decides what is new)."""
    events: list[Event] = []
    now_ts = time.time()
    if ca_down_since is not None and now_ts - ca_down_since >= config.ca_down_minutes * 60:
        since = dt.datetime.fromtimestamp(ca_down_since, dt.UTC)
        events.append(Event(
            f"ca-down:{int(ca_down_since)}", "ca-down", "The CA is unreachable",
            f"since {since:%Y-%m-%d %H:%M} UTC ({fleet.ca_problem() or 'no answer'}).",
            "check step-ca (docker compose ps; docker compose logs step-ca): sites cannot renew meanwhile.",
        ))  # fmt: skip
    table = fleet.table()
    now = table.now
    for row in table.rows:
        record = row.record
        if not row.valid or row.superseded or record.kind not in (Kind.CLIENT, Kind.SERVER):
            continue
        days = record.days_left(now)
        thresholds = config.site_days if record.kind is Kind.CLIENT else config.broker_days
        crossed = [t for t in thresholds if days < t]
        if crossed:
            threshold = min(crossed)
            what = "site" if record.kind is Kind.CLIENT else "broker"
            todo = (
                "check that the site's renewal timer runs (systemctl list-timers app-pki-renew; enroll-site.sh set it)"
                if record.kind is Kind.CLIENT
                else "re-issue it on View Certificates and install it on the broker"
            )
            events.append(Event(
                f"expiry:{record.serial_hex}:{threshold}", "expiry",
                f"{what} {record.cn} expires in {max(days, 0)} day(s)",
                f"serial {record.serial_hex} is valid until {record.not_after:%Y-%m-%d %H:%M} UTC.", todo,
                record.cn, record.serial_hex, max(days, 0),
            ))  # fmt: skip
    for row in overdue_renewals(table.rows, now, config.renewal_overdue):
        record = row.record
        due = record.not_before + (record.not_after - record.not_before) * config.renewal_overdue
        events.append(Event(
            f"renewal:{record.serial_hex}", "renewal", f"site {record.cn} has not renewed",
            f"serial {record.serial_hex} passed {config.renewal_overdue:.0%} of its life on {due:%Y-%m-%d} and the "
            f"CA signed no newer certificate for {record.cn}; it expires on {record.not_after:%Y-%m-%d}.",
            "on the site: systemctl status app-pki-renew.timer and journalctl -u app-pki-renew; the CA must be "
            "reachable from it.",
            record.cn, record.serial_hex, max(record.days_left(now), 0),
        ))  # fmt: skip
    crl = table.crl.info
    if crl is not None and crl.next_update is not None:  # the kept copy when the CA is down
        left = crl.next_update - now
        if left <= dt.timedelta(hours=config.crl_hours):
            events.append(Event(
                f"crl:{crl.next_update:%Y%m%dT%H%M%S}", "crl", "The CRL runs out soon",
                f"its next update is {crl.next_update:%Y-%m-%d %H:%M} UTC and the CA has made no newer one.",
                "check that step-ca is running and regenerates its CRL (crl.enabled in ca.json); brokers refuse "
                "every site once their CRL has expired.",
            ))  # fmt: skip
    with contextlib.suppress(Exception):  # Reconcile needs the CA; its absence is reported above
        for found in fleet.reconcile(table):
            name = found.folder or found.serial_hex
            events.append(Event(
                f"reconcile:{found.problem}:{name}", "reconcile", f"Reconcile: {found.problem} {name}",
                found.detail, "open the Reconcile page and take the action it offers.", serial=found.serial_hex,
            ))  # fmt: skip
    for what in lockouts:
        events.append(Event(
            f"lockout:{what}", "lockout", "Locked out after failed logins", f"{what} UTC.",
            "if nobody of yours mistyped, someone is guessing passwords: see the Audit page.",
        ))  # fmt: skip
    return events


# -- sending -----------------------------------------------------------------------------------------------


def digest_text(events: Sequence[Event], ca_name: str) -> str:
    lines = [f"app-pki ({ca_name}): {len(events)} new alert(s)", ""]
    lines += [f"- {e.line()}" for e in events]
    return "\n".join(lines)


def send_email(config: AlertConfig, subject: str, text: str) -> None:
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, config.mail_from, ", ".join(config.mail_to)
    message.set_content(text)
    context = ssl.create_default_context(cafile=config.smtp_cafile or None)
    if config.smtp_security == "tls":
        client: smtplib.SMTP = smtplib.SMTP_SSL(config.smtp_host, config.smtp_port, context=context, timeout=30)
    else:
        client = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=30)
    with client:
        if config.smtp_security == "starttls":
            client.starttls(context=context)
        if config.smtp_user:
            client.login(config.smtp_user, config.smtp_password)
        client.send_message(message)


def send_webhook(config: AlertConfig, text: str, events: Sequence[Event]) -> None:
    """JSON with a `text` field (what Slack, Mattermost and Teams incoming webhooks show) and the events."""
    body = json.dumps({"text": text, "events": [asdict(e) for e in events]}).encode()
    request = urllib.request.Request(  # noqa: S310 (the operator's configured URL)
        config.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        if answer.status >= 300:
            raise OSError(f"the webhook answered {answer.status}")


def _why(exc: Exception, config: AlertConfig) -> str:
    """A send's failure, fit for the state file, the page and the log: the webhook's URL holds its secret."""
    text = f"{type(exc).__name__}: {exc}"
    for hidden in (config.webhook_url, urllib.parse.urlsplit(config.webhook_url).path, config.smtp_password):
        if len(hidden) > 1:
            text = text.replace(hidden, "<secret>")
    return text


@dataclass
class RunResult:
    time: str
    found: int
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class Alerts:
    """One look: events found, the new ones sent per channel, remembered in the state file."""

    def __init__(self, fleet: Fleet, config: AlertConfig, state_path: Path) -> None:
        self.fleet = fleet
        self.config = config
        self.state_path = state_path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The state, under an exclusive flock on a lock file held for the whole run (a replica waits, then
        reads what was sent)."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self.state()
        finally:
            os.close(fd)

    def state(self) -> dict[str, Any]:
        """The state as last saved (readers take no lock: every save replaces the file whole). A damaged
        file is kept aside and the state starts anew (alerts may then be sent once more)."""
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
        except FileNotFoundError:
            return {}
        except ValueError:
            self.state_path.replace(self.state_path.with_suffix(f".damaged-{int(time.time())}"))
            return {}

    def _save(self, state: Mapping[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.state_path.parent, prefix=f".{self.state_path.name}-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state, out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.state_path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            raise

    def run(self) -> RunResult:
        with self._locked() as state:
            self.fleet.forget_ca_state()
            now = time.time()
            down_since = (state.get("ca_down_since") or now) if self.fleet.ca_problem() else None
            state["ca_down_since"] = down_since
            events = find_events(self.fleet, self.config, down_since, self._lockouts(now)) + self._broker_failures()
            result = RunResult(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), len(events))
            sent: dict[str, dict[str, str]] = state.setdefault("sent", {})
            current = {e.key for e in events}
            for channel in self.config.channels:
                done = sent.setdefault(channel, {})
                new = [e for e in events if e.key not in done]
                if not new:
                    continue
                try:
                    self._send(channel, new)
                except Exception as exc:  # tried again next run; the page shows it
                    result.failed[channel] = _why(exc, self.config)
                    continue
                for event in new:
                    done[event.key] = result.time
                result.sent[channel] = len(new)
                self._save(state)  # a stop before the next channel does not send this one again
            # Forget what is no longer true after a month: a disagreement that comes back is news again.
            month_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).isoformat(timespec="seconds")
            for done in sent.values():
                for key in [k for k, when in done.items() if k not in current and when < month_ago]:
                    del done[key]
            history = state.setdefault("history", [])
            history.append(asdict(result))
            del history[:-50]
            state["last_run"] = asdict(result)
            self._save(state)
            return result

    def next_look(self, every: float) -> float:
        """Seconds until the next run: sooner when the CA is down and its alert is due before then."""
        since = self.state().get("ca_down_since")
        if not since:
            return every
        due = since + self.config.ca_down_minutes * 60 - time.time()
        return min(every, due + 5) if due > 0 else every

    def _broker_failures(self) -> list[Event]:
        """The failed checks of the last broker check (pki.broker_check keeps it beside this state)."""
        last = BrokerCheck(self.fleet, self.state_path.parent / "broker-check").last()
        if not last:
            return []
        return [
            Event(f"broker-check:{last['time']}:{r['number']}", "broker-check",
                  f"broker check {r['number']} failed at {last['broker']}", f"{r['name']}: {r['detail']}", r["fix"])
            for r in last["results"]  # type: ignore[attr-defined]
            if r["outcome"] == "FAIL"
        ]  # fmt: skip

    def _lockouts(self, now: float) -> list[str]:
        """Lock-outs of the last day from the audit trail (a lock-out lasts a minute; runs are hourly)."""
        found = []
        day_ago = dt.datetime.fromtimestamp(now - 86400, dt.UTC).isoformat(timespec="seconds")
        for entry in self.fleet.audit.entries(limit=20000):
            if entry.get("action") == "login-lockout" and str(entry.get("time", "")) >= day_ago:
                who = ", ".join(map(str, entry.get("locked") or [])) or "(unknown)"
                found.append(f"{who} at {entry['time']}")
        return found

    def _send(self, channel: str, events: Sequence[Event]) -> None:
        text = digest_text(events, self.fleet.settings.ca_name)
        if channel == "email":
            send_email(self.config, f"app-pki: {len(events)} alert(s)", text)
        else:
            send_webhook(self.config, text, events)

    def test(self) -> dict[str, str]:
        """Send a test alert on every channel; what each answered ('ok' or the error)."""
        event = Event("test", "test", "Test alert", "sent from app-pki to check this channel.", "nothing.")
        answers = {}
        for channel in self.config.channels:
            try:
                self._send(channel, [event])
                answers[channel] = "ok"
            except Exception as exc:
                answers[channel] = _why(exc, self.config)
        return answers


def alerts_from_env(env: Mapping[str, str]) -> Alerts:
    folder = data_dir(env)
    return Alerts(Fleet(load_settings(env)), alert_config(env), folder / "alerts-state.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pki.alerts", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "test"], help="run: look and send what is new; test: a test alert")
    parser.add_argument("--every", type=float, default=0, help="with run: look again every this many seconds")
    parser.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get("PKI_METRICS_PORT") or 0),
        help="with --every: serve Prometheus metrics on this port at /metrics (PKI_METRICS_PORT; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-address", default=os.environ.get("PKI_METRICS_ADDRESS") or "127.0.0.1",
        help="the address the metrics listen on (PKI_METRICS_ADDRESS; the container: 0.0.0.0)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        alerts = alerts_from_env(os.environ)
    except (SettingsError, OSError, ValueError) as exc:
        print(f"pki.alerts: {exc}", file=sys.stderr)
        return 2
    if not alerts.config.channels:
        print("pki.alerts: no channel: set PKI_ALERT_SMTP_HOST and/or PKI_ALERT_WEBHOOK_URL_FILE.", file=sys.stderr)
    if args.command == "test":
        answers = alerts.test()
        for channel, answer in answers.items():
            print(f"{channel}: {answer}")
        return 0 if all(a == "ok" for a in answers.values()) else 1
    if args.metrics_port and args.every > 0:
        checks = BrokerCheck(alerts.fleet, data_dir(os.environ) / "broker-check")
        serve_metrics(
            args.metrics_address, args.metrics_port,
            lambda: render_metrics(alerts.fleet, alerts.state(), checks.last()),
        )  # fmt: skip
    # SIGTERM (docker compose stop) ends the wait at once, or the run under way when it is done.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while True:
        try:
            result = alerts.run()
        except Exception as exc:  # a damaged file, a full disk: say so, and look again next time
            print(f"pki.alerts: the run failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if args.every <= 0:
                return 1
        else:
            print(f"pki.alerts: {result.found} condition(s), sent {result.sent or 'nothing new'}"
                  + (f", FAILED {result.failed}" if result.failed else ""), flush=True)  # fmt: skip
            if args.every <= 0:
                return 1 if result.failed else 0
        if stop.wait(alerts.next_look(args.every)):
            return 0


if __name__ == "__main__":
    sys.exit(main())
