"""Where the GUI finds the CA, its files and its settings.

Two sources, on purpose: the environment says where things are (they differ between `make run` and
docker compose), and `ca-settings.env`, written by `scripts/init-ca.sh` into the GUI folder, says what
the CA was set up with (public URL, CRL URL, provisioner names), so they are never configured twice.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]


class SettingsError(Exception):
    """The GUI cannot find what the CA set-up should have left for it."""


@dataclass(frozen=True)
class Settings:
    ca_url: str
    """How this GUI reaches step-ca (STEP_CA_URL), e.g. https://step-ca:9000 inside compose."""
    root: Path
    gui_dir: Path
    certs_dir: Path
    step_path: Path
    """The GUI's own STEPPATH, so that no defaults.json or context of a CA folder leaks into calls."""
    step_bin: str
    step_timeout: float
    public_ca_url: str
    crl_url: str
    ca_name: str
    client_provisioner: str
    server_provisioner: str
    default_days: int
    max_days: int
    expiring_days: int
    audit_log: Path
    broker_address: str
    """host:port the sites' bridges dial (a name in the broker's certificate), for bundle snippets."""
    server_warning_days: int
    """Broker certificates cannot renew themselves: warn this many days before they expire."""
    ca_log: Path
    """The CA's issuance journal: its JSON request lines that carry a certificate (scripts/start-ca.sh
    writes it), the source of the ledger."""
    ledger_dir: Path
    site_scripts_dir: Path
    """Where enroll-site.sh and refresh-crl.sh are: offered for download and put into bundles."""
    token_dir: Path
    """Unused enrolment tokens, kept so that one can be cancelled (pki.tokens)."""
    inventory_cache: Path
    """The parsed certificates kept across restarts of the GUI (pki.inventory): a cache, safe to delete."""
    bulk_dir: Path
    """Bulk enrolment jobs: each one's plan and progress (pki.bulk)."""
    ca_db_url: str = ""
    """The CA's PostgreSQL database (a read-only role), when step-ca runs as replicas sharing it: the
    inventory and the spent tokens come from there instead of the journal."""
    ca_db_password_file: Path | None = None
    ca_db_expected: bool = False
    """The CA was set up with its records in PostgreSQL (ca-settings.env says so)."""
    gui_https_identity: str = ""
    """The GUI's own HTTPS certificate's identity with PKI_TLS=ca (pki.https): its key is never handed out."""

    @property
    def intermediate(self) -> Path:
        return self.gui_dir / "intermediate_ca.crt"

    @property
    def enroll_script(self) -> Path:
        return self.site_scripts_dir / "enroll-site.sh"

    @property
    def refresh_script(self) -> Path:
        return self.site_scripts_dir / "refresh-crl.sh"

    def password_file(self, provisioner: str) -> Path:
        return self.gui_dir / f"{provisioner}.password"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=value lines (no quoting, no expansion: init-ca.sh writes them plainly)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value
    return values


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number.") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r} must be at least 1.")
    return value


def data_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("PKI_DATA_DIR") or REPO_DIR / "data")


def audit_path(env: Mapping[str, str]) -> Path:
    """The audit log; known even before the CA is set up, so that logins are recorded."""
    return Path(env.get("PKI_AUDIT_LOG") or data_dir(env) / "audit.log")


def tls_hosts(env: Mapping[str, str]) -> list[str]:
    """The names in the GUI's HTTPS certificate (PKI_TLS_HOSTS, else PKI_PUBLIC_HOSTS), folded as the
    certificate holds them: lower case, no trailing dot."""
    raw = env.get("PKI_TLS_HOSTS") or env.get("PKI_PUBLIC_HOSTS") or ""
    hosts = [h.strip().lower().rstrip(".") for h in raw.split(",")]
    return list(dict.fromkeys(h for h in hosts if h))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment and the CA's ca-settings.env."""
    env = os.environ if env is None else env
    gui_dir = Path(env.get("PKI_GUI_DIR") or data_dir(env) / "gui")
    ca_settings_file = gui_dir / "ca-settings.env"
    if not ca_settings_file.is_file():
        raise SettingsError(
            f"{ca_settings_file} is missing: the CA has not been set up yet "
            "(scripts/init-ca.sh writes it; `make run` calls that script)."
        )
    ca = read_env_file(ca_settings_file)
    required = ("CA_NAME", "PUBLIC_CA_URL", "CRL_URL", "CLIENT_PROVISIONER", "SERVER_PROVISIONER")
    missing = [k for k in required if not ca.get(k)]
    if missing:
        raise SettingsError(f"{ca_settings_file} lacks {', '.join(missing)}.")
    try:
        timeout = float(env.get("PKI_STEP_TIMEOUT") or 20)
    except ValueError:
        timeout = 0
    if not timeout > 0:
        raise SettingsError(f"PKI_STEP_TIMEOUT={env.get('PKI_STEP_TIMEOUT')!r} is not a positive number of seconds.")
    return Settings(
        ca_url=(env.get("STEP_CA_URL") or "https://localhost:9000").rstrip("/"),
        root=Path(env.get("STEP_CA_ROOT") or gui_dir / "root_ca.crt"),
        gui_dir=gui_dir,
        certs_dir=Path(env.get("PKI_CERTS_DIR") or REPO_DIR / "certs"),
        step_path=Path(env.get("PKI_STEPPATH") or data_dir(env) / "gui-step"),
        step_bin=env.get("PKI_STEP_BIN") or "step",
        step_timeout=timeout,
        public_ca_url=ca["PUBLIC_CA_URL"].rstrip("/"),
        crl_url=ca["CRL_URL"],
        ca_name=ca["CA_NAME"],
        client_provisioner=ca["CLIENT_PROVISIONER"],
        server_provisioner=ca["SERVER_PROVISIONER"],
        default_days=_int(ca, "CERT_DEFAULT_DAYS", 365),
        max_days=_int(ca, "CERT_MAX_DAYS", 730),
        expiring_days=_int(env, "PKI_EXPIRING_DAYS", 7),
        audit_log=audit_path(env),
        broker_address=env.get("PKI_BROKER_ADDRESS") or "mqtt.ak-sg.com:8883",
        server_warning_days=_int(env, "PKI_SERVER_WARNING_DAYS", 30),
        ca_log=Path(env.get("PKI_CA_LOG") or data_dir(env) / "logs" / "issued.log"),
        ledger_dir=Path(env.get("PKI_LEDGER_DIR") or data_dir(env) / "ledger"),
        site_scripts_dir=Path(env.get("PKI_SITE_SCRIPTS_DIR") or REPO_DIR / "scripts"),
        token_dir=data_dir(env) / "tokens",
        inventory_cache=data_dir(env) / "cache" / "inventory.bin",
        bulk_dir=data_dir(env) / "bulk",
        ca_db_url=env.get("PKI_CA_DB_URL", "").strip(),
        ca_db_password_file=Path(env["PKI_CA_DB_PASSWORD_FILE"]) if env.get("PKI_CA_DB_PASSWORD_FILE") else None,
        ca_db_expected=bool(ca.get("STEPCA_DB")),
        gui_https_identity=(tls_hosts(env) or [""])[0] if env.get("PKI_TLS") == "ca" else "",
    )
