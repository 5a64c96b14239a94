"""Bulk enrolment: many sites from one CSV file or a pasted list of names, as a job that survives
interruptions.

A job is planned first (every row validated: its name, its SANs, duplicates in the file, sites that
already have a valid certificate or an unused token) and nothing happens before the operator starts
it. A started job is a folder under data/bulk/: `job.json` (the plan, written once) and `progress.jsonl`
(one line per row finished). Its rows are done by a few threads of the GUI process, each row under its
site's lock through the same Registrar as a single issue or token, so a site never gets a second valid
certificate. Interrupted (the CA stopped, the GUI restarted), the job resumes from its progress file;
a row whose line was lost is recognised by the audit trail, whose lines name the job.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pki.audit import rotated_files
from pki.enrollment import Enrollment, create_enrollment, validate_token_hours
from pki.issuing import (
    ActiveCertificateExists,
    IssueRequest,
    IssueUncertain,
    Registrar,
    TokenPending,
    ValidityUnknown,
    certificate_in_folder,
)
from pki.keys import DEFAULT_KEY_TYPE
from pki.model import Kind
from pki.roles import Actor, Role, require
from pki.step import CAUnreachable, StepTimeout
from pki.store import IdentityBusy, lock_within
from pki.tokens import token_ref_of
from pki.validate import InvalidInput, validate_cn, validate_days, validate_sans

MAX_ROWS = 20_000
MAX_BYTES = 5_000_000
"""The largest list read (20,000 rows of a site, SANs and a note fit in far less)."""
UNCERTAIN_TRIES = 3
"""Signing attempts of one row whose outcome the CA left open (its key kept in quarantine each time)
before the row is given up as failed."""
NOTE_MAX = 200
WORKERS = 4
"""Rows done at once: the CA signs in a few ms, so most of a row is waiting on the network and the disk."""
RETRY_SECONDS = 3.0
"""How often a job waiting for the CA (down, or a site locked by another change) tries again."""
TEMPLATE = (
    "site,sans,note\nsite-001,,Warehouse north\nsite-002,site-002.example.internal,Dock 4 (SANs: space-separated)\n"
)
_SPLIT = re.compile(r"[\s;,]+")
_JOB_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")
_SITE_HEADERS = ("site", "name", "cn", "common name", "site name")
_SAN_HEADERS = ("sans", "san", "subject alternative names")
_NOTE_HEADERS = ("note", "notes", "tag", "tags", "comment")


class Mode(StrEnum):
    TOKENS = "tokens"
    """An enrolment token per site: the site makes its key with enroll-site.sh."""
    CERTIFICATES = "certificates"
    """A key and certificate per site, made here and handed out as encrypted bundles."""


class Outcome(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class SourceRow:
    line: int
    site: str
    sans: str
    note: str


@dataclass(frozen=True)
class PlannedRow:
    line: int
    typed: str
    identity: str
    """"" when the name is not a valid site name."""
    sans: tuple[str, ...] = ()
    note: str = ""
    problem: str = ""
    """Why the row is wrong as written (it is never done)."""
    skip: str = ""
    """Why the site needs nothing (a valid certificate, an unused token)."""

    @property
    def todo(self) -> bool:
        return not self.problem and not self.skip


@dataclass(frozen=True)
class Plan:
    mode: Mode
    lifetime: int
    """Hours of each token, or days of each certificate."""
    broker: str
    rows: tuple[PlannedRow, ...]
    source_name: str
    source_sha256: str
    earlier_job: str = ""
    """A job that was started from the same file before."""

    @property
    def todo(self) -> list[PlannedRow]:
        return [r for r in self.rows if r.todo]

    @property
    def problems(self) -> list[PlannedRow]:
        return [r for r in self.rows if r.problem]

    @property
    def skipped(self) -> list[PlannedRow]:
        return [r for r in self.rows if r.skip]


@dataclass(frozen=True)
class RowResult:
    line: int
    identity: str
    outcome: Outcome
    serial: str = ""
    token_ref: str = ""
    why: str = ""


@dataclass
class JobStatus:
    id: str
    mode: Mode
    created: dt.datetime
    created_by: str
    source_name: str
    total: int
    """Rows to do (the plan's skipped and wrong rows are not counted)."""
    results: dict[int, RowResult]
    finished: bool
    running: bool
    waiting: str = ""
    """Why the running job is waiting (the CA down), empty while it makes progress."""
    problem: str = ""
    """Why the last run here ended before the job did, or why the job cannot be read at all."""
    rate: float = 0.0
    """Rows per second in this run so far."""
    planned: tuple[PlannedRow, ...] = ()

    @property
    def counts(self) -> dict[Outcome, int]:
        counts = dict.fromkeys(Outcome, 0)
        for result in self.results.values():
            counts[result.outcome] += 1
        return counts

    @property
    def left(self) -> int:
        return self.total - len(self.results)

    @property
    def seconds_left(self) -> float | None:
        return self.left / self.rate if self.rate > 0 else None


def read_sites(text: str) -> list[SourceRow]:
    """The rows of a CSV file (a header naming `site`, optionally `sans` and `note`, in any order; or
    those three columns in that order) or of a pasted list (one site per line). Blank lines and lines
    starting with '#' are skipped. At most MAX_BYTES and MAX_ROWS: anything larger is refused before it
    is all read."""
    if len(text) > MAX_BYTES:
        raise InvalidInput(f"The list is {len(text) // 1_000_000} MB: at most {MAX_BYTES // 1_000_000} MB are read.")
    rows: list[tuple[int, list[str]]] = []
    try:
        for number, cells in enumerate(csv.reader(io.StringIO(text.lstrip("\ufeff"))), start=1):
            if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            rows.append((number, cells))
            if len(rows) > MAX_ROWS + 1:
                raise InvalidInput(f"More than {MAX_ROWS} rows: at most {MAX_ROWS} sites are enrolled in one job.")
    except csv.Error as exc:
        raise InvalidInput(f"The file cannot be read as CSV (line {number}): {exc}.") from None
    columns = {"site": 0, "sans": 1, "note": 2}
    header = [c.strip().lower() for c in rows[0][1]] if rows else []
    if any(h in (*_SITE_HEADERS, *_SAN_HEADERS, *_NOTE_HEADERS) for h in header):
        rows.pop(0)
        site_column = next((i for i, h in enumerate(header) if h in _SITE_HEADERS), None)
        if site_column is None:
            raise InvalidInput(
                f"The first line looks like a header ({', '.join(header)}) but names no site column: call it "
                "'site' (see the template)."
            )
        columns = {
            "site": site_column,
            "sans": next((i for i, h in enumerate(header) if h in _SAN_HEADERS), -1),
            "note": next((i for i, h in enumerate(header) if h in _NOTE_HEADERS), -1),
        }

    def cell(cells: list[str], name: str) -> str:
        i = columns[name]
        return cells[i].strip() if 0 <= i < len(cells) else ""

    return [SourceRow(n, cell(cells, "site"), cell(cells, "sans"), cell(cells, "note")) for n, cells in rows]


def plan(
    source: list[SourceRow],
    *,
    mode: Mode,
    lifetime: int | str,
    max_days: int,
    broker: str,
    valid_certificates: dict[str, str],
    unused_tokens: dict[str, dt.datetime],
    source_name: str,
    source_sha256: str,
    earlier_job: str = "",
) -> Plan:
    """Every row checked before anything happens. `valid_certificates`: identity -> what its valid
    certificate is (serial, expiry); `unused_tokens`: identity -> when its latest unused token expires."""
    if not source:
        raise InvalidInput("The file or list holds no site.")
    if len(source) > MAX_ROWS:
        raise InvalidInput(f"{len(source)} rows: at most {MAX_ROWS} sites are enrolled in one job.")
    lifetime = _lifetime(mode, lifetime, max_days)
    rows: list[PlannedRow] = []
    first_line: dict[str, int] = {}
    for row in source:
        try:
            identity = validate_cn(row.site)
        except InvalidInput as exc:
            rows.append(PlannedRow(row.line, row.site, "", note=row.note, problem=str(exc)))
            continue
        planned = PlannedRow(row.line, row.site, identity, note=row.note)
        try:
            sans = tuple(validate_sans([s for s in _SPLIT.split(row.sans) if s]))
            planned = PlannedRow(row.line, row.site, identity, sans, row.note)
            if len(row.note) > NOTE_MAX or not row.note.isprintable():
                raise InvalidInput(
                    f"The note has {len(row.note)} characters or a control character (at most {NOTE_MAX})."
                )
        except InvalidInput as exc:
            rows.append(PlannedRow(row.line, row.site, identity, note=row.note, problem=str(exc)))
            continue
        if identity in first_line:
            problem = f"The same site as line {first_line[identity]}."
            rows.append(PlannedRow(row.line, row.site, identity, sans, row.note, problem=problem))
            continue
        first_line[identity] = row.line
        if identity in valid_certificates:
            planned = PlannedRow(*_fields(planned), skip=f"Has a valid certificate ({valid_certificates[identity]}).")
        elif identity in unused_tokens:
            until = f"{unused_tokens[identity]:%Y-%m-%d %H:%M} UTC"
            planned = PlannedRow(*_fields(planned), skip=f"Has an unused enrolment token (until {until}).")
        rows.append(planned)
    return Plan(mode, lifetime, broker, tuple(rows), source_name, source_sha256, earlier_job)


def _fields(row: PlannedRow) -> tuple[int, str, str, tuple[str, ...], str]:
    return row.line, row.typed, row.identity, row.sans, row.note


def _lifetime(mode: Mode, value: int | str, max_days: int) -> int:
    return validate_days(value, max_days) if mode is Mode.CERTIFICATES else validate_token_hours(value)


def source_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class BulkJobs:
    """The jobs under data/bulk/ and the threads of this process that work on them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._plans: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    # -- files -------------------------------------------------------------------------------------

    def _job_dir(self, job_id: str) -> Path:
        if not _JOB_ID.fullmatch(job_id):
            raise InvalidInput(f"{job_id!r} is not a bulk job.")
        return self.folder / job_id

    def create(self, actor: Actor, planned: Plan) -> str:
        """Write the job's plan (once, complete or not at all); returns its id."""
        require(actor, Role.OPERATOR, "enrol sites in bulk")
        if not planned.todo:
            raise InvalidInput("No site in the list needs enrolling: nothing to start.")
        job_id = f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        job_dir = self._job_dir(job_id)
        job_dir.mkdir(parents=True, mode=0o700)
        body = {
            "id": job_id, "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "created_by": actor.name,
            "mode": planned.mode.value, "lifetime": planned.lifetime, "broker": planned.broker,
            "source_name": planned.source_name, "source_sha256": planned.source_sha256,
            "rows": [asdict(r) for r in planned.rows],
        }  # fmt: skip
        temporary = job_dir / "job.json.tmp"
        with open(temporary, "w") as out:
            json.dump(body, out)
            out.flush()
            os.fsync(out.fileno())
        temporary.rename(job_dir / "job.json")
        return job_id

    def _read_job(self, job_id: str) -> dict[str, Any]:
        """The job's plan (kept while its file is unchanged); InvalidInput when it cannot be read."""
        path = self._job_dir(job_id) / "job.json"
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            cached = self._plans.get(job_id)
            if cached and cached[0] == key:
                return cached[1]
            job = json.loads(path.read_bytes())
            if not isinstance(job, dict) or not isinstance(job.get("rows"), list):
                raise ValueError("not a job")
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"Bulk job {job_id} cannot be read ({exc}).") from None
        self._plans[job_id] = (key, job)
        return job

    def job_ids(self) -> list[str]:
        """Every job, newest first."""
        try:
            names = [p.name for p in self.folder.iterdir() if _JOB_ID.fullmatch(p.name) and (p / "job.json").exists()]
        except FileNotFoundError:
            return []
        return sorted(names, reverse=True)

    def same_source(self, source_sha256: str) -> str:
        """The newest job started from the same file, if any."""
        for job_id in self.job_ids():
            try:
                if self._read_job(job_id).get("source_sha256") == source_sha256:
                    return job_id
            except (OSError, ValueError):
                continue
        return ""

    def results(self, job_id: str) -> dict[int, RowResult]:
        """The rows finished so far, by line (a cut last line, from a stop mid-write, is ignored)."""
        results: dict[int, RowResult] = {}
        try:
            with open(self._job_dir(job_id) / "progress.jsonl", "rb") as lines:
                for line in lines:
                    try:
                        entry = json.loads(line)
                        result = RowResult(**{**entry, "outcome": Outcome(entry["outcome"])})
                    except (ValueError, TypeError, KeyError):  # a damaged line: that row is done again
                        continue
                    results[result.line] = result
        except FileNotFoundError:
            pass
        return results

    def status(self, job_id: str) -> JobStatus:
        """What the job did so far; a job whose files cannot be read is one with `problem` and no rows."""
        try:
            job = self._read_job(job_id)
            planned = tuple(PlannedRow(**{**r, "sans": tuple(r["sans"])}) for r in job["rows"])
            mode, created = Mode(job["mode"]), dt.datetime.fromisoformat(job["created"])
        except (InvalidInput, KeyError, TypeError, ValueError) as exc:
            why = str(exc) if isinstance(exc, InvalidInput) else f"Bulk job {job_id} cannot be read ({exc})."
            return JobStatus(job_id, Mode.TOKENS, dt.datetime.min.replace(tzinfo=dt.UTC), "", "", 0, {}, False,
                             False, problem=why)  # fmt: skip
        results = self.results(job_id)
        with self._lock:
            run = self._runs.get(job_id)
            running = run is not None and run.thread.is_alive()
        running = running or self._locked_elsewhere(job_id)
        return JobStatus(
            id=job_id, mode=mode, created=created,
            created_by=str(job.get("created_by", "")), source_name=str(job.get("source_name", "")),
            total=sum(1 for r in planned if r.todo), results=results,
            finished=(self._job_dir(job_id) / "finished").exists(), running=running,
            waiting=run.waiting if run and running else "", rate=run.rate() if run and running else 0.0,
            planned=planned, problem=run.problem if run and not running else "",
        )  # fmt: skip

    def _locked_elsewhere(self, job_id: str) -> bool:
        """Whether another process works on the job now (it holds the job's lock file)."""
        try:
            fd = os.open(self._job_dir(job_id) / "run.lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    # -- running -----------------------------------------------------------------------------------

    def start(self, actor: Actor, job_id: str, registrar: Callable[[Actor], Registrar], *, max_days: int) -> bool:
        """Work on the job in the background (also to resume it). False when it is finished or running."""
        require(actor, Role.OPERATOR, "enrol sites in bulk")
        job = self._read_job(job_id)
        with self._lock:
            run = self._runs.get(job_id)
            if run is not None and run.thread.is_alive():
                return False
            if (self._job_dir(job_id) / "finished").exists():
                return False
            run = _Run(self, job, actor, registrar, max_days)
            self._runs[job_id] = run
            run.thread.start()
        return True

    def stop(self, job_id: str) -> None:
        """Ask the job's threads to stop after the rows in hand (the job can be resumed)."""
        with self._lock:
            run = self._runs.get(job_id)
        if run is not None:
            run.stopping.set()

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        with self._lock:
            run = self._runs.get(job_id)
        if run is not None:
            run.thread.join(timeout)

    def _append(self, job_id: str, result: RowResult) -> None:
        line = (json.dumps({k: v for k, v in asdict(result).items() if v != ""}) + "\n").encode()
        with self._lock, open(self._job_dir(job_id) / "progress.jsonl", "a+b") as out:
            end = out.seek(0, os.SEEK_END)
            if end and (out.seek(end - 1), out.read(1))[1] != b"\n":
                line = b"\n" + line  # a write cut short by a stop: never glue a line onto its remains
            out.write(line)

    # -- what a finished row hands out -------------------------------------------------------------

    def done_rows(self, job_id: str) -> list[RowResult]:
        return sorted((r for r in self.results(job_id).values() if r.outcome is Outcome.DONE), key=lambda r: r.line)


@dataclass
class _Run:
    """One run of a job in this process: its threads, and what the page shows of it."""

    jobs: BulkJobs
    job: dict[str, Any]
    actor: Actor
    registrar_for: Callable[[Actor], Registrar]
    max_days: int
    stopping: threading.Event = field(default_factory=threading.Event)
    waiting: str = ""
    problem: str = ""
    """Why the run ended before the job did (its progress could not be written, another process has it)."""
    started: float = field(default_factory=time.monotonic)
    finished_here: int = 0
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._main, name=f"bulk-{self.job['id']}", daemon=True)
        self._counter = threading.Lock()

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.finished_here / elapsed if elapsed > 0 else 0.0

    def _main(self) -> None:
        job_id = self.job["id"]
        lock_path = self.jobs._job_dir(job_id) / "run.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self.problem = f"its lock file cannot be made: {exc.strerror or exc}"
            return
        try:
            # A page asking whether the job runs holds a shared lock for an instant: wait that out.
            if not lock_within(fd, 2.0):
                self.problem = "another GUI process works on this job"
                return
            self._run(job_id)
        except Exception as exc:  # the run's own trouble: shown on the page, the job resumable
            self.problem = f"{type(exc).__name__}: {exc}"
        finally:
            os.close(fd)

    def _run(self, job_id: str) -> None:
        registrar = self.registrar_for(self.actor)
        registrar.job = job_id
        done = self.jobs.results(job_id)
        mode = Mode(self.job["mode"])
        rows = [PlannedRow(**{**r, "sans": tuple(r["sans"])}) for r in self.job["rows"]]
        todo = [r for r in rows if r.todo and r.line not in done]
        ours = _done_by_job(registrar, job_id, mode)
        audit = registrar.audit
        if not done:
            audit.record("bulk-start", actor=self.actor, job=job_id, mode=mode.value, rows=len(todo))
        else:
            audit.record("bulk-resume", actor=self.actor, job=job_id, mode=mode.value, rows=len(todo))

        def one(row: PlannedRow) -> None:
            if self.stopping.is_set():
                return
            result = self._row(registrar, mode, row, ours)
            if result is None:
                return
            try:
                self.jobs._append(job_id, result)
            except OSError as exc:  # the row is done; a resume learns it from the audit trail
                self.problem = f"the progress file cannot be written: {exc.strerror or exc}"
                self.stopping.set()
                return
            self.waiting = ""  # rows are done again
            if result.outcome is not Outcome.DONE:
                audit.record("bulk-row", result.outcome.value, actor=self.actor, job=job_id, line=row.line,
                             cn=row.identity, why=result.why)  # fmt: skip
            with self._counter:
                self.finished_here += 1

        with ThreadPoolExecutor(WORKERS, thread_name_prefix=f"bulk-{job_id}") as pool:
            list(pool.map(one, todo))
        results = self.jobs.results(job_id)
        if all(r.line in results for r in rows if r.todo):
            counts = {o.value: sum(1 for r in results.values() if r.outcome is o) for o in Outcome}
            (self.jobs._job_dir(job_id) / "finished").write_text(json.dumps(counts) + "\n")
            audit.record("bulk-finish", actor=self.actor, job=job_id, counts=counts)

    def _row(
        self,
        registrar: Registrar,
        mode: Mode,
        row: PlannedRow,
        ours: dict[str, str],
    ) -> RowResult | None:
        """Do one row, waiting while the CA is down; None when the run is stopped first."""
        if row.identity in ours:  # done by this job before an interruption lost its progress line
            found = ours[row.identity]
            return RowResult(row.line, row.identity, Outcome.DONE, **_ref(mode, found))
        uncertain = 0
        while not self.stopping.is_set():
            try:
                if mode is Mode.CERTIFICATES:
                    issued = registrar.issue(
                        IssueRequest(row.identity, Kind.CLIENT, list(row.sans), self.job["lifetime"], DEFAULT_KEY_TYPE),
                        max_days=self.max_days, refuse_if_token=True,
                    )  # fmt: skip
                    return RowResult(row.line, row.identity, Outcome.DONE, serial=issued.record.serial_hex)
                enrollment: Enrollment = create_enrollment(
                    registrar, row.identity, hours=self.job["lifetime"], broker=self.job["broker"], sans=row.sans,
                    only_token=True,
                )  # fmt: skip
                return RowResult(row.line, row.identity, Outcome.DONE, token_ref=token_ref_of(enrollment.token))
            except (CAUnreachable, StepTimeout, IdentityBusy, ValidityUnknown) as exc:
                self.waiting = str(exc)  # the CA down (or a CRL it cannot give): try again
                self.stopping.wait(RETRY_SECONDS)
                continue
            except IssueUncertain as exc:
                # The CA went away while it had the request; the key is kept in quarantine. If the CA did sign,
                # the next try finds that certificate and files it from there.
                uncertain += 1
                if uncertain >= UNCERTAIN_TRIES:
                    why = f"The CA left open whether it signed, {uncertain} times: {exc}"
                    return RowResult(row.line, row.identity, Outcome.FAILED, why=why)
                self.waiting = str(exc)
                self.stopping.wait(RETRY_SECONDS)
                continue
            except (ActiveCertificateExists, TokenPending) as exc:
                filed = (
                    _file_interrupted(registrar, row.identity, self.job["created"])
                    if isinstance(exc, ActiveCertificateExists) and mode is Mode.CERTIFICATES
                    else ""
                )
                if filed:
                    return RowResult(row.line, row.identity, Outcome.DONE, serial=filed)
                return RowResult(row.line, row.identity, Outcome.SKIPPED, why=str(exc))
            except Exception as exc:  # every other answer is this row's alone: recorded, the job goes on
                return RowResult(row.line, row.identity, Outcome.FAILED, why=str(exc) or type(exc).__name__)
        return None


