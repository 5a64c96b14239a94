"""Failed logins, limited per client address and in total, for every connection and every GUI replica.

The record is one small JSON file in the GUI's data folder, read and changed under an exclusive flock,
so the limits hold whichever connection, process or replica a guess arrives on. A client is asked to
wait BEFORE its password is checked: while it waits, no guess of it is tried at all.

- Per address: PER_ADDRESS tries within WINDOW seconds lock the address out, first for LOCKOUT seconds,
  twice as long after each further lock-out (at most MAX_LOCKOUT); a login that succeeds, or a day
  without failures, forgives it.
- In total: TOTAL failures within WINDOW seconds, from all addresses together, make every address that
  has failed lately wait until the window has passed (an attack from many addresses); an address that
  never failed can still log in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WINDOW = 60.0
PER_ADDRESS = 5
TOTAL = 30
LOCKOUT = 60.0
MAX_LOCKOUT = 3600.0
FORGET = 86400.0


@dataclass(frozen=True)
class Refused:
    seconds: float
    why: str


class LoginThrottle:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, os.fstat(fd).st_size, 0)
            try:
                state = json.loads(raw) if raw else {}
            except ValueError:
                state = {}  # a damaged record starts again rather than lock everybody out for ever
            state.setdefault("addresses", {})
            state.setdefault("failures", [])
            yield state
            data = json.dumps(state).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)

    def attempt(self, address: str) -> Refused | None:
        """May a login from `address` be tried now? If so, the try counts as a failure until `succeeded`
        says otherwise: parallel tries cannot all slip in before the first failure is written. A refusal
        says how long to wait; the try that reaches the limit is the last one let through."""
        now = time.time()
        with self._state() as state:
            addresses = state["addresses"]
            for name in [a for a, e in addresses.items() if e.get("last", 0) < now - FORGET]:
                del addresses[name]
            entry = addresses.setdefault(address, {"failures": [], "lockouts": 0, "last": now})
            until = float(entry.get("locked_until", 0))
            if until > now:
                return Refused(until - now, "too many failed logins from this address")
            recent = [t for t in state["failures"] if t > now - WINDOW]
            if len(recent) >= TOTAL and entry["failures"]:
                return Refused(min(recent) + WINDOW - now, "too many failed logins from all addresses")
            state["failures"] = [*recent, now]
            entry["failures"] = [t for t in entry["failures"] if t > now - WINDOW] + [now]
            entry["last"] = now
            if len(entry["failures"]) >= PER_ADDRESS:
                entry["lockouts"] += 1
                entry["locked_until"] = now + min(LOCKOUT * 2 ** (entry["lockouts"] - 1), MAX_LOCKOUT)
                entry["failures"] = []
            return None

    def succeeded(self, address: str) -> None:
        """The try from `address` was a good login: forgive the address and take the try off the total."""
        with self._state() as state:
            state["addresses"].pop(address, None)
            if state["failures"]:
                state["failures"].pop()

    def locked_addresses(self) -> dict[str, float]:
        """Addresses locked out now, with the seconds left (for the Dashboard)."""
        now = time.time()
        with self._state() as state:
            return {
                a: float(e["locked_until"]) - now
                for a, e in state["addresses"].items()
                if float(e.get("locked_until", 0)) > now
            }
