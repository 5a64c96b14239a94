"""How folders under certs/ are named: the identity, then what became of the folder.

    site-001                 the live folder: the certificate in use for that identity
    site-001.revoked[.N]     its certificate was revoked
    site-001.expired[.N]     it had expired when a new one was issued
    site-001.replaced[.N]    a broker certificate re-issued before it expired (valid until revoked)
    site-001.quarantine[.N]  signed by the CA but could not be filed (see Reconcile)
    site-001.foreign[.N]     issued by another CA (replaced by a new issue, or marked on Reconcile)

The label says what happened to the folder, never what the certificate's status is: that is the
CA's to say (its CRL). Hidden folders (".issue-...") are issuances in progress, ".locks" holds the
lock files of the identities.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pki.model import Status, identity_of


class Label(StrEnum):
    REVOKED = "revoked"
    EXPIRED = "expired"
    REPLACED = "replaced"
    QUARANTINE = "quarantine"
    FOREIGN = "foreign"


LABELS = tuple(label.value for label in Label)
_NAME = re.compile(rf"^(?P<identity>.+?)\.(?P<label>{'|'.join(LABELS)})(?:\.(?P<n>[2-9]|[1-9][0-9]+))?$")


def split_folder(name: str) -> tuple[str, Label | None]:
    """(identity, label) of a folder name; the label is None for a live folder."""
    match = _NAME.match(name)
    if match:
        return identity_of(match["identity"]), Label(match["label"])
    return identity_of(name), None


def named_for(folder: str, identity: str) -> bool:
    """Whether `folder` is one of the identity's names: the live one or one of its archives."""
    named, label = split_folder(folder)
    return named == identity and (label is not None or folder == identity)


def is_hidden(name: str) -> bool:
    return name.startswith(".")


def archive_label(status: Status) -> Label:
    """The label of a folder whose certificate is no longer the identity's current one."""
    return {Status.REVOKED: Label.REVOKED, Status.EXPIRED: Label.EXPIRED, Status.FOREIGN: Label.FOREIGN}.get(
        status, Label.REPLACED
    )
