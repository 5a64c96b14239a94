"""The one place that runs the step CLI.

Every call is an argv list (never a shell), reads nothing from a terminal (stdin is /dev/null: a
missing flag would otherwise open /dev/tty and hang), has a timeout, and runs with STEPPATH set and
every other STEP_* variable removed: step reads each flag from a STEP_<FLAG> variable too, so a stray
STEP_CA_URL or STEP_PROVISIONER in the environment would silently change what a call does.
Failures become typed errors that carry the command, exit code and stderr, with a message an
operator understands.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# stderr fragments of a CA that cannot be reached (Go's net errors as step prints them).
_UNREACHABLE = re.compile(
    r"connection refused|no such host|i/o timeout|network is unreachable|no route to host"
    r"|connection reset|context deadline exceeded|server misbehaving|EOF$|handshake failure",
    re.IGNORECASE | re.MULTILINE,
)
# stderr fragments of a CA that answered and said no.
_REFUSED = re.compile(
    r"The request (?:was forbidden by|lacked necessary authorization|could not be completed)"
    r"|adminHandler|is already revoked|unauthorized|forbidden",
    re.IGNORECASE,
)
_NOISE = re.compile(r"^(?:✔|Re-run with STEPDEBUG|Please see the certificate authority logs)")


class StepError(Exception):
    """A step command failed. The message is for operators (the useful part of stderr, see
    reason_from_stderr); `argv`, `returncode` and `stderr` are kept for logs and tests."""

    def __init__(self, message: str, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr

    @property
    def command(self) -> str:
        return " ".join(self.argv)


class StepNotFound(StepError):
    """The step binary is not installed where the settings say."""


class StepTimeout(StepError):
    """The command did not finish in time (a CA that accepts connections but does not answer)."""


class CAUnreachable(StepError):
    """The CA could not be reached at all."""


class CANotReached(CAUnreachable):
    """The connection to the CA failed before the request was sent: the CA cannot have acted on it."""


class CARefused(StepError):
    """The CA answered and refused the request (authorization, policy, lifetime, revoked...)."""


def reason_from_stderr(stderr: str) -> str:
    """The lines of step's stderr worth showing: no colours, no progress ticks, no debug hint."""
    lines = (_ANSI.sub("", line).strip() for line in stderr.splitlines())
    useful = [line for line in lines if line and not _NOISE.match(line)]
    return " ".join(useful) or "no error message"


def clean_env(step_path: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a step call: ours minus STEP_*, plus STEPPATH and what is asked for."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEP")}
    env["STEPPATH"] = str(step_path)
    env.update(extra or {})
    return env


def run_step(
    args: Sequence[str],
    *,
    step_path: Path,
    timeout: float,
    step_bin: str = "step",
    ca_url: str = "",
    extra_env: Mapping[str, str] | None = None,
) -> str:
    """Run `step ARGS...` and return its stdout; raise a StepError subclass on any failure.

    `ca_url` only makes the messages say which CA was tried. `extra_env` carries what must not be an
    argument (a token in STEP_TOKEN): arguments are readable by every local user, the environment only
    by the same user.
    """
    argv = [step_bin, *args]
    step_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    where = f" at {ca_url}" if ca_url else ""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(step_path, extra_env),
            check=False,
        )
    except FileNotFoundError:
        raise StepNotFound(
            f"The step CLI was not found ('{step_bin}'). Install it with scripts/install-step.sh "
            "or set PKI_STEP_BIN to its path.",
            argv,
            None,
            "",
        ) from None
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise StepTimeout(
            f"The CA{where} did not answer within {timeout:g} s (step {args[0] if args else ''} timed out).",
            argv,
            None,
            stderr,
        ) from None
    if done.returncode == 0:
        return done.stdout
    reason = reason_from_stderr(done.stderr)
    if _UNREACHABLE.search(_ANSI.sub("", done.stderr)):
        raise CAUnreachable(f"The CA{where} cannot be reached: {reason}", argv, done.returncode, done.stderr)
    if _REFUSED.search(done.stderr):
        raise CARefused(f"The CA{where} refused the request: {reason}", argv, done.returncode, done.stderr)
    raise StepError(f"step failed: {reason}", argv, done.returncode, done.stderr)
