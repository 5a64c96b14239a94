"""Named accounts with Argon2id password hashes and a role each (pki.roles), and the login gate.

Accounts live in one JSON file under the GUI's data folder (users.json, 0600), changed under an
exclusive flock and replaced atomically, so several sessions and GUI replicas sharing the folder
never lose each other's changes. Every change to the fleet checks the actor's role in the core
(`require`), whatever the pages show. Until the first account exists, PKI_PASSWORD still logs in a
single bootstrap admin; with neither, the GUI is open (make run on 127.0.0.1) and says so.

Run as a command to manage accounts from a shell (`docker compose exec pki-gui python -m pki.accounts`):
passwords are read from the terminal or standard input, never from the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import functools
import getpass
import hashlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from math import ceil
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from pki.audit import AuditLog
from pki.auth import password_matches
from pki.roles import SHELL, Actor, Role, require
from pki.settings import audit_path, data_dir
from pki.throttle import LoginThrottle, Refused
from pki.validate import InvalidInput

PASSWORD_MIN = 12
_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_HASHER = PasswordHasher()  # Argon2id, the library's defaults (RFC 9106's second recommended profile)


@functools.cache
def _unknown_user() -> str:
    """The hash an unknown name is checked against: the same work as for a known one."""
    return _HASHER.hash("an account that does not exist")


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    password_hash: str
    disabled: bool = False
    changed: str = ""

    @property
    def session_key(self) -> str:
        """Changes with the password: sessions opened with the old one end."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:32]


def users_path(env: Mapping[str, str]) -> Path:
    """users.json in the GUI's data folder (known before the CA is set up, like the audit trail)."""
    return Path(env.get("PKI_USERS_FILE") or data_dir(env) / "users.json")


def validate_name(name: str) -> str:
    name = name.strip().lower()
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"The user name {name!r} may hold 1 to 64 lower-case letters, digits, dots, dashes, underscores and @."
        )
    return name


def validate_role(role: Role | str) -> Role:
    """The role named, or InvalidInput (a forged form value is no role)."""
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(f"There is no role {role!r}: it is one of {', '.join(r.value for r in Role)}.") from None


def validate_password(password: str) -> str:
    if len(password) < PASSWORD_MIN:
        raise InvalidInput(f"A password needs at least {PASSWORD_MIN} characters.")
    return password


