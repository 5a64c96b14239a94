"""Revoke a certificate by its serial from a shell: `python -m pki.revoke SERIAL [--reason N]`.

For a certificate the GUI does not know: one issued after the backup a restored CA came from, whose
serial is in the old audit trail, a site's own files or the broker's log. A serial the GUI knows is
revoked the usual way (its folder is relabelled). Audited as the shell.
"""

from __future__ import annotations

import argparse
import os
import sys

from pki.fleet import Fleet
from pki.issuing import FilingFailed, IssueUncertain, NotIssued
from pki.model import REVOCATION_REASONS
from pki.roles import SHELL
from pki.settings import SettingsError, load_settings
from pki.step import StepError
from pki.validate import InvalidInput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pki.revoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("serial", help="the serial, in hexadecimal as the pages show it (or decimal with 0d)")
    parser.add_argument(
        "--reason", type=int, default=1, choices=sorted(REVOCATION_REASONS),
        help="RFC 5280 reason code (default 1, key compromise)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    text = args.serial.strip().lower().replace(":", "")
    try:
        serial = int(text[2:], 10) if text.startswith("0d") else int(text.removeprefix("0x"), 16)
    except ValueError:
        print(f"pki.revoke: {args.serial!r} is not a serial number.", file=sys.stderr)
        return 2
    try:
        print(Fleet(load_settings(os.environ)).revoke_serial(SHELL, serial, reason_code=args.reason))
    except (SettingsError, InvalidInput, StepError, OSError, FilingFailed, NotIssued, IssueUncertain) as exc:
        print(f"pki.revoke: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
