"""The audit trail: one JSON line per operation that changes state or hands out a secret.

Issue (a "sign" line with the serial the moment the CA has signed, then the issue's outcome),
revoke, enrolment token, reconcile actions, bundles, logins (failed ones too), account changes. Each
line names the user, their role and client address, and carries `prev`: the SHA-256 of the line
before it. The lines form a chain: an edited, removed or reordered line breaks it at the next one
(`python -m pki.audit verify`). Lines are appended under an exclusive lock on the file, so writers
in several sessions, processes and GUI replicas chain in one order. Nothing is ever rewritten.
Secrets (tokens, keys, passwords, passphrases) are never written.

A chain proves order and integrity, not completeness at the end: whoever can write the file can cut
its last lines. `verify` prints the hash of the last line; kept elsewhere, it shows a cut later.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import sys
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pki.roles import Actor
from pki.tail import Position, read_appended

_TAIL = 64 * 1024  # enough to hold the last line


def line_hash(line: bytes) -> str:
    """What the next line's `prev` holds: SHA-256 of a line's bytes, without its newline."""
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def rotated_files(path: Path) -> list[Path]:
    """The trail's rotated copies next to it, oldest first: audit.log.1, audit.log-20260101...
    Compressed ones cannot be read and are left out."""
    siblings = [*path.parent.glob(f"{path.name}.*"), *path.parent.glob(f"{path.name}-*")]
    readable = [p for p in siblings if p.is_file() and p.suffix not in (".gz", ".xz", ".bz2", ".zst", ".lock", ".tmp")]
    return sorted(readable, key=lambda p: p.stat().st_mtime)


def _last_line_of(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        return _last_line(fd, size) if size else b""
    finally:
        os.close(fd)


def _last_line(fd: int, size: int) -> bytes:
    """The last line of the open file (its last fragment if a write was cut short)."""
    start = max(0, size - _TAIL)
    data = os.pread(fd, size - start, start)
    while b"\n" not in data.rstrip(b"\n") and start > 0:
        start = max(0, start - _TAIL)
        data = os.pread(fd, size - start, start)
    return data.rstrip(b"\n").rsplit(b"\n", 1)[-1]


@dataclass(frozen=True)
class MadeToken:
    """An enrolment token as the audit trail records its making (never the token itself)."""

    site: str
    token_ref: str
    """The token's "jti": how the CA's journal names it once spent ("" for tokens made before ids were kept)."""
    made: dt.datetime
    expires: dt.datetime
    made_by: str
    broker: str


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signed: dict[int, str] = {}
        self._tokens: dict[str, MadeToken] = {}
        """Enrolment tokens made, by id (older lines without one: by site and expiry)."""
        self._cancelled: set[str] = set()
        self._by_site: dict[str, list[MadeToken]] = {}
        self._position = Position()
        """How far the indexes have read the trail."""

    def record(self, action: str, outcome: str = "ok", *, actor: Actor | None = None, **details: Any) -> None:
        """Append one line, chained to the one before. Raises OSError if the whole line could not be
        written (a full disk)."""
        entry: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "action": action,
            "outcome": outcome,
        }
        if actor is not None:
            entry |= {"user": actor.name, "role": actor.role.value, "via": actor.via, "address": actor.address or None}
        entry.update({k: v for k, v in details.items() if v is not None})
        fd = self._open_locked()
        try:
            size = os.fstat(fd).st_size
            rotated = rotated_files(self.path)
            last = _last_line(fd, size) if size else _last_line_of(rotated[-1]) if rotated else b""
            entry["prev"] = line_hash(last) if last else ""
            line = (json.dumps(entry, default=str, sort_keys=False) + "\n").encode()
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # an earlier write was cut short: never glue a line onto its remains
            rest = memoryview(line)
            while rest:
                rest = rest[os.write(fd, rest) :]
        finally:
            os.close(fd)  # also releases the lock

    def _open_locked(self) -> int:
        """The trail open for appending, under an exclusive lock (one writer at a time: the chain has one
        order), and still the file at its path once locked (a rotation may have moved it meanwhile)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def entries(self, limit: int | None = 200) -> list[dict[str, Any]]:
        """The newest `limit` entries (all with None), newest first."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        result = []
        for line in reversed(lines if limit is None else lines[-limit:]):
            try:
                result.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return result

    def tokens(self) -> tuple[list[MadeToken], set[str]]:
        """Every enrolment token made here (oldest first), and the ids of those cancelled here.

        step-ca knows a token only when it is used: whether one was is for the CA's journal to say
        (pki.ledger); this says only that it was made, by whom, for which site, until when.
        """
        with self._lock:
            self._read_new()
            return sorted(self._tokens.values(), key=lambda t: t.made), set(self._cancelled)

    def tokens_of(self, site: str) -> list[MadeToken]:
        """The enrolment tokens made here for `site` (a look-up, not a pass over every token)."""
        with self._lock:
            self._read_new()
            return list(self._by_site.get(site, ()))

    def signed_here(self) -> dict[int, str]:
        """Serial -> CN of every certificate the CA signed for this GUI (its "sign" lines)."""
        with self._lock:
            self._read_new()
            return dict(self._signed)

    def _read_new(self) -> None:
        """Index the "sign" and "token" lines appended since the last call (called with the lock held).
        Lines read twice (after a truncation) change nothing: the indexes are keyed by what they hold."""
        with contextlib.suppress(FileNotFoundError):
            self._position = read_appended(self.path, self._position, self._index)

    def _index(self, line: bytes) -> None:
        if not any(f'"action": "{action}"'.encode() in line for action in ("sign", "token", "token-cancel")):
            return
        try:
            entry = json.loads(line)
            if entry["outcome"] != "ok":
                return
            if entry["action"] == "sign":
                self._signed[int(entry["serial"], 16)] = str(entry.get("cn", ""))
            elif entry["action"] == "token":
                token = MadeToken(
                    site=str(entry["cn"]),
                    token_ref=str(entry.get("token_ref", "")),
                    made=dt.datetime.fromisoformat(entry["time"]),
                    expires=dt.datetime.fromisoformat(entry["expires"]),
                    made_by=str(entry.get("user", "")),
                    broker=str(entry.get("broker", "")),
                )
                self._tokens[token.token_ref or f"{token.site}@{entry['expires']}"] = token
                self._by_site.setdefault(token.site, []).append(token)
            elif entry["action"] == "token-cancel":
                self._cancelled.add(str(entry["token_ref"]))
        except (ValueError, KeyError, TypeError):
            return


def search(
    entries: Sequence[dict[str, Any]],
    *,
    users: Collection[str] = (),
    actions: Collection[str] = (),
    text: str = "",
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> list[dict[str, Any]]:
    """The entries of these users and actions (all when empty), mentioning `text` (a CN, a serial...),
    on or between the dates given."""
    needle = text.strip().lower()
    found = []
    for entry in entries:
        day = str(entry.get("time", ""))[:10]
        if users and entry.get("user", entry.get("account")) not in users:
            continue
        if actions and entry.get("action") not in actions:
            continue
        if (since and day < since.isoformat()) or (until and day > until.isoformat()):
            continue
        if needle and needle not in json.dumps(entry, default=str).lower():
            continue
        found.append(entry)
    return found


def csv_of(entries: Sequence[dict[str, Any]]) -> bytes:
    """The entries as CSV: every field any of them has, in the order the fields first appear; a field an
    entry lacks is empty, a nested value written as Python shows it."""
    fields = list(dict.fromkeys(key for entry in entries for key in entry))
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, restval="")
    writer.writeheader()
    writer.writerows(entries)
    return out.getvalue().encode()


@dataclass(frozen=True)
class Verified:
    lines: int
    unchained: int
    """Lines before the chain began (written before app-pki chained its audit lines)."""
    head: str
    """The hash of the last line: note it elsewhere to notice later that lines were cut off the end."""
    broken: str | None = None
    """Where the chain breaks first, and what that means; None if it holds."""


def verify(paths: Sequence[Path]) -> Verified:
    """Check the chain through `paths`, oldest file first (rotated files, then the current one)."""
    count, unchained, started, last = 0, 0, False, b""
    for path in paths:
        with path.open("rb") as log:
            for number, raw in enumerate(log, start=1):
                line = raw.rstrip(b"\n")
                count += 1
                prev = _prev_of(line)
                if not started and prev is None:
                    unchained += 1  # written before the chain began
                elif started and prev is None and not _is_json(line):
                    pass  # a write cut short (a full disk): the next line chains to what it left
                elif prev != (line_hash(last) if last else ""):
                    broken = (
                        f"{path} line {number}: the line before it is not the one it was written after. That line "
                        "was edited, or lines between them were removed, inserted or reordered."
                    )
                    return Verified(count, unchained, line_hash(line), broken)
                else:
                    started = True
                last = line
    return Verified(count, unchained, line_hash(last) if last else "")


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def _prev_of(line: bytes) -> str | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    prev = entry.get("prev") if isinstance(entry, dict) else None
    return prev if isinstance(prev, str) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pki.audit",
        description="Check the audit trail's chain: every line must carry the hash of the line before it.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check the chain; exit 1 at the first break")
    check.add_argument(
        "files", nargs="*", type=Path, help="oldest first (default: PKI_AUDIT_LOG and its rotated copies)"
    )
    args = parser.parse_args(argv)
    from pki.settings import audit_path

    trail = audit_path(os.environ)
    files = args.files or [*rotated_files(trail), trail]
    try:
        result = verify(files)
    except OSError as exc:
        print(f"pki.audit: {exc}", file=sys.stderr)
        return 2
    print(f"{result.lines} lines ({result.unchained} from before the chain); last line's hash {result.head}")
    if result.broken:
        print(f"BROKEN: {result.broken}")
        return 1
    print("The chain holds.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