class UserStore:
    """The accounts; every change checks that the actor is an admin and is audited."""

    def __init__(self, path: Path, audit: AuditLog) -> None:
        self.path = path
        self.audit = audit

    def users(self) -> list[User]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise InvalidInput(f"{self.path} is damaged ({exc}): restore it from a backup.") from None
        return [User(u["name"], Role(u["role"]), u["password_hash"], bool(u.get("disabled")), u.get("changed", ""))
                for u in raw]  # fmt: skip

    def any(self) -> bool:
        return bool(self.users())

    @property
    def _marker(self) -> Path:
        return self.path.with_name(f".{self.path.name}.had-accounts")

    def ever_had_accounts(self) -> bool:
        """Whether an account was ever made here (then PKI_PASSWORD logs nobody in, even if the accounts
        file is lost: restore it from a backup, or add an admin with `python -m pki.accounts`)."""
        return self._marker.exists()

    def find(self, name: str) -> User | None:
        return next((u for u in self.users() if u.name == name.strip().lower()), None)

    def authenticate(self, name: str, password: str) -> User | None:
        """The enabled user with this name and password, or None. An unknown name costs the same work."""
        user = self.find(name)
        try:
            _HASHER.verify(user.password_hash if user else _unknown_user(), password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        return user if user and not user.disabled else None

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[User]]:
        """The accounts, to change in place, written back atomically under an exclusive lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            users = self.users()
            yield users
            tmp = self.path.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as out:
                json.dump([asdict(u) for u in users], out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        finally:
            os.close(fd)

    def add(self, actor: Actor, name: str, role: Role | str, password: str) -> User:
        require(actor, Role.ADMIN, "add accounts")
        name, role, password = validate_name(name), validate_role(role), validate_password(password)
        with self._changing() as users:
            if any(u.name == name for u in users):
                raise InvalidInput(f"An account named {name} exists already.")
            if not any(u.role is Role.ADMIN and not u.disabled for u in users) and Role(role) is not Role.ADMIN:
                raise InvalidInput("The first account must be an admin: nobody could manage the others.")
            self._marker.touch(mode=0o600)
            user = User(name, Role(role), _HASHER.hash(password), changed=_now())
            users.append(user)
        self.audit.record("user-add", actor=actor, account=user.name, role=user.role.value)
        return user

    def update(
        self, actor: Actor, name: str, *, role: Role | str | None = None, disabled: bool | None = None,
        password: str | None = None,
    ) -> User:  # fmt: skip
        """Change an account's role, disable or enable it, or set a new password."""
        require(actor, Role.ADMIN, "change accounts")
        name = validate_name(name)
        role = validate_role(role) if role is not None else None
        new_hash = _HASHER.hash(validate_password(password)) if password is not None else None
        with self._changing() as users:
            index = next((i for i, u in enumerate(users) if u.name == name), None)
            if index is None:
                raise InvalidInput(f"There is no account named {name}.")
            user = users[index]
            changed = replace(
                user,
                role=Role(role) if role is not None else user.role,
                disabled=user.disabled if disabled is None else disabled,
                password_hash=new_hash or user.password_hash,
                changed=_now(),
            )
            was_admin = user.role is Role.ADMIN and not user.disabled
            others = [u for u in users if u.role is Role.ADMIN and not u.disabled and u.name != name]
            if was_admin and not others and (changed.role is not Role.ADMIN or changed.disabled):
                raise InvalidInput(f"{name} is the last enabled admin: make another admin first.")
            users[index] = changed
        what = "role" if role is not None else "password" if password is not None else None
        what = what or ("disable" if disabled else "enable")
        self.audit.record(f"user-{what}", actor=actor, account=name, role=changed.role.value)
        return changed


class LoginRefused(Exception):
    """A login that was not let in; the message is fit to show (it never says which part was wrong)."""


