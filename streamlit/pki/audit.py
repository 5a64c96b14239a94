"""The audit trail: one JSON line per operation that changes state or hands out a secret.

Issue, revoke, enrolment token, download of a private key, login. Appended, never rewritten; a line
is small enough that concurrent appends from several sessions do not interleave.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

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
