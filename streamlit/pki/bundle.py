"""The ZIP bundle handed to whoever installs a certificate: root, certificate, key, and what to do.

A client bundle carries enroll-site.sh, which installs it on a site with the bridge it writes for token
enrolments too (its --print-bridge text is what README.txt shows). A server bundle carries a Mosquitto
broker configuration, its ACL, refresh-crl.sh and install-broker.sh, which installs them all, and the
EMQX 5 equivalent.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import secrets
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pki.inventory import CertRecord
from pki.keys import key_id
from pki.model import Kind
from pki.validate import InvalidInput

FLEET_READER = "fleet-reader"
"""The client certificate CN a back-end uses to read every site's messages (never to write them)."""
BROKER_CONF = "app-pki.conf"
BROKER_ACL = "app-pki.acl"


@dataclass(frozen=True)
class BundleContext:
    """What a bundle says beyond its certificate: where sites dial, where the CA and its CRL are."""

    ca_name: str
    ca_url: str
    fingerprint: str
    crl_url: str
    broker_address: str
    scripts_dir: Path
    """Holds enroll-site.sh and refresh-crl.sh, which go into the bundles."""


def site_topic_prefix(cn: str) -> str:
    """Where a site's messages land on the broker; the broker confines the site to it by its CN."""
    return f"sites/{cn}/"


_SITE_MARKER = "app-pki-site-name-marker"
"""A site name no real site has, substituted by the real one (site names are [a-z0-9._-], nothing to escape)."""


def site_bridge_config(scripts_dir: Path, cn: str, broker_address: str) -> str:
    """The bridge enroll-site.sh writes for site `cn`, in its own words: one text for both ways in. The
    script is asked once per broker address (and version of the script), not once per bundle."""
    script = scripts_dir / "enroll-site.sh"
    try:
        stat = script.stat()
    except OSError as exc:
        raise InvalidInput(f"enroll-site.sh cannot write the bridge of {cn}: {exc}") from None
    return _bridge_template(script, stat.st_mtime_ns, stat.st_size, broker_address).replace(_SITE_MARKER, cn)


