"""Single sign-on through any OpenID Connect provider, with Streamlit's own st.login.

Configured by the environment (PKI_SSO_*). The GUI's launcher (pki.serve) turns it into the [auth]
section of a Streamlit secrets file under the data folder, 0600, with a cookie secret made once and kept
there. The role of someone who signed in comes from this module alone: the values of a configured ID
token claim (`groups` by default) or their e-mail address, matched against three allow-lists. Someone
who matches none is refused; accounts with passwords keep working next to SSO.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pki.roles import Role
from pki.validate import InvalidInput


@dataclass(frozen=True)
class SsoConfig:
    issuer: str
    client_id: str
    client_secret: str
    redirect_uri: str
    scopes: str
    role_claim: str
    allowed: dict[Role, frozenset[str]]
    """Per role, the claim values or e-mail addresses (lower case) that give it."""
    label: str
    prompt: str = "login"
    """OIDC `prompt`: 'login' makes the provider ask for the password at every sign-in to the CA's GUI
    (a browser's lingering provider session is not enough); Streamlit would otherwise send
    'select_account', which not every provider supports."""

    @property
    def metadata_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def _names(value: str) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in value.split(",") if v.strip())


def sso_config(env: Mapping[str, str]) -> SsoConfig | None:
    """The SSO settings, None when PKI_SSO_ISSUER is not set; InvalidInput naming what is missing."""
    issuer = env.get("PKI_SSO_ISSUER", "").strip()
    if not issuer:
        return None
    secret_file = env.get("PKI_SSO_CLIENT_SECRET_FILE", "").strip()
    try:
        secret = Path(secret_file).read_text(encoding="utf-8").strip() if secret_file else ""
    except OSError as exc:
        raise InvalidInput(f"PKI_SSO_CLIENT_SECRET_FILE cannot be read: {exc}") from None
    secret = secret or env.get("PKI_SSO_CLIENT_SECRET", "").strip()
    config = SsoConfig(
        issuer=issuer,
        client_id=env.get("PKI_SSO_CLIENT_ID", "").strip(),
        client_secret=secret,
        redirect_uri=env.get("PKI_SSO_REDIRECT_URI", "").strip(),
        scopes=env.get("PKI_SSO_SCOPES", "").strip() or "openid profile email",
        role_claim=env.get("PKI_SSO_ROLE_CLAIM", "").strip() or "groups",
        allowed={
            Role.ADMIN: _names(env.get("PKI_SSO_ADMINS", "")),
            Role.OPERATOR: _names(env.get("PKI_SSO_OPERATORS", "")),
            Role.VIEWER: _names(env.get("PKI_SSO_VIEWERS", "")),
        },
        label=env.get("PKI_SSO_LABEL", "").strip() or "Log in with single sign-on",
        prompt=env.get("PKI_SSO_PROMPT", "").strip() or "login",
    )
    missing = [
        name
        for name, value in (
            ("PKI_SSO_CLIENT_ID", config.client_id),
            ("PKI_SSO_CLIENT_SECRET_FILE", config.client_secret),
            ("PKI_SSO_REDIRECT_URI", config.redirect_uri),
        )
        if not value
    ]
    if missing:
        raise InvalidInput(f"PKI_SSO_ISSUER is set, so single sign-on also needs {', '.join(missing)}.")
    if not config.redirect_uri.endswith("/oauth2callback"):
        raise InvalidInput("PKI_SSO_REDIRECT_URI must be the GUI's address ending in /oauth2callback.")
    if not any(config.allowed.values()):
        raise InvalidInput("Single sign-on needs at least one of PKI_SSO_ADMINS, PKI_SSO_OPERATORS, PKI_SSO_VIEWERS.")
    return config


def role_for(claims: Mapping[str, object], config: SsoConfig) -> Role | None:
    """The highest role the ID token's claims give, or None: the role claim's values (a list or one
    string) and the verified e-mail address are looked up in the allow-lists."""
    raw = claims.get(config.role_claim)
    values = {str(v).lower() for v in (raw if isinstance(raw, list) else [raw] if raw else [])}
    email = verified_email(claims)
    if email:
        values.add(email)
    for role in (Role.ADMIN, Role.OPERATOR, Role.VIEWER):
        if values & config.allowed[role]:
            return role
    return None


def verified_email(claims: Mapping[str, object]) -> str | None:
    """The e-mail address, lower case, only when the provider says it verified it (a missing or a string
    'false' email_verified is not a yes: someone could have typed any address)."""
    email = claims.get("email")
    verified = claims.get("email_verified")
    if isinstance(email, str) and email and (verified is True or verified == "true"):
        return email.lower()
    return None


def display_name(claims: Mapping[str, object]) -> str:
    """The name the audit trail gives someone who signed in: the verified e-mail, else `sso:` and the
    provider's subject (never a name they chose, which could pass for someone else's)."""
    return verified_email(claims) or f"sso:{claims.get('sub') or '(no subject)'}"


class SsoSessions:
    """What the identity cookie cannot know: when a sign-in was last used and whether it logged out.

    Streamlit keeps the ID token's claims in a signed cookie for 30 days and reads it when a tab opens, so
    every tab and every copy of the cookie is that sign-in. One JSON file in the data folder, under a
    flock, shared by every tab, process and GUI replica: idle time and logout apply to all of them, and a
    sign-in older than the maximum age must go back to the provider (who then says what the groups are)."""

    def __init__(self, path: Path, idle_seconds: float, max_age_seconds: float) -> None:
        self.path = path
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds

    @staticmethod
    def key(claims: Mapping[str, object]) -> str:
        raw = f"{claims.get('iss')}|{claims.get('sub')}|{claims.get('iat')}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    @contextlib.contextmanager
    def _entries(self) -> Iterator[dict[str, dict[str, float]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 1 << 22)
            try:
                entries = json.loads(raw) if raw else {}
            except ValueError:
                entries = {}  # a damaged file ends every SSO session: they sign in again
            yield entries
            data = json.dumps(entries).encode()
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, data)
        finally:
            os.close(fd)

    def use(self, claims: Mapping[str, object], now: float | None = None) -> str | None:
        """Record that this sign-in acts now; or say why it may not (it logged out, sat idle, or is too old)."""
        now = time.time() if now is None else now
        issued = claims.get("iat")
        if not isinstance(issued, int | float):
            return "the provider's ID token has no sign-in time (iat)"
        if now - issued > self.max_age_seconds:
            return f"the sign-in is older than {self.max_age_seconds / 3600:g} hours"
        key = self.key(claims)
        with self._entries() as entries:
            entry = entries.get(key)
            if entry and entry.get("ended"):
                return "this sign-in logged out"
            if entry and now - entry["last"] > self.idle_seconds:
                entries[key] = {"last": entry["last"], "ended": now}
                return f"it was idle for more than {self.idle_seconds / 60:g} minutes"
            entries[key] = {"last": now}
            for old in [k for k, e in entries.items() if now - e["last"] > self.max_age_seconds]:
                del entries[old]
        return None

    def end(self, claims: Mapping[str, object]) -> None:
        """This sign-in logged out: no tab and no copy of its cookie acts again."""
        now = time.time()
        with self._entries() as entries:
            entries[self.key(claims)] = {"last": now, "ended": now}


def _cookie_secret(folder: Path) -> str:
    """A secret signing the identity cookie, made once (sessions survive a restart) and kept 0600."""
    path = folder / "sso-cookie-secret"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(32)
    try:
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as out:
            out.write(value)
    except FileExistsError:  # another replica made it first
        return path.read_text(encoding="utf-8").strip()
    return value


def write_secrets(config: SsoConfig | None, folder: Path) -> Path:
    """Streamlit's secrets file with the [auth] section (empty without SSO), 0600 in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "streamlit-secrets.toml"
    lines = ["# Written by app-pki at start-up from PKI_SSO_*; changes here are lost."]
    if config is not None:
        entries = {
            "redirect_uri": config.redirect_uri,
            "cookie_secret": _cookie_secret(folder),
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "server_metadata_url": config.metadata_url,
        }
        lines.append("[auth]")
        # JSON strings are valid TOML basic strings (quotes and backslashes escaped).
        lines += [f"{key} = {json.dumps(value)}" for key, value in entries.items()]
        lines += [
            "[auth.client_kwargs]",
            f"scope = {json.dumps(config.scopes)}",
            f"prompt = {json.dumps(config.prompt)}",
        ]
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".streamlit-secrets-")  # 0600; one per replica
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path
