"""The optional GUI password (PKI_PASSWORD), compared in constant time."""

from __future__ import annotations

import hashlib
import hmac


def password_matches(expected: str, given: str) -> bool:
    """True if `given` is the password. Both are hashed first, so that neither where they differ nor
    the password's length shows in the time taken."""
    return hmac.compare_digest(
        hashlib.sha256(expected.encode("utf-8")).digest(), hashlib.sha256(given.encode("utf-8")).digest()
    )
