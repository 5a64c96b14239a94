"""The GUI's own HTTPS certificate, issued by our CA for the GUI's public names and renewed by itself.

It is an ordinary server certificate of the fleet: issued, re-issued and revoked through the facade
like any other (audited as `gui-https`), filed in certs/{first host}/ and shown in View Certificates.
Streamlit serves a copy in the data folder (tls/gui.crt with the chain, tls/gui.key 0600), so that a
re-issue half done under certs/ never leaves it without a file. Once two thirds of its lifetime have
passed it is re-issued and Streamlit is restarted with it (pki.serve). The old one ({name}.replaced) is
revoked as superseded once the new one has been out for two looks (another GUI sharing certs/ may still
serve it until its next look), found again at every look, so a CA that was down then only delays it.
Its key is never put in a bundle (Fleet.bundle). An operator who brings their own certificate
(PKI_TLS_CERT_FILE/PKI_TLS_KEY_FILE) bypasses all this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pki.fleet import Fleet
from pki.folders import Label
from pki.inventory import CertRecord
from pki.issuing import FilingFailed, IssueRequest, IssueUncertain, NotIssued
from pki.keys import DEFAULT_KEY_TYPE
from pki.model import Kind
from pki.roles import SHELL, Actor, Role
from pki.settings import SettingsError, load_settings, tls_hosts
from pki.step import StepError
from pki.validate import InvalidInput

GUI_ACTOR = Actor("gui-https", Role.OPERATOR, "", "service")
SUPERSEDED = 4  # RFC 5280 reason code


@dataclass(frozen=True)
class Served:
    cert: Path
    key: Path
    serial: int | None
    """The serial of a CA-issued certificate (None for the operator's own)."""


def renewal_due(record: CertRecord, now: dt.datetime, after: float) -> bool:
    """Whether the fraction `after` of the certificate's lifetime has passed."""
    return now >= record.not_before + (record.not_after - record.not_before) * after


class GuiCertificate:
    """Keeps a valid certificate of ours for `hosts` in `folder`, re-issued when due."""

    def __init__(self, fleet: Fleet, hosts: list[str], folder: Path, days: int, renew_after: float = 2 / 3) -> None:
        if not hosts:
            raise ValueError("the GUI's HTTPS certificate needs at least one host name")
        self.fleet = fleet
        self.hosts = hosts
        self.identity = hosts[0].lower()
        self.folder = folder
        self.days = days
        self.renew_after = renew_after

    def current(self) -> CertRecord | None:
        """The identity's live, valid certificate with its key, if certs/ holds one."""
        for row in self.fleet.table().rows:
            record = row.record
            if row.identity == self.identity and record.is_live and row.valid and record.has_key:
                return record
        return None

    def ensure(self) -> Served:
        """The certificate to serve, issued or re-issued if needed. Raises what the facade raises when the
        CA cannot help."""
        record = self.current()
        if record is None:
            request = IssueRequest(self.identity, Kind.SERVER, self.hosts, self.days, DEFAULT_KEY_TYPE)
            record = self.fleet.issue(GUI_ACTOR, request).record
        elif renewal_due(record, dt.datetime.now(dt.UTC), self.renew_after) or set(self.hosts) != set(record.sans):
            record = self.fleet.reissue(GUI_ACTOR, record.serial, sans=self.hosts, days=self.days).record
        return self._copy(record)

    def stale(self, grace: dt.timedelta) -> list[int]:
        """Valid older certificates of the GUI's name that a renewal replaced, once the live one is older
        than `grace` (another GUI sharing certs/ serves the old one until its next look)."""
        live = self.current()
        if live is None or dt.datetime.now(dt.UTC) - live.not_before < grace:
            return []
        return [
            row.record.serial
            for row in self.fleet.table().rows
            if row.identity == self.identity and row.valid and row.record.label is Label.REPLACED
        ]

    def retire(self, serials: list[int]) -> None:
        """Revoke certificates whose keys are no longer served; raises InvalidInput naming any not revoked."""
        done = self.fleet.revoke(
            GUI_ACTOR, self.identity, reason_code=SUPERSEDED, confirmation=self.identity, serials=serials
        )
        if done.failures:
            raise InvalidInput(
                "not revoked: " + ", ".join(f"{serial:X} ({why})" for serial, why in done.failures.items())
            )

    def _copy(self, record: CertRecord) -> Served:
        self.folder.mkdir(parents=True, exist_ok=True)
        cert, key = self.folder / "gui.crt", self.folder / "gui.key"
        _replace(key, record.path.with_suffix(".key").read_bytes(), 0o600)
        _replace(cert, record.path.read_bytes(), 0o644)
        return Served(cert, key, record.serial)


REPLACE_HINT = (
    "If that is an earlier HTTPS certificate of this GUI whose files were lost, revoke it with "
    "`python -m pki.https --replace` (in compose: `docker compose exec pki-gui python -m pki.https --replace`); "
    "the GUI then issues a new one by itself."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pki.https",
        description="The GUI's own HTTPS certificate (PKI_TLS=ca): show it, or revoke every valid certificate "
        "of its host name so that the GUI issues a new one (when its files were lost).",
    )
    parser.add_argument("--replace", action="store_true", help="revoke the host name's valid certificates")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    hosts = tls_hosts(env)
    if not hosts:
        print("pki.https: PKI_TLS_HOSTS (or PKI_PUBLIC_HOSTS) names no host.", file=sys.stderr)
        return 2
    identity = hosts[0].lower()
    try:
        fleet = Fleet(load_settings(env))
        valid = [r for r in fleet.table().rows if r.identity == identity and r.valid]
        for row in valid:
            print(f"{identity}: serial {row.record.serial_hex}, {row.status}, until {row.record.not_after:%Y-%m-%d}, "
                  f"{row.record.source}")  # fmt: skip
        if args.replace and valid:
            done = fleet.revoke(SHELL, identity, reason_code=SUPERSEDED, confirmation=identity)
            for serial in done.serials:
                print(f"pki.https: revoked {serial:X}")
            for serial, answer in done.failures.items():
                print(f"pki.https: {serial:X} NOT revoked: {answer}", file=sys.stderr)
            if done.failures:
                return 1
    except (SettingsError, InvalidInput, StepError, OSError, FilingFailed, NotIssued, IssueUncertain) as exc:
        print(f"pki.https: {exc}", file=sys.stderr)
        return 1
    return 0


def _replace(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)  # a full disk leaves no half file behind
        raise


if __name__ == "__main__":
    sys.exit(main())