def _file_interrupted(registrar: Registrar, identity: str, since: str) -> str:
    """The serial of the identity's certificate that an issue of this job stopped before filing (the
    process ended after the CA signed, before the audit trail heard of it; the CA stopped before its
    answer came), filed now as Reconcile would; or "". Only a valid certificate signed since the job
    began counts: an older quarantine is the operator's, left to Reconcile."""
    began = dt.datetime.fromisoformat(since) - dt.timedelta(minutes=1)
    for folder, staged in registrar.store.interrupted():
        if staged != identity:
            continue
        record = certificate_in_folder(registrar.store, registrar.inventory, folder, identity)
        if record is None or record.error or record.not_before < began:
            continue
        with registrar.store.locked(identity):
            valid = {r.serial for r in registrar.state(identity).valid()}
        if record.serial not in valid:
            continue
        try:
            registrar.file(folder)
        except InvalidInput:
            continue
        return record.serial_hex
    return ""


def _ref(mode: Mode, found: str) -> dict[str, str]:
    return {"serial": found} if mode is Mode.CERTIFICATES else {"token_ref": found}


def _done_by_job(registrar: Registrar, job_id: str, mode: Mode) -> dict[str, str]:
    """What the audit trail says this job already did: identity -> serial (certificates) or token
    reference (tokens). The trail's line is written the moment the CA answered."""
    action = "sign" if mode is Mode.CERTIFICATES else "token"
    found: dict[str, str] = {}
    for entry in _entries_of_job(registrar.audit.path, job_id):
        if entry.get("action") == action and entry.get("outcome") == "ok":
            found[str(entry.get("cn", ""))] = str(entry.get("serial" if action == "sign" else "token_ref", ""))
    return found


def _entries_of_job(path: Path, job_id: str) -> Iterator[dict[str, Any]]:
    """The audit lines naming the job, in the trail and its rotated parts."""
    needle = f'"job": "{job_id}"'.encode()
    for part in [*rotated_files(path), path]:
        try:
            with open(part, "rb") as lines:
                for line in lines:
                    if needle in line:
                        try:
                            yield json.loads(line)
                        except ValueError:
                            continue
        except FileNotFoundError:
            continue


def csv_of(rows: Iterable[Iterable[str]]) -> bytes:
    """CSV of the rows (the first is the header)."""
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()
