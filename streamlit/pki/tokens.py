"""Enrolment tokens after they were made: their state from the CA's records, and the means to cancel one.

A one-time token cannot be withdrawn from step-ca: it is spent by its first use. So an unused token is
cancelled by spending it at the CA in a request the CA refuses to sign (pki.ca.StepCA.spend_token): from
then on the CA refuses the token, and no certificate came of it. To do that later, the token is kept in
the GUI's data folder (tokens/{ID}, 0600) until it is spent, cancelled or expired. It is no more secret
there than what is beside it: the provisioner password the GUI holds mints any token.

Which token was spent comes from the CA's journal (pki.ledger: the CA logs the token of each sign
request, scripts/start-ca.sh keeps a spent one without its signature; it is named by a hash of its id,
`token_ref_of`): a token is *used* when the
CA signed a certificate with it, *cancelled* when the CA spent it without signing, *expired* when
neither happened in time. A certificate signed with a token the journal could not name (a token sent
in another serialisation) counts as the use of the unused tokens of its site made before it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pki.audit import MadeToken
from pki.ledger import SpentTokens, token_ref_of

_TOKEN_REF = re.compile(r"[0-9a-f]{32}")
_GRACE = dt.timedelta(minutes=1)


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
    made: Iterable[MadeToken], spent: SpentTokens, cancelled: set[str], now: dt.datetime
) -> list[TokenStatus]:
    """Each token made, newest first, with its state: the CA's journal first, then the clock."""
    made = sorted(made, key=lambda t: t.made)
    unnamed = sorted(spent.unnamed, key=lambda u: u[1])
    result = []
    for token in made:
        serial = spent.by_ref.get(token.token_ref) if token.token_ref else None
        if serial is None and token.token_ref not in cancelled:
            # A certificate of this site signed with a token the journal could not name, while this one was
            # usable (a minute's grace for clocks): its use, unless an earlier token was already given it.
            match = next(
                (u for u in unnamed if u[0] == token.site and token.made - _GRACE <= u[1] <= token.expires), None
            )
            if match:
                unnamed.remove(match)
                serial = match[2]
        if serial:
            status = TokenStatus(token, TokenState.USED, serial)
        elif serial is not None or token.token_ref in cancelled:
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

    def _path(self, token_ref: str) -> Path:
        if not _TOKEN_REF.fullmatch(token_ref):
            raise ValueError(f"not a token id: {token_ref!r}")
        return self.folder / token_ref

    def keep(self, token_ref: str, token: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(token_ref)
        tmp = path.with_name(f".{token_ref}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, token.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def get(self, token_ref: str) -> str | None:
        try:
            return self._path(token_ref).read_text().strip() or None
        except (FileNotFoundError, ValueError):
            return None

    def drop(self, token_ref: str) -> None:
        """Forget a token that can no longer be used (spent, cancelled or expired)."""
        try:
            self._path(token_ref).unlink(missing_ok=True)
        except ValueError:
            return


__all__ = ["TokenState", "TokenStatus", "TokenVault", "token_ref_of", "token_states"]
