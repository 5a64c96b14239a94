"""Failed logins, limited per client, per account and in total, for every connection and GUI replica.

The record is one small JSON file in the GUI's data folder, read and changed under an exclusive flock,
so the limits hold whichever connection, process or replica a guess arrives on. A client is asked to
wait BEFORE its password is checked: while it waits, no guess of it is tried at all.

- Per client (an IPv4 address, an IPv6 /64) and per existing account: PER_ADDRESS tries within WINDOW
  seconds lock it out, first for LOCKOUT seconds, twice as long after each further lock-out (at most
  MAX_LOCKOUT); a day without failures forgives it. A good login takes back only its own try.
- In total: TOTAL failures within WINDOW seconds, from all clients together, make every login wait until
  the window has passed (guesses spread over many addresses).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
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
    """Whose failures: 'from this address', 'for this account', 'from all addresses together'."""


@dataclass(frozen=True)
class Attempt:
    """A try that was let through: it counts as a failure until `LoginThrottle.succeeded(attempt)`."""

    keys: tuple[str, ...]
    time: float
    locked_out: tuple[str, ...]
    """The keys this try locked out (it was the last one their limit let through)."""


def address_key(address: str) -> str:
    """What one client is: its IPv4 address, or its IPv6 /64 (one host can hold a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address {address}"
    if ip.version == 6:
        return f"address {ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address {ip}"


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
            state.setdefault("keys", {})
            state.setdefault("failures", [])
            yield state
            data = json.dumps(state).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)

    def attempt(self, address: str, account: str | None = None) -> Attempt | Refused:
        """May a login from `address` (for `account`, when it names one that exists) be tried now? If
        so, the try counts as a failure until `succeeded`: parallel tries cannot all slip in before the
        first failure is written. A refusal says how long to wait."""
        now = time.time()
        keys = (address_key(address), *([f"account {account}"] if account else []))
        with self._state() as state:
            entries = state["keys"]
            for name in [k for k, e in entries.items() if e.get("last", 0) < now - FORGET]:
                del entries[name]
            for key in keys:
                until = float(entries.get(key, {}).get("locked_until", 0))
                if until > now:
                    return Refused(
                        until - now, "from this address" if key.startswith("address ") else "for this account"
                    )
            recent = [t for t in state["failures"] if t > now - WINDOW]
            if len(recent) >= TOTAL:
                return Refused(min(recent) + WINDOW - now, "from all addresses together")
            state["failures"] = [*recent, now]
            locked = []
            for key in keys:
                entry = entries.setdefault(key, {"failures": [], "lockouts": 0})
                entry["failures"] = [t for t in entry["failures"] if t > now - WINDOW] + [now]
                entry["last"] = now
                if len(entry["failures"]) >= PER_ADDRESS:
                    entry["lockouts"] += 1
                    entry["locked_until"] = now + min(LOCKOUT * 2 ** (entry["lockouts"] - 1), MAX_LOCKOUT)
                    entry["failures"] = []
                    locked.append(key)
            return Attempt(keys, now, tuple(locked))

    def succeeded(self, attempt: Attempt) -> None:
        """The try was a good login: it is no failure, and a lock-out it caused is lifted. Earlier
        failures and lock-outs stay counted (a good login of one's own does not reset the limits)."""
        with self._state() as state:
            if attempt.time in state["failures"]:
                state["failures"].remove(attempt.time)
            for key in attempt.keys:
                entry = state["keys"].get(key)
                if entry is None:
                    continue
                if attempt.time in entry["failures"]:
                    entry["failures"].remove(attempt.time)
                if key in attempt.locked_out:
                    entry["locked_until"] = 0
                    entry["lockouts"] = max(0, entry["lockouts"] - 1)

    def locked_addresses(self) -> dict[str, float]:
        """Addresses and accounts locked out now, with the seconds left (for the Dashboard)."""
        now = time.time()
        with self._state() as state:
            return {
                k: float(e["locked_until"]) - now
                for k, e in state["keys"].items()
                if float(e.get("locked_until", 0)) > now
            }
