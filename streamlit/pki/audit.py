"""The audit trail: one JSON line per operation that changes state or hands out a secret.

Issue (a "sign" line with the serial the moment the CA has signed, then the issue's outcome),
revoke, enrolment token, reconcile actions, download of a private key, login. Appended, never
rewritten; one write per line, small enough that concurrent appends from several sessions do not
interleave. Secrets (tokens, keys, passwords) are never written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signed: dict[int, str] = {}
        self._tokens: dict[str, list[dt.datetime]] = {}
        self._read_to: tuple[int, int] = (0, 0)  # (inode, offset) of what the indexes have read

    def record(self, action: str, outcome: str = "ok", **details: Any) -> None:
        entry = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "action": action, "outcome": outcome}
        entry.update({k: v for k, v in details.items() if v is not None})
        line = json.dumps(entry, default=str, sort_keys=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
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
        """Index the "sign" and "token" lines appended since the last call (called with the lock held)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        inode, offset = self._read_to
        if inode != stat.st_ino or offset > stat.st_size:
            self._signed, self._tokens, offset = {}, {}, 0
        if offset < stat.st_size:
            with self.path.open("rb") as log:
                log.seek(offset)
                data = log.read(stat.st_size - offset)
            complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
            for line in complete.splitlines():
                if b'"action": "sign"' in line or b'"action": "token"' in line:
                    self._index(line)
            offset += len(complete)
        self._read_to = (stat.st_ino, offset)

    def _index(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
            if entry["outcome"] != "ok":
                return
            if entry["action"] == "sign":
                self._signed[int(entry["serial"], 16)] = str(entry.get("cn", ""))
            elif entry["action"] == "token":
                self._tokens.setdefault(entry["cn"], []).append(dt.datetime.fromisoformat(entry["expires"]))
        except (ValueError, KeyError, TypeError):
            return
