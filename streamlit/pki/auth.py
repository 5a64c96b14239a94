"""The optional GUI password (PKI_PASSWORD), compared in constant time."""

from __future__ import annotations

import hmac


def password_matches(expected: str, given: str) -> bool:
    """True if `given` is the password; the time taken does not depend on where they differ."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))
