"""Roles and the actor: who is acting and what their role allows. Every change checks it in the core.

- viewer:   reads every page, downloads the root and the CRL
- operator: also issues, re-issues, revokes, makes enrolment tokens and bundles, reconciles
- admin:    also manages the accounts
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pki.validate import InvalidInput


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    def allows(self, needed: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(needed)


class Forbidden(InvalidInput):
    """The actor's role does not allow this."""


@dataclass(frozen=True)
class Actor:
    """Who is acting, as the audit trail names them."""

    name: str
    role: Role
    address: str = ""
    """The client's address as the GUI saw it ('' for a shell)."""
    via: str = "password"
    """'password', 'bootstrap' (PKI_PASSWORD), 'sso', 'open' (no accounts), 'shell'."""
    session: str = ""
    """The account's session key when it logged in (a password change ends the session)."""


SHELL = Actor("shell", Role.ADMIN, "", "shell")
"""Whoever runs `python -m pki.accounts` on the GUI's host or container: they can read the data folder."""


def require(actor: Actor, needed: Role, what: str) -> None:
    """Raise Forbidden unless `actor` may do `what`."""
    if not actor.role.allows(needed):
        raise Forbidden(f"{actor.name} ({actor.role}) may not {what}: that needs the {needed} role.")
