"""Rules for what an operator types, checked before anything runs.

A common name becomes a folder name under certs/ and an argument of the step CLI, so it is held to
a strict alphabet: no path separators, no leading dot or dash, no shell metacharacters. Rejections
raise InvalidInput with a message fit to show as it is.
"""

from __future__ import annotations

import ipaddress
import re

CN_MAX = 64  # X.509 upper bound for a common name (RFC 5280, ub-common-name)
_CN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
# Folder suffixes that mark revoked and superseded certificates (see inventory.py).
RESERVED_SUFFIXES = (".revoked", ".expired", ".replaced")


class InvalidInput(ValueError):
    """Input that must be corrected by the operator; the message says how."""


def validate_cn(cn: str) -> str:
    """Return the common name stripped of surrounding blanks, or raise InvalidInput."""
    cn = cn.strip()
    if not cn:
        raise InvalidInput("The common name is empty.")
    if len(cn) > CN_MAX:
        raise InvalidInput(f"The common name has {len(cn)} characters; at most {CN_MAX} are allowed.")
    if not _CN.fullmatch(cn) or ".." in cn:
        raise InvalidInput(
            f"The common name {cn!r} may hold only letters, digits, dots, dashes and underscores, "
            "must start with a letter or digit and may not contain '..'."
        )
    lowered = cn.lower()
    for suffix in RESERVED_SUFFIXES:
        if lowered.endswith(suffix) or f"{suffix}." in lowered:
            raise InvalidInput(f"The common name {cn!r} contains {suffix!r}, which marks archived folders.")
    return cn


def _looks_like_ip(value: str) -> bool:
    return ":" in value or all(part.isdigit() for part in value.split("."))


def validate_san(value: str) -> str:
    """One SAN: an IPv4/IPv6 address or a DNS name (a leading '*.' wildcard allowed)."""
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
    name = san[2:] if san.startswith("*.") else san
    labels = name.rstrip(".").split(".")
    if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InvalidInput(
            f"{san!r} is neither an IP address nor a DNS name (labels of letters, digits and dashes, "
            "separated by dots)."
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