class Gate:
    """The one way in: the throttle first, then the accounts (or, before any ever existed, PKI_PASSWORD as
    the bootstrap admin). Failures and lock-outs are audited with the client's address; a typed name is
    written only when it is an account's (a password typed into the name field is never recorded)."""

    BOOTSTRAP_NAME = "admin"

    def __init__(
        self, users: UserStore, throttle: LoginThrottle, audit: AuditLog, bootstrap: str | None, *, sso: bool = False
    ) -> None:
        self.users = users
        self.throttle = throttle
        self.audit = audit
        self.bootstrap = bootstrap or None
        self.sso = sso
        """Single sign-on is configured: the GUI is never open, even with no account."""
        # Made beside the first page (argon2-cffi lets go of the GIL while it hashes), not in it: 0.25 s.
        threading.Thread(target=_unknown_user, name="unknown-user-hash", daemon=True).start()

    def _bootstrapping(self) -> bool:
        """PKI_PASSWORD counts until the first account is made, and never again (not even if the
        accounts file is lost later)."""
        return bool(self.bootstrap) and not self.users.any() and not self.users.ever_had_accounts()

    def passwords_usable(self) -> bool:
        """Whether the password form can let anyone in: an account exists, or PKI_PASSWORD still counts."""
        return self.users.any() or self._bootstrapping()

    def open_actor(self, address: str) -> Actor | None:
        """With no account and no PKI_PASSWORD the GUI is open (make run on 127.0.0.1): everyone is admin."""
        if self.bootstrap or self.sso or self.users.any() or self.users.ever_had_accounts():
            return None
        return Actor("local", Role.ADMIN, address, "open")

    def login(self, name: str, password: str, address: str) -> Actor:
        typed = name.strip().lower()[:64]
        user = self.users.find(typed)
        known = typed if user or (self._bootstrapping() and typed == self.BOOTSTRAP_NAME) else None
        attempt = self.throttle.attempt(address, known)
        if isinstance(attempt, Refused):
            raise LoginRefused(f"Too many failed logins {attempt.why}. Try again in {ceil(attempt.seconds)} s.")
        actor = None
        if self.users.any():
            found = self.users.authenticate(typed, password)
            actor = Actor(found.name, found.role, address, session=found.session_key) if found else None
        elif (
            self._bootstrapping() and typed == self.BOOTSTRAP_NAME and password_matches(self.bootstrap or "", password)
        ):
            actor = Actor(self.BOOTSTRAP_NAME, Role.ADMIN, address, "bootstrap")
        if actor is None:
            self.audit.record("login", "failed", account=known or "(not an account)", address=address or None)
            if attempt.locked_out:
                self.audit.record("login-lockout", locked=list(attempt.locked_out), address=address or None)
            raise LoginRefused("Wrong user name or password.")
        self.throttle.succeeded(attempt)
        self.audit.record("login", actor=actor)
        return actor

    def asks_password(self, actor: Actor) -> bool:
        """Whether `actor` has a password here to confirm changes with (not the shell, not SSO)."""
        return actor.via in ("password", "bootstrap")

    def confirm(self, actor: Actor, password: str) -> None:
        """The acting admin's password once more before an account change: a session left open is not
        enough to make an admin or reset a password. Counts in the throttle like a login, and a wrong one
        is audited; raises LoginRefused."""
        if not self.asks_password(actor):
            return
        attempt = self.throttle.attempt(actor.address, actor.name)
        if isinstance(attempt, Refused):
            raise LoginRefused(f"Too many wrong passwords {attempt.why}. Try again in {ceil(attempt.seconds)} s.")
        if actor.via == "bootstrap":
            right = self._bootstrapping() and password_matches(self.bootstrap or "", password)
        else:
            right = self.users.authenticate(actor.name, password) is not None
        if not right:
            self.audit.record("confirm", "failed", actor=actor)
            raise LoginRefused("That is not your password: nothing was changed.")
        self.throttle.succeeded(attempt)

    def current(self, actor: Actor) -> Actor | None:
        """The session's actor as the accounts say now: None once disabled, removed, its password
        changed, or once accounts replace the bootstrap login; the role as changed meanwhile."""
        if actor.via == "open":
            return self.open_actor(actor.address)
        if actor.via == "bootstrap":
            return actor if self._bootstrapping() else None
        user = self.users.find(actor.name)
        if user is None or user.disabled or user.session_key != actor.session:
            return None
        return replace(actor, role=user.role)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New password: ")
    if getpass.getpass("Again: ") != first:
        raise InvalidInput("The two passwords differ.")
    return first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pki.accounts",
        description="Manage the GUI's accounts (users.json in PKI_DATA_DIR, or PKI_USERS_FILE). Passwords are "
        "asked for on the terminal, or read from one line of standard input with --password-stdin.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add an account (the first one should be an admin)")
    add.add_argument("name")
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.VIEWER.value)
    reset = commands.add_parser("reset", help="set a new password")
    reset.add_argument("name")
    for command in (add, reset):
        command.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    role = commands.add_parser("role", help="change an account's role")
    role.add_argument("name")
    role.add_argument("role", choices=[r.value for r in Role])
    for verb in ("disable", "enable"):
        commands.add_parser(verb, help=f"{verb} an account").add_argument("name")
    commands.add_parser("list", help="the accounts, their roles and whether they are enabled")
    args = parser.parse_args(argv)

    store = UserStore(users_path(os.environ), AuditLog(audit_path(os.environ)))
    try:
        if args.command == "list":
            for user in store.users():
                print(f"{user.name}\t{user.role}\t{'disabled' if user.disabled else 'enabled'}\t{user.changed}")
            return 0
        if args.command == "add":
            user = store.add(SHELL, args.name, Role(args.role), _read_password(args.password_stdin))
        elif args.command == "reset":
            user = store.update(SHELL, args.name, password=_read_password(args.password_stdin))
        elif args.command == "role":
            user = store.update(SHELL, args.name, role=Role(args.role))
        else:
            user = store.update(SHELL, args.name, disabled=args.command == "disable")
    except (InvalidInput, OSError) as exc:
        print(f"pki.accounts: {exc}", file=sys.stderr)
        return 1
    print(f"{user.name}: {user.role}, {'disabled' if user.disabled else 'enabled'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
