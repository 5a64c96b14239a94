"""Accounts, roles checked in the core, the login throttle, and the chained audit trail."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import OPERATOR, REPO, RunningCA, gui_fleet
from pki.accounts import Gate, LoginRefused, UserStore
from pki.audit import AuditLog, csv_of, line_hash, rotated_files, verify
from pki.issuing import IssueRequest
from pki.model import Kind
from pki.roles import SHELL, Actor, Forbidden, Role
from pki.throttle import PER_ADDRESS, LoginThrottle
from pki.validate import InvalidInput

VIEWER = Actor("test-viewer", Role.VIEWER, "127.0.0.1")


def store(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "users.json", AuditLog(tmp_path / "audit.log"))


def gate(tmp_path: Path, bootstrap: str | None = None) -> Gate:
    accounts = store(tmp_path)
    return Gate(accounts, LoginThrottle(tmp_path / "throttle.json"), accounts.audit, bootstrap)


def test_accounts_keep_argon2id_hashes_only_and_an_admin_always_remains(tmp_path: Path) -> None:
    accounts = store(tmp_path)
    accounts.add(SHELL, "Ada", Role.ADMIN, "correct horse battery")
    accounts.add(SHELL, "otto", Role.OPERATOR, "operator password 1")
    raw = (tmp_path / "users.json").read_text()
    assert "correct horse" not in raw and "$argon2id$" in raw
    assert (tmp_path / "users.json").stat().st_mode & 0o777 == 0o600
    assert accounts.authenticate("ada", "correct horse battery").role is Role.ADMIN  # type: ignore[union-attr]
    assert accounts.authenticate("ada", "wrong") is None
    assert accounts.authenticate("nobody", "correct horse battery") is None
    with pytest.raises(InvalidInput, match="at least 12 characters"):
        accounts.add(SHELL, "short", Role.VIEWER, "short")
    with pytest.raises(InvalidInput, match="may hold 1 to 64"):
        accounts.add(SHELL, "a b", Role.VIEWER, "long enough password")
    with pytest.raises(InvalidInput, match="exists already"):
        accounts.add(SHELL, "ADA", Role.VIEWER, "long enough password")
    with pytest.raises(InvalidInput, match="last enabled admin"):
        accounts.update(SHELL, "ada", disabled=True)
    with pytest.raises(Forbidden, match="needs the admin role"):
        accounts.add(OPERATOR, "eve", Role.ADMIN, "long enough password")
    accounts.update(SHELL, "otto", disabled=True)
    assert accounts.authenticate("otto", "operator password 1") is None
    log = (tmp_path / "audit.log").read_text()
    assert "correct horse" not in log and log.count('"action": "user-add"') == 2
    assert '"action": "user-disable"' in log and '"user": "shell"' in log


def test_account_changes_in_the_gui_need_the_admins_password_again(tmp_path: Path) -> None:
    door = gate(tmp_path)
    door.users.add(SHELL, "ada", Role.ADMIN, "correct horse battery")
    door.users.add(SHELL, "bob", Role.ADMIN, "bob's password 123")
    ada = door.login("ada", "correct horse battery", "192.0.2.7")
    with pytest.raises(LoginRefused, match="not your password"):
        door.confirm(ada, "")  # a session left open is not enough
    for _ in range(4):
        with pytest.raises(LoginRefused, match="not your password"):
            door.confirm(ada, "a guess")
    with pytest.raises(LoginRefused, match="Too many"):  # an oracle no faster than the login form
        door.confirm(ada, "correct horse battery")
    log = (tmp_path / "audit.log").read_text()
    assert log.count('"action": "confirm", "outcome": "failed"') == 5
    door.confirm(SHELL, "")  # the shell has no password here
    with pytest.raises(InvalidInput, match="There is no role 'superadmin'"):  # a forged form value
        door.users.update(ada, "bob", role="superadmin")
    with pytest.raises(InvalidInput, match="There is no role"):
        door.users.add(ada, "eve", "root", "long enough password")


def test_concurrent_account_changes_lose_nothing(tmp_path: Path) -> None:
    accounts = store(tmp_path)
    accounts.add(SHELL, "ada", Role.ADMIN, "admin password 123")
    threads = [
        threading.Thread(target=accounts.add, args=(SHELL, f"user-{i}", Role.VIEWER, "a viewer password"))
        for i in range(8)
    ]
    program = (
        f"import sys; sys.path.insert(0, {str(REPO / 'streamlit')!r})\n"
        "from pathlib import Path\nfrom pki.accounts import UserStore\nfrom pki.audit import AuditLog\n"
        "from pki.roles import SHELL, Role\n"
        f"UserStore(Path({str(tmp_path / 'users.json')!r}), AuditLog(Path({str(tmp_path / 'audit.log')!r})))"
        ".add(SHELL, sys.argv[1], Role.VIEWER, 'a viewer password')\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", program, f"proc-{i}"]) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(p.wait(timeout=60) == 0 for p in processes)
    assert len(accounts.users()) == 1 + 8 + 4
    assert verify([tmp_path / "audit.log"]).broken is None  # 13 writers, one chain


def test_the_gui_password_works_only_until_the_first_account(tmp_path: Path) -> None:
    door = gate(tmp_path, bootstrap="the gui password")
    assert door.open_actor("10.1.1.1") is None
    with pytest.raises(LoginRefused, match="Wrong user name or password"):
        door.login("admin", "not it", "10.1.1.1")
    first = door.login("admin", "the gui password", "10.1.1.1")
    assert (first.name, first.role, first.via) == ("admin", Role.ADMIN, "bootstrap")
    with pytest.raises(InvalidInput, match="The first account must be an admin"):
        door.users.add(first, "vera", Role.VIEWER, "vera's own password")
    door.users.add(first, "ada", Role.ADMIN, "ada's own password")
    assert door.current(first) is None  # the bootstrap session ends
    with pytest.raises(LoginRefused):
        door.login("admin", "the gui password", "10.1.1.1")
    ada = door.login("ada", "ada's own password", "10.1.1.1")
    assert ada.via == "password" and door.current(ada) == ada
    door.users.update(SHELL, "ada", password="a new password for ada")
    assert door.current(ada) is None  # a password change ends the sessions opened with the old one
    (tmp_path / "users.json").unlink()  # the accounts file lost: the GUI password must not come back
    with pytest.raises(LoginRefused):
        door.login("admin", "the gui password", "10.1.1.2")
    assert door.open_actor("127.0.0.1") is None
    assert gate(tmp_path / "open").open_actor("127.0.0.1") == Actor("local", Role.ADMIN, "127.0.0.1", "open")


def test_a_hundred_parallel_guesses_get_no_more_tries_than_the_limit(tmp_path: Path) -> None:
    door = gate(tmp_path)
    door.users.add(SHELL, "ada", Role.ADMIN, "ada's own password")
    door.users.add(SHELL, "otto", Role.OPERATOR, "otto's own password")
    outcomes: list[str] = []
    start = threading.Barrier(100)

    def guess(i: int) -> None:
        start.wait()
        try:
            door.login("ada", f"guess {i}", "198.51.100.7")
        except LoginRefused as exc:
            outcomes.append("throttled" if "Too many" in str(exc) else "wrong")

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("wrong") == PER_ADDRESS and outcomes.count("throttled") == 100 - PER_ADDRESS
    lines = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    logins = [e for e in lines if e["action"] == "login"]
    assert sum(e["outcome"] == "failed" for e in logins) == PER_ADDRESS
    assert all(e["address"] == "198.51.100.7" for e in logins)
    # Even the right password waits now, from that address and for that account; others are not held up.
    with pytest.raises(LoginRefused, match="Too many failed logins from this address"):
        door.login("ada", "ada's own password", "198.51.100.7")
    with pytest.raises(LoginRefused, match="Too many failed logins for this account"):
        door.login("ada", "ada's own password", "198.51.100.8")
    assert door.login("otto", "otto's own password", "198.51.100.8").name == "otto"
    assert {"address 198.51.100.7", "account ada"} <= set(door.throttle.locked_addresses())


def test_guesses_from_separate_processes_share_the_limit(tmp_path: Path) -> None:
    door = gate(tmp_path)
    door.users.add(SHELL, "ada", Role.ADMIN, "ada's own password")
    program = (
        f"import sys; sys.path.insert(0, {str(REPO / 'streamlit')!r})\n"
        "from pathlib import Path\nfrom pki.accounts import Gate, LoginRefused, UserStore\n"
        "from pki.audit import AuditLog\nfrom pki.throttle import LoginThrottle\n"
        f"base = Path({str(tmp_path)!r}); audit = AuditLog(base / 'audit.log')\n"
        "door = Gate(UserStore(base / 'users.json', audit), LoginThrottle(base / 'throttle.json'), audit, None)\n"
        "for i in range(10):\n"
        "    try: door.login('ada', f'guess {i}', '203.0.113.9')\n"
        "    except LoginRefused as exc: print('throttled' if 'Too many' in str(exc) else 'wrong')\n"
    )
    runs = [subprocess.run([sys.executable, "-c", program], capture_output=True, text=True) for _ in range(3)]
    said = "".join(run.stdout for run in runs).split()
    assert said.count("wrong") == PER_ADDRESS and said.count("throttled") == 30 - PER_ADDRESS


def test_the_core_refuses_changes_a_role_does_not_allow(ca: RunningCA, tmp_path: Path, step_calls: list) -> None:
    fleet = gui_fleet(ca, tmp_path)
    issued = fleet.issue(OPERATOR, IssueRequest("site-roles", Kind.CLIENT, "", 30, "EC P-256")).record
    step_calls.clear()
    attempts = {
        "issue": lambda: fleet.issue(VIEWER, IssueRequest("site-roles-2", Kind.CLIENT, "", 30, "EC P-256")),
        "re-issue": lambda: fleet.reissue(VIEWER, issued.serial),
        "revoke": lambda: fleet.revoke(VIEWER, "site-roles", reason_code=4, confirmation="site-roles"),
        "token": lambda: fleet.enroll(VIEWER, "site-roles-3", hours=1, broker="mqtt.ak-sg.com:8883"),
        "bundle": lambda: fleet.bundle(VIEWER, issued.serial),
    }
    for what, attempt in attempts.items():
        with pytest.raises(Forbidden, match="test-viewer \\(viewer\\) may not"):
            attempt()
        assert step_calls == [], what
    assert issued.serial not in fleet.ca.crl_info().revoked
    assert sorted(p.name for p in fleet.settings.certs_dir.iterdir() if not p.name.startswith(".")) == ["site-roles"]
    lines = fleet.audit.entries()
    assert lines[0]["user"] == "test-operator" and lines[0]["address"] == "127.0.0.1"


def chained_log(tmp_path: Path, count: int = 6) -> Path:
    log = AuditLog(tmp_path / "audit.log")
    for i in range(count):
        log.record("issue", actor=OPERATOR, cn=f"site-{i}", serial=f"{i:X}")
    return log.path


def test_the_audit_chain_finds_an_edited_a_removed_and_two_swapped_lines(tmp_path: Path) -> None:
    path = chained_log(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    assert verify([path]).broken is None and verify([path]).head == line_hash(lines[-1].encode())
    assert json.loads(lines[1])["prev"] == line_hash(lines[0].encode()) and json.loads(lines[0])["prev"] == ""

    path.write_text("".join([*lines[:2], lines[2].replace("site-2", "site-9"), *lines[3:]]))
    assert "line 4:" in (verify([path]).broken or "")
    path.write_text("".join([*lines[:2], *lines[3:]]))
    assert "line 3:" in (verify([path]).broken or "")
    path.write_text("".join([*lines[:2], lines[3], lines[2], *lines[4:]]))
    assert "line 3:" in (verify([path]).broken or "")

    path.write_text("".join(lines))
    checked = subprocess.run(
        [sys.executable, "-m", "pki.audit", "verify", str(path)], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "streamlit")},
    )  # fmt: skip
    assert checked.returncode == 0 and "The chain holds." in checked.stdout


def test_the_audit_export_has_every_field_of_the_lines_in_the_order_they_first_appear(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.record("issue", actor=OPERATOR, cn="site-1", serial="0A")
    log.record("alert-test", actor=SHELL, answers={"mail": "ok"}, note='a "quoted", odd\nnote')  # address None
    entries = log.entries(limit=None)
    rows = list(csv.reader(io.StringIO(csv_of(entries).decode())))
    fields = list(dict.fromkeys(key for entry in entries for key in entry))
    assert rows[0] == fields and {"cn", "serial", "answers", "note", "address", "prev"} <= set(fields)
    assert entries[0]["address"] is None and rows[1][fields.index("address")] == ""  # newest first
    assert [dict(zip(fields, row, strict=True)) for row in rows[1:]] == [
        {key: "" if entry.get(key) is None else str(entry[key]) for key in fields} for entry in entries
    ]
    assert any(row[fields.index("note")] == 'a "quoted", odd\nnote' for row in rows[1:])


def test_the_audit_chain_runs_on_through_a_rotation_and_from_older_unchained_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"time": "2026-01-01T00:00:00+00:00", "action": "login", "outcome": "ok"}\n')
    path = chained_log(tmp_path, 3)
    path.rename(tmp_path / "audit.log.1")  # rotated: the new file's first line chains to the old one's last
    chained_log(tmp_path, 2)
    assert verify([tmp_path / "audit.log"]).broken  # alone, its first line points to a line it does not have
    both = verify([tmp_path / "audit.log.1", tmp_path / "audit.log"])
    assert both.broken is None and (both.lines, both.unchained) == (6, 1)


def test_guesses_from_many_addresses_or_between_ones_own_logins_get_no_further(tmp_path: Path) -> None:
    door = gate(tmp_path)
    door.users.add(SHELL, "ada", Role.ADMIN, "ada's own password")
    door.users.add(SHELL, "mallory", Role.VIEWER, "mallory's password")
    checked = 0
    for i in range(200):  # every guess from another address, IPv4 and IPv6 alike
        address = f"192.0.2.{i}" if i % 2 else f"2001:db8:{i:x}::1"
        try:
            door.login("ada", f"guess {i}", address)
        except LoginRefused as exc:
            checked += "Wrong" in str(exc)
    assert checked == PER_ADDRESS  # the account's own limit
    said = []
    for i in range(10):  # one IPv6 /64 is one client, whatever its host part
        try:
            door.login("nobody", f"guess {i}", f"2001:db8:ffff:1::{i:x}")
        except LoginRefused as exc:
            said.append(str(exc))
    assert said.count("Wrong user name or password.") == PER_ADDRESS
    assert all("from this address" in message for message in said[PER_ADDRESS:])

    other = gate(tmp_path / "own")
    other.users.add(SHELL, "ada", Role.ADMIN, "ada's own password")
    other.users.add(SHELL, "mallory", Role.VIEWER, "mallory's password")
    wrong = 0
    for _ in range(10):  # a viewer logging in between guesses does not reset the limits
        for _ in range(4):
            try:
                other.login("ada", "a guess", "198.51.100.20")
            except LoginRefused as exc:
                wrong += "Wrong" in str(exc)
        with contextlib.suppress(LoginRefused):
            other.login("mallory", "mallory's password", "198.51.100.20")
    assert wrong <= PER_ADDRESS


def test_a_failed_login_records_no_name_that_is_not_an_account(tmp_path: Path) -> None:
    door = gate(tmp_path)
    door.users.add(SHELL, "ada", Role.ADMIN, "ada's own password")
    for name in ("my secret password", "ada"):
        with pytest.raises(LoginRefused):
            door.login(name, "wrong", "192.0.2.1")
    log = (tmp_path / "audit.log").read_text()
    assert "my secret password" not in log and '"account": "(not an account)"' in log and '"account": "ada"' in log


def test_a_cut_line_and_a_dated_rotation_keep_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.record("login", actor=OPERATOR)
    with log.path.open("ab") as out:
        out.write(b'{"time": "2026-12-01T00:00:00+00:00", "act')  # a write cut short by a full disk
    log.record("logout", actor=OPERATOR)
    assert verify([log.path]).broken is None
    log.path.rename(tmp_path / "audit.log-20261201")  # logrotate's dateext
    log.record("login", actor=OPERATOR)
    assert rotated_files(log.path) == [tmp_path / "audit.log-20261201"]
    assert verify([*rotated_files(log.path), log.path]).broken is None
