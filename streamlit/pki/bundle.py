"""The ZIP bundle handed to whoever installs a certificate: root, certificate, key, and what to do.

A client bundle carries a Mosquitto bridge configuration for the site; a server bundle an EMQX 5
ssl listener with peer verification and the CRL check.
"""

from __future__ import annotations

import datetime as dt
import io
import secrets
import zipfile

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from pki.inventory import CertRecord
from pki.keys import key_id
from pki.model import Kind
from pki.validate import InvalidInput


def site_topic_prefix(cn: str) -> str:
    """Where a site's messages land on the broker; the broker confines the site to it by its CN."""
    return f"sites/{cn}/"


def mosquitto_bridge_config(cn: str, broker_address: str, cert_dir: str = "/etc/mosquitto/certs") -> str:
    host, sep, port = broker_address.rpartition(":")
    if not sep:
        host, port = broker_address, "8883"
    return f"""\
# Mosquitto bridge of site {cn} to the broker, mutual TLS through HAProxy (TCP passthrough).
connection {cn}
address {host}:{port}
remote_clientid {cn}
bridge_protocol_version mqttv311
cleansession false
bridge_cafile {cert_dir}/ca.crt
bridge_certfile {cert_dir}/{cn}.crt
bridge_keyfile {cert_dir}/{cn}.key
bridge_tls_version tlsv1.2
bridge_insecure false
# Local topic X is published on the broker as {site_topic_prefix(cn)}X.
topic # out 1 "" {site_topic_prefix(cn)}
"""


def mosquitto_broker_config(
    cn: str,
    *,
    cert_dir: str = "/etc/mosquitto/certs",
    crl_file: str = "/etc/mosquitto/crl.pem",
    acl_file: str = "/etc/mosquitto/app-pki.acl",
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
# Kept current by scripts/refresh-crl.sh (restart Mosquitto to drop revoked clients already connected).
crlfile {crl_file}
acl_file {acl_file}
"""


def mosquitto_acl(readers: tuple[str, ...] = ()) -> str:
    """Each site may publish and subscribe only under its own prefix; `readers` may read all sites."""
    lines = ["# A site's username is its certificate's CN: it is confined to sites/<CN>/."]
    for reader in readers:
        lines += [f"user {reader}", "topic read sites/#", ""]
    lines += [f"pattern readwrite {site_topic_prefix('%u')}#", ""]
    return "\n".join(lines)


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


def bundle_readme(record: CertRecord, *, broker_address: str, crl_url: str, ca_name: str) -> str:
    cn = record.cn
    expires = record.not_after.strftime("%Y-%m-%d %H:%M UTC")
    head = f"""\
{cn}: {record.kind.value} certificate of the {ca_name}
Serial {record.serial_hex}, valid until {expires}.

Files
  ca.crt       the CA's root certificate: verifies the other side
  {cn}.crt     this certificate, followed by the intermediate CA certificate
  {cn}.key     the private key, encrypted with the passphrase app-pki showed once when it made this
               bundle (it is in no file). Decrypt it only where it is installed, keep it 0600 there.

Decrypt it (either asks for the passphrase):
  step crypto change-pass {cn}.key --no-password --insecure --out {cn}.key.plain
  openssl pkey -in {cn}.key -out {cn}.key.plain
and install {cn}.key.plain as {cn}.key below.

Revocation: brokers check the CRL at {crl_url}
"""
    if record.kind is Kind.SERVER:
        return (
            head
            + f"""
Install on the broker (EMQX 5)
  install -m 0644 ca.crt {cn}.crt /opt/emqx/etc/certs/
  install -m 0600 -o emqx {cn}.key /opt/emqx/etc/certs/
then add to emqx.conf and restart EMQX:

{emqx_listener_config(cn)}
and confine each site to its own topics (etc/acl.conf, with authorization.no_match = deny):

{emqx_acl()}
To drop a revoked site that is still connected: DELETE /api/v5/clients/<site> on the EMQX API.

Or, with Mosquitto as the broker (mosquitto.conf, then the ACL file it names):

{mosquitto_broker_config(cn)}
{mosquitto_acl()}
Keep the CRL file current with scripts/refresh-crl.sh every 15 minutes (--install-schedule).

Server certificates cannot be renewed over mTLS: before {expires} re-issue one in app-pki
(View Certificates, Re-issue).
"""
        )
    return (
        head
        + f"""
Install on the site (Debian with Mosquitto)
  Easiest: scripts/enroll-site.sh --bundle {cn}.zip (it asks for the passphrase, does all of the below
  and sets up renewal). Easier still next time: enrol sites by token, the key never leaves the site.
  By hand:
  install -d -m 0755 /etc/mosquitto/certs
  install -m 0644 ca.crt {cn}.crt /etc/mosquitto/certs/
  install -m 0600 -o mosquitto {cn}.key /etc/mosquitto/certs/
  then write /etc/mosquitto/conf.d/bridge-{cn}.conf and restart Mosquitto:

{mosquitto_bridge_config(cn, broker_address)}
Check the connection:  mosquitto_sub -v -t '$SYS/broker/connection/#'
"""
    )


def new_passphrase() -> str:
    """A bundle's passphrase: 120 random bits, in groups a person can read out and type."""
    raw = secrets.token_urlsafe(20).replace("-", "x").replace("_", "y")
    return "-".join(raw[i : i + 5] for i in range(0, 25, 5))


def make_bundle(
    record: CertRecord, *, root_pem: bytes, broker_address: str, crl_url: str, ca_name: str, passphrase: str
) -> bytes:
    """ZIP with ca.crt, {cn}.crt, {cn}.key and README.txt (four files). The key is encrypted with
    `passphrase` (PKCS#8): the ZIP alone, wherever it ends up, gives no usable key. The key must be
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
    readme = bundle_readme(record, broker_address=broker_address, crl_url=crl_url, ca_name=ca_name)
    buffer = io.BytesIO()
    stamp = dt.datetime.now(dt.UTC).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        files = {
            "ca.crt": (root_pem, 0o644),
            f"{record.cn}.crt": (record.path.read_bytes(), 0o644),
            f"{record.cn}.key": (key_pem, 0o600),
            "README.txt": (readme.encode(), 0o644),
        }
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (0o100000 | mode) << 16  # unzip restores the mode: the key stays 0600
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()
