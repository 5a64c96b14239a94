"""Enrolment tokens after they were made: their state from the CA's records, and the means to cancel one.

A one-time token cannot be withdrawn from step-ca: it is spent by its first use. So an unused token is
cancelled by spending it at the CA in a request the CA refuses to sign (pki.ca.StepCA.spend_token): from
then on the CA refuses the token, and no certificate came of it. To do that later, the token is kept in
the GUI's data folder (tokens/{ID}, 0600) until it is spent, cancelled or expired. It is no more secret
there than what is beside it: the provisioner password the GUI holds mints any token.

Which token was spent comes from the CA's journal (pki.ledger: the CA logs the token of each sign
request, scripts/start-ca.sh keeps only its id): a token is *used* when the CA signed a certificate
with it, *cancelled* when the CA spent it without signing, *expired* when neither happened in time.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pki.audit import MadeToken

_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def token_id_of(token: str) -> str:
    """The "jti" claim of a token (read, not verified: the token is one this GUI just made)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        token_id = str(claims["jti"])
    except (IndexError, ValueError, KeyError, TypeError):
        return ""
    return token_id if _TOKEN_ID.fullmatch(token_id) else ""


class TokenState(StrEnum):
    UNUSED = "unused"
    USED = "used"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TokenStatus:
    made: MadeToken
    state: TokenState
    serial: str = ""
    """The serial (hex) of the certificate the CA signed with it, when used."""


def token_states(
    made: Iterable[MadeToken], spent: Mapping[str, str], cancelled: set[str], now: dt.datetime
) -> list[TokenStatus]:
    """Each token made, newest first, with its state: the CA's journal first, then the clock."""
    result = []
    for token in made:
        serial = spent.get(token.token_id) if token.token_id else None
        if serial:
            status = TokenStatus(token, TokenState.USED, serial)
        elif serial is not None or token.token_id in cancelled:
            status = TokenStatus(token, TokenState.CANCELLED)
        elif token.expires <= now:
            status = TokenStatus(token, TokenState.EXPIRED)
        else:
            status = TokenStatus(token, TokenState.UNUSED)
        result.append(status)
    return sorted(result, key=lambda s: s.made.made, reverse=True)


class TokenVault:
    """The unused tokens, one file each (0600), so that one can be cancelled."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, token_id: str) -> Path:
        if not _TOKEN_ID.fullmatch(token_id):
            raise ValueError(f"not a token id: {token_id!r}")
        return self.folder / token_id

    def keep(self, token_id: str, token: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(token_id)
        tmp = path.with_name(f".{token_id}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, token.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def get(self, token_id: str) -> str | None:
        try:
            return self._path(token_id).read_text().strip() or None
        except (FileNotFoundError, ValueError):
            return None

    def drop(self, token_id: str) -> None:
        """Forget a token that can no longer be used (spent, cancelled or expired)."""
        try:
            self._path(token_id).unlink(missing_ok=True)
        except ValueError:
            return
