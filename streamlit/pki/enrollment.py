"""Enrolling a site by token: the private key is made on the site and never leaves it.

The operator names the site and how long the token may wait; the GUI shows one command to paste on
the site, which runs scripts/enroll-site.sh with the token.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from dataclasses import dataclass

from pki.issuing import Registrar, TokenPending, refuse_if_active
from pki.roles import Role, require
from pki.tokens import TokenVault, token_ref_of
from pki.validate import InvalidInput, validate_cn, validate_san

MAX_TOKEN_HOURS = 168  # a bearer credential: a week is plenty to get to a site
_BROKER = re.compile(r"(?P<host>[^:\s]+):(?P<port>[0-9]{1,5})")


@dataclass(frozen=True)
class Enrollment:
    site: str
    token: str
    expires: dt.datetime
    ca_url: str
    fingerprint: str
    broker: str
    earlier_tokens: tuple[dt.datetime, ...] = ()
    """Expiry of tokens made earlier for this site that the CA has not spent: each used would be a certificate."""
    normalised_from: str | None = None
    """The site name as typed, when its identity differs from it."""

    def command(self) -> str:
        """What the operator pastes on the site, in the folder holding the downloaded enroll-site.sh (run
        with bash: a download is not executable). The token goes in on standard input, so it is never
        in the process list while the script runs."""
        args = [
            "sudo", "bash", "enroll-site.sh",
            "--site", self.site,
            "--ca-url", self.ca_url,
            "--fingerprint", self.fingerprint,
            "--broker", self.broker,
            "--token-file", "-",
        ]  # fmt: skip
        return f"{shlex.join(args)} <<'TOKEN'\n{self.token}\nTOKEN"


def validate_broker(address: str) -> str:
    """host:port of the broker as the sites dial it (a name or address in its certificate)."""
    match = _BROKER.fullmatch(address.strip())
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise InvalidInput(f"The broker address {address!r} is not like mqtt.ak-sg.com:8883.")
    validate_san(match["host"])
    return address.strip()


def validate_token_hours(hours: int | float | str) -> int:
    """How long a token may wait, in whole hours from 1 to MAX_TOKEN_HOURS."""
    try:
        lifetime_hours = int(str(hours).strip())
    except ValueError:
        raise InvalidInput(f"The token lifetime {hours!r} is not a whole number of hours.") from None
    if not 1 <= lifetime_hours <= MAX_TOKEN_HOURS:
        raise InvalidInput(f"The token must live from 1 to {MAX_TOKEN_HOURS} hours (got {lifetime_hours}).")
    return lifetime_hours


def create_enrollment(
    registrar: Registrar,
    site: str,
    *,
    hours: int | float | str,
    broker: str,
    sans: tuple[str, ...] = (),
    only_token: bool = False,
) -> Enrollment:
    """A token for `site`, minted under the site's lock once no valid certificate of it exists.
    `only_token`: refuse (TokenPending) when the site has an unused token already, instead of warning."""
    require(registrar.actor, Role.OPERATOR, "make enrolment tokens")
    cn = validate_cn(site)
    lifetime_hours = validate_token_hours(hours)
    broker = validate_broker(broker)
    ca, audit = registrar.ca, registrar.audit
    with registrar.store.locked(cn):
        refuse_if_active(registrar.state(cn))
        earlier = registrar.unused_tokens(cn)
        if earlier and only_token:
            raise TokenPending(f"{cn} has an unused enrolment token (until {earlier[-1]:%Y-%m-%d %H:%M} UTC).")
        lifetime = dt.timedelta(hours=lifetime_hours)
        token = ca.enrollment_token(cn, lifetime, sans)
        expires = dt.datetime.now(dt.UTC) + lifetime
        token_ref = token_ref_of(token)
        if not token_ref:
            raise InvalidInput("The token step made has no id: it is not handed out. Look at the step version.")
        TokenVault(ca.settings.token_dir).keep(token_ref, token)  # so that it can be cancelled
        # The token itself is a credential: the audit records that it was made and its id, never the token.
        audit.record(
            "token", actor=registrar.actor, cn=cn, expires=expires.isoformat(timespec="seconds"), broker=broker,
            token_ref=token_ref, job=registrar.job,
        )  # fmt: skip
    typed = site.strip()
    return Enrollment(
        cn, token, expires, ca.settings.public_ca_url, ca.root_fingerprint(), broker, earlier,
        typed if typed != cn else None,
    )  # fmt: skip