@functools.lru_cache(maxsize=16)
def _bridge_template(script: Path, _mtime_ns: int, _size: int, broker_address: str) -> str:
    done = subprocess.run(
        ["bash", str(script), "--print-bridge", "--site", _SITE_MARKER, "--broker", broker_address],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise InvalidInput(f"enroll-site.sh cannot write the bridge: {done.stderr.strip()}")
    return done.stdout


def mosquitto_broker_config(
    cn: str,
    *,
    cert_dir: str = "/etc/mosquitto/certs",
    crl_file: str = "/etc/mosquitto/crl.pem",
    acl_file: str = f"/etc/mosquitto/{BROKER_ACL}",
    bind: str = "0.0.0.0",  # noqa: S104 (text of a broker config: a broker listens for its sites)
    port: int = 8883,
) -> str:
    """A Mosquitto broker listener equivalent to the EMQX one: mTLS, identity from the CN, CRL."""
    return f"""\
# Mosquitto as the broker: mutual TLS; a client's identity is its certificate's CN.
per_listener_settings false
listener {port} {bind}
cafile {cert_dir}/ca.crt
certfile {cert_dir}/{cn}.crt
keyfile {cert_dir}/{cn}.key
require_certificate true
use_identity_as_username true
tls_version tlsv1.2
# Kept current by app-pki-refresh-crl (refresh-crl.sh), which restarts Mosquitto when a client was revoked.
crlfile {crl_file}
acl_file {acl_file}
"""


def mosquitto_acl(readers: tuple[str, ...] = (FLEET_READER,)) -> str:
    """Each site may publish and subscribe only under its own prefix; `readers` may read all sites."""
    lines = ["# A client's username is its certificate's CN: a site is confined to sites/<CN>/."]
    for reader in readers:
        lines += [f"# {reader} (a back-end's client certificate) reads every site and writes nowhere.",
                  f"user {reader}", "topic read sites/#", ""]  # fmt: skip
    lines += [f"pattern readwrite {site_topic_prefix('%u')}#", ""]
    return "\n".join(lines)


def broker_install_commands(cn: str, crl_url: str) -> str:
    """Install a server bundle on a Debian broker running Mosquitto (install-broker.sh checks everything,
    then installs and restarts Mosquitto once). README.md shows these very lines."""
    return f"""\
unzip {cn}.zip -d {cn} && cd {cn}
sudo bash install-broker.sh --crl-url {crl_url}
"""


def fleet_reader_command(broker_address: str) -> str:
    """How a back-end holding the fleet-reader bundle reads every site's messages."""
    host, _, port = broker_address.rpartition(":")
    return f"""\
unzip {FLEET_READER}.zip -d {FLEET_READER} && cd {FLEET_READER}
openssl pkey -in {FLEET_READER}.key -out {FLEET_READER}.plain.key    # asks for the passphrase; written 0600
mosquitto_sub -h {host} -p {port} --cafile ca.crt --cert {FLEET_READER}.crt --key {FLEET_READER}.plain.key \\
  -t 'sites/#' -v
"""


def site_install_commands(cn: str, context: BundleContext) -> str:
    return f"""\
unzip {cn}.zip enroll-site.sh
sudo bash enroll-site.sh --bundle {cn}.zip --broker {context.broker_address} \\
  --ca-url {context.ca_url} --fingerprint {context.fingerprint}
"""


def emqx_acl() -> str:
    return f"""\
%% acl.conf: each site (username = certificate CN) only under its own prefix.
{{allow, all, all, ["{site_topic_prefix("${username}")}#"]}}.
{{deny, all}}.
"""


def emqx_listener_config(cn: str, cert_dir: str = "/opt/emqx/etc/certs") -> str:
    return f"""\
# EMQX 5 (emqx.conf): mutual TLS on 8883; only clients with a valid, unrevoked certificate of this CA.
listeners.ssl.default {{
  bind = "0.0.0.0:8883"
  ssl_options {{
    cacertfile = "{cert_dir}/ca.crt"
    certfile = "{cert_dir}/{cn}.crt"
    keyfile = "{cert_dir}/{cn}.key"
    verify = verify_peer
    fail_if_no_peer_cert = true
    # Fetch the CRL from the URL inside each client certificate (refreshed every 15 minutes by default).
    enable_crl_check = true
    versions = ["tlsv1.3", "tlsv1.2"]
  }}
}}
# The site's identity is its certificate's CN:
mqtt.peer_cert_as_username = cn
mqtt.peer_cert_as_clientid = cn
"""


def _indented(text: str) -> str:
    return "".join(f"  {line}\n" if line else "\n" for line in text.splitlines())


def bundle_readme(record: CertRecord, context: BundleContext) -> str:
    cn = record.cn
    expires = record.not_after.strftime("%Y-%m-%d %H:%M UTC")
    head = f"""\
{cn}: {record.kind.value} certificate of the {context.ca_name}
Serial {record.serial_hex}, valid until {expires}.

Files
  ca.crt       the CA's root certificate: verifies the other side
  {cn}.crt     this certificate, followed by the intermediate CA certificate
  {cn}.key     the private key, encrypted with the passphrase app-pki showed when it made this
               bundle (it is in no file). Decrypt it only where it is installed: the commands below
               do (openssl pkey ... asks for the passphrase and writes the plain key 0600).
"""
    if record.kind is Kind.SERVER:
        return (
            head
            + f"""\
  {BROKER_CONF}  the Mosquitto broker configuration: mutual TLS on 8883, CRL, ACL
  {BROKER_ACL}  each site only under sites/<its CN>/; {FLEET_READER} reads every site
  refresh-crl.sh  keeps the broker's copy of the CRL ({context.crl_url}) current
  install-broker.sh  installs all of it

Install on a Debian broker with Mosquitto (apt-get install mosquitto unzip openssl curl), in the folder
holding {cn}.zip:

{_indented(broker_install_commands(cn, context.crl_url))}
install-broker.sh checks everything first: the passphrase opens the key (openssl asks for it), the key
belongs to the certificate, the CRL can be fetched and is this CA's. Any failure changes nothing. Then it
installs the files in /etc/mosquitto (the key 0600 for the mosquitto user), the CRL, and
/usr/local/sbin/app-pki-refresh-crl run every 15 minutes (--schedule cron without systemd), and restarts
Mosquitto. When a new CRL revokes a client, the refresh restarts Mosquitto so that a revoked site that is
connected is dropped. To apply a revocation at once: sudo systemctl start app-pki-crl-refresh

A back-end that reads every site: issue it a client certificate named {FLEET_READER}, then

{_indented(fleet_reader_command(context.broker_address))}
Or, with EMQX 5 as the broker:
  install -m 0644 ca.crt {cn}.crt /opt/emqx/etc/certs/
  openssl pkey -in {cn}.key -out /opt/emqx/etc/certs/{cn}.key && chown emqx: /opt/emqx/etc/certs/{cn}.key
then add to emqx.conf and restart EMQX:

{emqx_listener_config(cn)}
and confine each site to its own topics (etc/acl.conf, with authorization.no_match = deny):

{emqx_acl()}
EMQX fetches the CRL itself. To drop a revoked site that is still connected: DELETE
/api/v5/clients/<site> on the EMQX API.

Server certificates cannot be renewed over mTLS: before {expires} re-issue one in app-pki
(View Certificates, Re-issue), install its bundle the same way, then revoke this one.
"""
        )
    return (
        head
        + f"""\
  enroll-site.sh  installs all of it on the site, with the bridge and daily renewal

Install on the site (Debian with Mosquitto and the step CLI), in the folder holding {cn}.zip:

{_indented(site_install_commands(cn, context))}
It asks for the passphrase, checks everything before it changes anything, installs the files in
/etc/mosquitto/certs/ (key 0600, owned by mosquitto), writes this bridge to
/etc/mosquitto/conf.d/app-pki-bridge.conf, sets up daily renewal and restarts Mosquitto:

{_indented(site_bridge_config(context.scripts_dir, cn, context.broker_address))}
Check it: on the site, publish a message

  mosquitto_pub -h localhost -p 1883 -t hello -m 'from {cn}'

and the back-end reading the broker ({FLEET_READER}) sees "{site_topic_prefix(cn)}hello from {cn}".
Next time, enrol sites by token (GUI: Enroll a Site): then the key never leaves the site.
"""
    )


def new_passphrase() -> str:
    """A bundle's passphrase: 120 random bits, in groups a person can read out and type."""
    raw = secrets.token_urlsafe(20).replace("-", "x").replace("_", "y")
    return "-".join(raw[i : i + 5] for i in range(0, 25, 5))


def make_bundle(record: CertRecord, *, root_pem: bytes, context: BundleContext, passphrase: str) -> bytes:
    """ZIP with ca.crt, {cn}.crt, {cn}.key, README.txt and what installs them. The key is encrypted
    with `passphrase` (PKCS#8): the ZIP alone, wherever it ends up, gives no usable key. The key must be
    the certificate's own: a key that does not match is never handed out."""
    key_path = record.path.with_suffix(".key")
    try:
        key = load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError:
        key = None
    if key is None or key_id(key.public_key()) != record.key_id:
        raise InvalidInput(f"{key_path} is not the private key of certificate {record.serial_hex}: no bundle.")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.encode()),
    )
    files: dict[str, tuple[bytes, int]] = {
        "ca.crt": (root_pem, 0o644),
        f"{record.cn}.crt": (record.path.read_bytes(), 0o644),
        f"{record.cn}.key": (key_pem, 0o600),
        "README.txt": (bundle_readme(record, context).encode(), 0o644),
    }
    if record.kind is Kind.SERVER:
        files[BROKER_CONF] = (mosquitto_broker_config(record.cn).encode(), 0o644)
        files[BROKER_ACL] = (mosquitto_acl().encode(), 0o644)
        files["refresh-crl.sh"] = ((context.scripts_dir / "refresh-crl.sh").read_bytes(), 0o755)
        files["install-broker.sh"] = ((context.scripts_dir / "install-broker.sh").read_bytes(), 0o755)
    else:
        files["enroll-site.sh"] = ((context.scripts_dir / "enroll-site.sh").read_bytes(), 0o755)
    return zip_files(files)


def zip_files(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A ZIP of name -> (content, mode); unzip restores each mode (a key stays 0600)."""
    buffer = io.BytesIO()
    stamp = dt.datetime.now(dt.UTC).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()
