"""The domain's words, each defined once: identities, certificate types, statuses, revocation reasons."""

from __future__ import annotations

from enum import StrEnum


def identity_of(cn: str) -> str:
    """The site or host a common name stands for. Case and a trailing dot do not make another host
    (DNS ignores both), so they do not make another identity."""
    name = cn.strip()
    return (name[:-1] if name.endswith(".") else name).lower()


class Kind(StrEnum):
    """A certificate's type as its extended key usage says. The GUI issues CLIENT (sites) and SERVER
    (brokers); the other two can only come from elsewhere."""

    CLIENT = "client"
    SERVER = "server"
    BOTH = "client+server"
    OTHER = "other"


ISSUABLE_KINDS = (Kind.CLIENT, Kind.SERVER)


class Status(StrEnum):
    ACTIVE = "active"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    REVOKED = "revoked"
    """On the CA's CRL: nothing else makes a certificate revoked."""
    FOREIGN = "foreign"
    """Issued by another CA (an earlier one, before a reset): this CA cannot vouch for it or revoke it."""
    INVALID = "invalid"
    """The file cannot be read as a certificate."""


VALID_STATUSES = frozenset({Status.ACTIVE, Status.EXPIRING})
"""A certificate in one of these works in TLS: unexpired, issued by this CA, not on its CRL."""

# RFC 5280 reason codes that make sense for a leaf certificate of this CA. certificateHold (6) is
# left out: step-ca cannot lift a hold, so it would be a permanent revocation under a false name.
REVOCATION_REASONS: dict[int, str] = {
    0: "unspecified",
    1: "keyCompromise",
    3: "affiliationChanged",
    4: "superseded",
    5: "cessationOfOperation",
    9: "privilegeWithdrawn",
}


CANARY_PREFIX = "app-pki-canary-"
"""The broker check's own certificates (pki.broker_check): never counted or shown with the fleet's."""
