"""The CA's own PostgreSQL database, read-only: what step-ca replicas sharing it have signed and spent.

With one step-ca, its journal (scripts/start-ca.sh) tells the GUI what the CA signed. With replicas
behind a load balancer each has its own journal, so the truth is their shared database
(PKI_CA_DB_URL, a role that may only SELECT): `x509_certs` (key: the serial in decimal, value: the
certificate's DER) and `used_ott` (key: a spent token's id; the value is the token, of which only the
claims are read, never its signature).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

CONNECT_SECONDS = 5
STATEMENT_MS = 10_000
BATCH = 500


class DatabaseError(OSError):
    """The CA's database cannot be read: the message says why (never the password)."""


@dataclass(frozen=True)
class SpentToken:
    token_id: str
    claims: str
    """The token's payload (base64url JSON): its claims without its signature."""


class CADatabase:
    def __init__(self, url: str, password_file: Path | None = None) -> None:
        self.url = url
        self.password_file = password_file
        self._lock = threading.Lock()
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None
        """One connection, kept (a new one costs a TCP and a SCRAM round trip), made again after an error."""

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg  # here, not at the top: a GUI without the database never pays for loading it

        options = f"-c statement_timeout={STATEMENT_MS}"
        try:
            password = self.password_file.read_text().strip() if self.password_file is not None else None
            if password is None:
                return psycopg.connect(self.url, connect_timeout=CONNECT_SECONDS, autocommit=True, options=options)
            return psycopg.connect(
                self.url, connect_timeout=CONNECT_SECONDS, autocommit=True, options=options, password=password
            )
        except OSError as exc:
            raise DatabaseError(f"The password file of the CA's database cannot be read: {exc}") from None
        except psycopg.Error as exc:
            raise DatabaseError(f"The CA's database cannot be reached: {_first_line(exc)}") from None

    def count(self, table: str) -> int:
        """How many rows `table` (x509_certs or used_ott) holds: step-ca never deletes from either, so an
        unchanged count means nothing new."""
        if table not in ("x509_certs", "used_ott"):
            raise ValueError(table)
        rows = self._query(f"SELECT count(*) FROM {table}")  # noqa: S608 (one of two table names)
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]

    def token_spent(self, token_id: str) -> bool:
        """Whether the CA spent the token with this id (a look-up by its key)."""
        return bool(self._query("SELECT 1 FROM used_ott WHERE nkey = %s", (token_id.encode(),)))

    def serials(self) -> list[int]:
        """The serial of every certificate the CA signed."""
        rows = self._query("SELECT nkey FROM x509_certs")
        return [int(bytes(key)) for (key,) in rows if bytes(key).isdigit()]  # type: ignore[call-overload]

    def certificates(self, serials: Iterable[int]) -> list[bytes]:
        """The DER of the certificates with these serials."""
        wanted = [str(s).encode() for s in serials]
        found: list[bytes] = []
        for start in range(0, len(wanted), BATCH):
            rows = self._query("SELECT nvalue FROM x509_certs WHERE nkey = ANY(%s)", (wanted[start : start + BATCH],))
            found.extend(bytes(value) for (value,) in rows)  # type: ignore[call-overload]
        return found

    def spent_tokens(self) -> list[SpentToken]:
        """Every token the CA spent (enrolment, signing, revocation alike), by id, with its claims."""
        rows = self._query(
            "SELECT convert_from(nkey, 'UTF8'), split_part(convert_from(nvalue, 'UTF8'), '.', 2) FROM used_ott"
        )
        return [SpentToken(str(token_id), str(claims)) for token_id, claims in rows]

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        import psycopg

        with self._lock:
            if self._connection is None or self._connection.closed:
                self._connection = self._connect()
            try:
                return list(self._connection.execute(sql, params).fetchall())
            except psycopg.errors.UndefinedTable:
                return []  # step-ca makes its tables when it first needs them
            except psycopg.Error as exc:
                self._connection.close()  # made again by the next question
                self._connection = None
                raise DatabaseError(f"The CA's database cannot be read: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
