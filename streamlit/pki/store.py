"""The only code that writes under certs/: one lock per identity, staging, archive names, quarantine.

Every change to one identity (issue, re-issue, revoke, enrolment token, filing) runs while holding an
exclusive flock on certs/.locks/{identity}.lock. flock excludes other processes and other threads
alike (each holder opens the file anew), and GUI containers that share certs/ on one host share the
lock, so "is a certificate of this identity active?" is asked and acted on by one holder at a time.
Lock files are never removed: removing one would let two holders lock two different files.

A new certificate is assembled in a hidden staging folder (.issue-{identity}-{random}) and renamed
into place when complete, so no reader ever sees half a folder. Nothing the CA signed is deleted: a
folder that cannot be filed is renamed {identity}.quarantine[.N], and a folder being replaced is
renamed with its label (pki.folders), never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from pki.folders import LABELS, Label, split_folder
from pki.validate import InvalidInput

_STAGING = ".issue-"
_LOCKS = ".locks"
_INTERRUPTED = re.compile(rf"(?<![^\0])(?:{re.escape(_STAGING)}[^\0]*|[^\0]*\.quarantine[^\0]*)")
"""In names joined by NUL (the one character no name holds): a staging folder's name, or a name with the
quarantine label in it (then split_folder decides)."""


def staging_identity(name: str) -> str:
    """The identity a staging folder .issue-{identity}-{random} is for."""
    return name[len(_STAGING) :].rsplit("-", 1)[0]


def _is_folder(path: Path) -> bool:
    """A folder itself, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_staging(name: str) -> bool:
    return name.startswith(_STAGING)


def lock_within(fd: int, seconds: float) -> bool:
    """Take an exclusive flock on `fd`, waiting up to `seconds` for its holder; False if it stayed held."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


class IdentityBusy(InvalidInput):
    """Another session is changing this identity and did not finish in time."""


class CertStore:
    def __init__(self, certs_dir: Path, lock_wait: float) -> None:
        self.certs_dir = certs_dir
        self.lock_wait = lock_wait

    def _lock_file(self, identity: str) -> int:
        locks = self.certs_dir / _LOCKS
        locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        return os.open(locks / f"{identity}.lock", os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def locked(self, identity: str) -> Iterator[None]:
        """Hold the identity's lock, waiting up to lock_wait seconds for another holder to finish."""
        fd = self._lock_file(identity)
        try:
            if not lock_within(fd, self.lock_wait):
                raise IdentityBusy(
                    f"{identity} is being changed by another session right now (issue, revoke or token). "
                    "Try again in a moment."
                )
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def is_locked(self, identity: str) -> bool:
        """Whether a session holds the identity's lock now (a staging folder of a free identity is stale)."""
        try:
            fd = self._lock_file(identity)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing the descriptor also releases a lock taken just above
        return False

    def new_staging(self, identity: str) -> Path:
        self.certs_dir.mkdir(parents=True, exist_ok=True)
        staging = self.certs_dir / f"{_STAGING}{identity}-{secrets.token_hex(4)}"
        staging.mkdir(mode=0o700)
        return staging

    def interrupted(self) -> list[tuple[str, str]]:
        """(folder, identity) of the staging folders no session is working on (left by a crash), then of the
        quarantine folders: from one look at certs/ (a large fleet has 100,000 folders; few are either)."""
        try:
            everything = os.listdir(self.certs_dir)  # names only: no object per folder
        except FileNotFoundError:
            return []
        # One search through all the names, not a Python test of each: only names with the label in them are
        # split or looked at. Plain substring searches first: a fleet usually has neither (the regex's pass
        # over 100,000 names costs 50 ms, theirs one).
        joined = "\0".join(everything)
        if _STAGING not in joined and ".quarantine" not in joined:
            return []
        candidates = _INTERRUPTED.findall(joined)
        names = sorted(name for name in candidates if _is_folder(self.certs_dir / name))
        staged = ((name, staging_identity(name)) for name in names if is_staging(name))
        stale = [(name, identity) for name, identity in staged if not self.is_locked(identity)]
        labelled = ((name, split_folder(name)) for name in names if not is_staging(name))
        return stale + [(name, identity) for name, (identity, label) in labelled if label is Label.QUARANTINE]

    @staticmethod
    def write_new(path: Path, data: bytes, mode: int) -> None:
        """Create `path` with `mode` (never replacing a file) and make its content durable; a write
        that fails (a full disk) leaves no file behind."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            rest = memoryview(data)
            while rest:
                rest = rest[os.write(fd, rest) :]
            os.fsync(fd)
        except OSError:
            path.unlink()  # this call's own file, incomplete: never leave half a key or certificate
            raise
        finally:
            os.close(fd)

    @staticmethod
    def discard_unsigned(staging: Path) -> None:
        """Remove a staging folder whose key the CA never certified (it holds nothing of the CA's)."""
        for entry in staging.iterdir():
            entry.unlink()
        staging.rmdir()

    def free_name(self, identity: str, label: Label | str) -> str:
        """The first unused name among {identity}.{label}, {identity}.{label}.2, ..."""
        if label not in LABELS:
            raise ValueError(f"unknown folder label {label!r}")
        name, number = f"{identity}.{label}", 1
        while (self.certs_dir / name).exists():
            number += 1
            name = f"{identity}.{label}.{number}"
        return name

    def move(self, source: Path, name: str) -> str:
        """Rename `source` to certs/{name}; refuses to replace anything (the caller holds the lock)."""
        target = self.certs_dir / name
        if target.exists():
            raise FileExistsError(17, "exists already", str(target))
        os.rename(source, target)
        return name

    def relabel(self, folder: str, identity: str, label: Label) -> str:
        """Rename certs/{folder} to {identity}.{label}[.N] (first free number); returns the new name."""
        if folder != identity and split_folder(folder) == (identity, label):
            return folder
        return self.move(self.certs_dir / folder, self.free_name(identity, label))
