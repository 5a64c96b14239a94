"""The audit trail: one JSON line per operation that changes state or hands out a secret.

Issue (a "sign" line with the serial the moment the CA has signed, then the issue's outcome),
revoke, enrolment token, reconcile actions, download of a private key, login. Appended, never
rewritten; one write per line, small enough that concurrent appends from several sessions do not
interleave. Secrets (tokens, keys, passwords) are never written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

from pki.tail import Position, read_appended


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signed: dict[int, str] = {}
        self._tokens: dict[str, set[dt.datetime]] = {}
        self._position = Position()
        """How far the indexes have read the trail."""

    def record(self, action: str, outcome: str = "ok", **details: Any) -> None:
        """Append one line. Raises OSError if the whole line could not be written (a full disk)."""
        entry = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "action": action, "outcome": outcome}
        entry.update({k: v for k, v in details.items() if v is not None})
        line = (json.dumps(entry, default=str, sort_keys=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # an earlier write was cut short: never glue a line onto its remains
            rest = memoryview(line)
            while rest:
                rest = rest[os.write(fd, rest) :]
        finally:
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

    def pending_tokens(self, cn: str) -> tuple[dt.datetime, ...]:
        """Expiry times of the enrolment tokens made for `cn` that have not expired yet.

        step-ca knows a token only when it is used, so an unused one is invisible to the CA: if two are
        used (or one, after an issue from the GUI), the site ends up with two valid certificates. The
        pages warn instead of refusing, since a lost token is the usual reason to make another.
        """
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            self._read_new()
            return tuple(sorted(e for e in self._tokens.get(cn, []) if e > now))

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
        if b'"action": "sign"' not in line and b'"action": "token"' not in line:
            return
        try:
            entry = json.loads(line)
            if entry["outcome"] != "ok":
                return
            if entry["action"] == "sign":
                self._signed[int(entry["serial"], 16)] = str(entry.get("cn", ""))
            elif entry["action"] == "token":
                self._tokens.setdefault(entry["cn"], set()).add(dt.datetime.fromisoformat(entry["expires"]))
        except (ValueError, KeyError, TypeError):
            return
