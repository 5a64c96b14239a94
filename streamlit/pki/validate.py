"""Rules for what an operator types, checked before anything runs.

A common name names an identity: a site or a host. Case and a trailing dot do not make another
host (DNS ignores both), so the identity is the CN folded to lower case without its trailing dot;
that is the CN the GUI issues, the folder name under certs/, and what "one active certificate"
counts. It becomes a folder name and a step argument, so it is held to a strict alphabet: no path
separators, no leading dot or dash, no shell metacharacters, and never a name that reads as an
archived folder. Rejections raise InvalidInput with a message fit to show as it is.
"""

from __future__ import annotations

import ipaddress
import re

from pki.folders import LABELS
from pki.model import identity_of

CN_MAX = 64  # X.509 upper bound for a common name (RFC 5280, ub-common-name)
_CN = re.compile(r"[a-z0-9][a-z0-9._-]*")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_ARCHIVE_PART = re.compile(rf"\.(?:{'|'.join(LABELS)})(?:\.|$)")


class InvalidInput(ValueError):
    """Input that must be corrected by the operator; the message says how."""


def validate_cn(cn: str) -> str:
    """The identity of `cn` (see identity_of), or InvalidInput saying what is wrong with it."""
    identity = identity_of(cn)
    shown = cn.strip()
    if not identity:
        raise InvalidInput("The common name is empty.")
    if len(identity) > CN_MAX:
        raise InvalidInput(f"The common name has {len(identity)} characters; at most {CN_MAX} are allowed.")
    if not _CN.fullmatch(identity) or ".." in identity or identity.endswith("."):
        raise InvalidInput(
            f"The common name {shown!r} may hold only letters, digits, dots, dashes and underscores, "
            "must start with a letter or digit, and may not contain '..' or end with a dot."
        )
    archived = _ARCHIVE_PART.search(identity)
    if archived:
        raise InvalidInput(
            f"The common name {shown!r} contains {archived.group(0).rstrip('.')!r}, which marks archived "
            "folders under certs/."
        )
    return identity


def _looks_like_ip(value: str) -> bool:
    return ":" in value or all(part.isdigit() for part in value.split("."))


def validate_san(value: str) -> str:
    """One SAN: an IPv4/IPv6 address or a DNS name; a wildcard only as '*.' before two or more labels."""
    san = value.strip()
    if not san:
        raise InvalidInput("A subject alternative name is empty.")
    if any(ch.isspace() for ch in san):
        raise InvalidInput(f"The subject alternative name {san!r} contains spaces.")
    if san.endswith(".") or "%" in san:
        raise InvalidInput(f"{san!r} is not a host name or an address (no trailing dot, no %zone).")
    if _looks_like_ip(san):
        try:
            return str(ipaddress.ip_address(san))
        except ValueError:
            raise InvalidInput(f"{san!r} is not a valid IP address.") from None
    wildcard = san.startswith("*.") or san == "*"
    name = san[2:] if wildcard else san
    labels = name.split(".")
    if wildcard and len(labels) < 2:
        raise InvalidInput(
            f"The wildcard {san!r} would match every host of a top-level domain: a wildcard needs at least "
            "two labels after '*.' (like *.sites.example.com)."
        )
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InvalidInput(
            f"{san!r} is neither an IP address nor a DNS name (labels of letters, digits and dashes, "
            "separated by dots; a wildcard only as a leading '*.')."
        )
    return san.lower()


def validate_sans(lines: str | list[str]) -> list[str]:
    """SANs from text with one per line (or a list); blank lines skipped, duplicates dropped."""
    items = lines.splitlines() if isinstance(lines, str) else lines
    sans: list[str] = []
    for item in items:
        if item.strip():
            san = validate_san(item)
            if san not in sans:
                sans.append(san)
    return sans


def validate_days(days: object, max_days: int) -> int:
    """A validity in whole days, from 1 up to the CA's maximum."""
    if isinstance(days, bool) or not isinstance(days, int | float | str):
        raise InvalidInput("The validity must be a whole number of days.")
    try:
        value = int(str(days).strip())
    except ValueError:
        raise InvalidInput(f"The validity {days!r} is not a whole number of days.") from None
    if value < 1:
        raise InvalidInput(f"The validity must be at least 1 day (got {value}).")
    if value > max_days:
        raise InvalidInput(f"The validity of {value} days is above the CA's maximum of {max_days} days.")
    return value
