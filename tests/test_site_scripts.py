"""enroll-site.sh and refresh-crl.sh: every check fails clearly and changes nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import OPERATOR, REPO, RunningCA, free_port, gui_fleet, tool_env
from pki.ca import StepCA
from pki.enrollment import Enrollment
from pki.fleet import Fleet
from pki.issuing import IssueRequest
from pki.model import Kind

ENROLL = REPO / "scripts" / "enroll-site.sh"
REFRESH = REPO / "scripts" / "refresh-crl.sh"


def tree(prefix: Path) -> dict[str, str]:
    """Every file under `prefix` with its content hash: 'changes nothing' means this is unchanged."""
    if not prefix.exists():
        return {}
    return {
        str(p.relative_to(prefix)): hashlib.sha256(p.read_bytes()).hexdigest() for p in prefix.rglob("*") if p.is_file()
    }


def enroll(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """enroll-site.sh with no terminal to ask on (its own session) and nothing on standard input."""
    return subprocess.run(
        ["bash", str(ENROLL), *args], capture_output=True, text=True, timeout=120, env=env or tool_env(),
        stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


@pytest.fixture
def gui(ca: RunningCA, tmp_path: Path) -> Fleet:
    return gui_fleet(ca, tmp_path / "gui")


def token_for(gui: Fleet, site: str) -> Enrollment:
    return gui.enroll(OPERATOR, site, hours=1, broker="127.0.0.1:8883")


def args_of(enrollment: Enrollment, prefix: Path, *extra: str) -> list[str]:
    return ["--site", enrollment.site, "--ca-url", enrollment.ca_url, "--fingerprint", enrollment.fingerprint,
            "--broker", enrollment.broker, "--token", enrollment.token, "--prefix", str(prefix), *extra]  # fmt: skip


def test_dry_run_then_run_then_rerun(gui: Fleet, tmp_path: Path) -> None:
    enrollment = token_for(gui, "site-701")
    prefix = tmp_path / "site"
    dry = enroll(*args_of(enrollment, prefix, "--dry-run"))
    assert dry.returncode == 0, dry.stderr
    assert "Checks passed" in dry.stdout and "would" in dry.stdout
    assert tree(prefix) == {}

    first = enroll(*args_of(enrollment, prefix))
    assert first.returncode == 0, first.stderr
    files = tree(prefix)
    assert set(files) >= {
        "etc/mosquitto/certs/ca.crt", "etc/mosquitto/certs/site-701.crt", "etc/mosquitto/certs/site-701.key",
        "etc/mosquitto/conf.d/app-pki-bridge.conf", "etc/app-pki/renew.sh",
        "etc/systemd/system/app-pki-renew.service", "etc/systemd/system/app-pki-renew.timer",
    }  # fmt: skip
    assert (prefix / "etc/mosquitto/certs/site-701.key").stat().st_mode & 0o777 == 0o600
    bridge = (prefix / "etc/mosquitto/conf.d/app-pki-bridge.conf").read_text()
    for line in ("address 127.0.0.1:8883", "remote_clientid site-701", "bridge_tls_version tlsv1.2",
                 'topic # out 1 "" sites/site-701/', "bridge_insecure false"):  # fmt: skip
        assert line in bridge

    again = enroll(*args_of(enrollment, prefix))  # the token is spent: a rerun must not need it
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout
    assert tree(prefix) == files


def test_cron_schedule_and_custom_topics(gui: Fleet, tmp_path: Path) -> None:
    enrollment = token_for(gui, "site-702")
    prefix = tmp_path / "site"
    done = enroll(*args_of(enrollment, prefix, "--schedule", "cron", "--topic", 'telemetry/# out 1 "" sites/site-702/'))
    assert done.returncode == 0, done.stderr
    cron = (prefix / "etc/cron.d/app-pki-renew").read_text()
    assert f"root {prefix}/etc/app-pki/renew.sh" in cron
    assert not (prefix / "etc/systemd").exists()
    assert (
        'topic telemetry/# out 1 "" sites/site-702/'
        in (prefix / "etc/mosquitto/conf.d/app-pki-bridge.conf").read_text()
    )


def test_missing_step_says_how_to_install_it(gui: Fleet, tmp_path: Path) -> None:
    enrollment = token_for(gui, "site-703")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "mktemp", "rm", "sed", "cut", "tr", "head", "date", "base64", "mosquitto", "curl"):
        found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin")
        if found:
            (bin_dir / tool).symlink_to(found)
    done = enroll(*args_of(enrollment, tmp_path / "site"), env={"PATH": str(bin_dir), "HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "dpkg -i step-cli_amd64.deb" in done.stderr
    assert tree(tmp_path / "site") == {}


def test_token_for_another_site_expired_or_used(gui: Fleet, tmp_path: Path) -> None:
    enrollment = token_for(gui, "site-704")
    wrong_site = enroll(*args_of(enrollment, tmp_path / "a"), "--site", "site-999")
    assert wrong_site.returncode == 1 and "is for site 'site-704', not 'site-999'" in wrong_site.stderr

    step_ca = gui.ca
    short = step_ca.enrollment_token("site-705", dt.timedelta(seconds=3))  # shorter may expire while signed
    time.sleep(4)
    expired = enroll("--token", short, "--broker", "127.0.0.1:8883", "--prefix", str(tmp_path / "b"))
    assert expired.returncode == 1 and "the token expired at" in expired.stderr

    assert enroll(*args_of(enrollment, tmp_path / "c")).returncode == 0
    used = enroll(*args_of(enrollment, tmp_path / "d"))
    assert used.returncode == 1
    assert "already used" in used.stderr
    for prefix in ("a", "b", "d"):
        assert tree(tmp_path / prefix) == {}


def test_wrong_fingerprint_other_ca_and_unreachable_ca(gui: Fleet, other_ca: RunningCA, tmp_path: Path) -> None:
    enrollment = token_for(gui, "site-706")
    zeros = "0" * 64
    wrong_fp = enroll(*args_of(enrollment, tmp_path / "a"), "--fingerprint", zeros)
    assert wrong_fp.returncode == 1 and f"not {zeros}" in wrong_fp.stderr

    # A different CA at the URL (as if DNS or a proxy led the site elsewhere): its root does not match.
    impostor = enroll(*args_of(enrollment, tmp_path / "b"), "--ca-url", other_ca.url)
    assert impostor.returncode == 1
    assert "has another root than fingerprint" in impostor.stderr, impostor.stderr

    down = enroll(*args_of(enrollment, tmp_path / "c"), "--ca-url", f"https://localhost:{free_port()}")
    assert down.returncode == 1 and "cannot be reached" in down.stderr
    for prefix in ("a", "b", "c"):
        assert tree(tmp_path / prefix) == {}


def test_clock_skew_is_refused(gui: Fleet, tmp_path: Path) -> None:
    enrollment = token_for(gui, "site-707")
    # This host's clock ten minutes ahead: a `date` that adds 600 s to "now" and nothing else.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "date").write_text(
        '#!/bin/bash\nif [ "$*" = "+%s" ]; then echo $(( $(/bin/date +%s) + 600 )); else exec /bin/date "$@"; fi\n'
    )
    (shim / "date").chmod(0o755)
    env = tool_env()
    env["PATH"] = f"{shim}:{env['PATH']}"
    done = enroll(*args_of(enrollment, tmp_path / "site"), env=env)
    assert done.returncode == 1
    assert "clock is 6" in done.stderr and "off the CA's" in done.stderr
    assert tree(tmp_path / "site") == {}


def test_bundle_mode_asks_for_the_passphrase_installs_a_client_bundle_and_refuses_others(
    gui: Fleet, ca: RunningCA, tmp_path: Path
) -> None:
    settings = gui.settings
    passphrases: dict[str, str] = {}

    def bundle_of(cn: str, kind: Kind) -> Path:
        record = gui.issue(OPERATOR, IssueRequest(cn, kind, "", 30, "EC P-256")).record
        path = tmp_path / f"{cn}.zip"
        data, passphrases[cn] = gui.bundle(OPERATOR, record.serial)
        path.write_bytes(data)
        return path

    client = bundle_of("site-708", Kind.CLIENT)
    fingerprint = gui.ca.root_fingerprint()
    prefix = tmp_path / "site"
    args = ["--bundle", str(client), "--ca-url", settings.public_ca_url, "--fingerprint", fingerprint,
            "--broker", "127.0.0.1:8883", "--prefix", str(prefix)]  # fmt: skip
    no_passphrase = enroll(*args)
    assert no_passphrase.returncode == 1 and "the bundle's key is encrypted" in no_passphrase.stderr
    (tmp_path / "wrong").write_text("not the passphrase\n")
    wrong = enroll(*args, "--passphrase-file", str(tmp_path / "wrong"))
    assert wrong.returncode == 1 and "the passphrase does not open the bundle's key" in wrong.stderr
    assert tree(prefix) == {}

    done = subprocess.run(
        ["bash", str(ENROLL), *args, "--passphrase-file", "-"], input=passphrases["site-708"] + "\n",
        capture_output=True, text=True, timeout=120, env=tool_env(), start_new_session=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    installed = prefix / "etc/mosquitto/certs"
    assert (installed / "site-708.key").stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key((installed / "site-708.key").read_bytes(), password=None)
    leaf = x509.load_pem_x509_certificates((installed / "site-708.crt").read_bytes())[0]
    assert key.public_key() == leaf.public_key()  # decrypted, and the certificate's own
    assert (installed / "site-708.crt").read_bytes() == (settings.certs_dir / "site-708" / "site-708.crt").read_bytes()
    assert (prefix / "etc/app-pki/renew.sh").exists()

    server = bundle_of("broker-708", Kind.SERVER)
    env = tool_env(APP_PKI_BUNDLE_PASSPHRASE=passphrases["broker-708"])
    refused = enroll("--bundle", str(server), "--prefix", str(tmp_path / "s2"), env=env)
    assert refused.returncode == 1 and "not a client certificate" in refused.stderr
    assert tree(tmp_path / "s2") == {}


# --- refresh-crl.sh ---


def refresh(ca: RunningCA, out: Path, *extra: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REFRESH), "--url", url or ca.crl_url, "--ca-file", str(ca.gui_dir / "root_ca.crt"),
         "--ca-file", str(ca.gui_dir / "intermediate_ca.crt"), "--out", str(out), *extra],
        capture_output=True, text=True, timeout=60, env=tool_env(),
    )  # fmt: skip


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain HTTP server on loopback serving a folder: an old or foreign CRL at a URL."""
    folder = tmp_path / "www"
    folder.mkdir()

    def handler(*args: object) -> http.server.SimpleHTTPRequestHandler:
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(folder))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_refresh_replaces_reloads_and_is_quiet_when_unchanged(ca: RunningCA, tmp_path: Path) -> None:
    out = tmp_path / "crl.pem"
    marker = tmp_path / "reloaded"
    first = refresh(ca, out, "--reload-cmd", f"echo x >> {marker}")
    assert first.returncode == 0, first.stderr
    assert out.read_text().startswith("-----BEGIN X509 CRL-----") and out.stat().st_mode & 0o777 == 0o644
    assert marker.read_text() == "x\n"
    again = refresh(ca, out, "--reload-cmd", f"echo x >> {marker}")
    assert again.returncode == 0 and "is current" in again.stdout
    assert marker.read_text() == "x\n"  # nothing changed: no reload


def test_refresh_keeps_the_previous_crl_on_any_failure(
    ca: RunningCA, other_ca: RunningCA, served: tuple[Path, str], tmp_path: Path
) -> None:
    out = tmp_path / "crl.pem"
    assert refresh(ca, out).returncode == 0
    before = out.read_bytes()
    folder, base = served

    # Signed by another CA.
    shutil.copy(other_ca_crl(other_ca, tmp_path), folder / "foreign.crl")
    foreign = refresh(ca, out, url=f"{base}/foreign.crl")
    assert foreign.returncode == 1 and "not signed by the CA" in foreign.stderr

    # The CA is down.
    down = refresh(ca, out, url=f"http://127.0.0.1:{free_port()}/1.0/crl")
    assert down.returncode == 1 and "previous CRL stays" in down.stderr

    # Not a CRL at all.
    (folder / "junk.crl").write_text("<html>proxy error</html>")
    junk = refresh(ca, out, url=f"{base}/junk.crl")
    assert junk.returncode == 1

    # Older than the one in place (a replayed CRL): revoke something to make a newer one first.
    shutil.copy(out, folder / "old.crl")
    StepCA(ca.settings()).revoke(123456789, 0)
    assert refresh(ca, out).returncode == 0
    newer = out.read_bytes()
    rollback = refresh(ca, out, url=f"{base}/old.crl")
    assert rollback.returncode == 1 and "older than the one" in rollback.stderr
    assert out.read_bytes() == newer != before

    # About to expire (the CA stopped renewing it).
    stale = refresh(ca, out, "--min-valid", "30d")
    assert stale.returncode == 1 and "less than 30d away" in stale.stderr
    assert out.read_bytes() == newer


def other_ca_crl(other_ca: RunningCA, tmp_path: Path) -> Path:
    target = tmp_path / "other.crl"
    done = subprocess.run(["curl", "-fsS", "-o", str(target), other_ca.crl_url], capture_output=True, check=False)
    assert done.returncode == 0
    return target


def test_refresh_installs_its_schedule(ca: RunningCA, tmp_path: Path) -> None:
    out = tmp_path / "crl.pem"
    for kind, path in (("systemd", "etc/systemd/system/app-pki-crl-refresh.service"),
                       ("cron", "etc/cron.d/app-pki-crl-refresh")):  # fmt: skip
        done = refresh(ca, out, "--reload-cmd", "systemctl restart mosquitto",
                       "--install-schedule", kind, "--prefix", str(tmp_path / kind))  # fmt: skip
        assert done.returncode == 0, done.stderr
        text = (tmp_path / kind / path).read_text()
        installed = tmp_path / kind / "usr/local/sbin/app-pki-refresh-crl"
        assert f"{installed} --url" in text and ca.crl_url in text and "'systemctl restart mosquitto'" in text
        assert "--install-schedule" not in text and "--prefix" not in text
        assert installed.read_bytes() == REFRESH.read_bytes() and installed.stat().st_mode & 0o777 == 0o755
        # The CRL is there before the broker's first start, and nothing was reloaded (it is not running).
        assert out.read_text().startswith("-----BEGIN X509 CRL-----")
        out.unlink()
    assert (
        (tmp_path / "systemd/etc/systemd/system/app-pki-crl-refresh.timer").read_text().count("OnUnitActiveSec=15min")
    )
    # Installing again over the CRL a running broker reads (to switch to cron, say) reloads it when it changed.
    assert refresh(ca, out).returncode == 0
    StepCA(ca.settings()).revoke(int.from_bytes(os.urandom(8)), 0)  # a serial of its own: the CA is shared
    marker = tmp_path / "reloaded"
    again = refresh(ca, out, "--reload-cmd", f"touch {marker}", "--restart-cmd", f"touch {marker}",
                    "--install-schedule", "cron", "--prefix", str(tmp_path / "again"))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert marker.exists(), "the broker was told about the new CRL"
    out.unlink()
    # A CRL that cannot be fetched installs nothing.
    failed = refresh(ca, out, "--install-schedule", "cron", "--prefix", str(tmp_path / "down"),
                     url=f"http://127.0.0.1:{free_port()}/1.0/crl")  # fmt: skip
    assert failed.returncode == 1 and "nothing was installed" in failed.stderr
    assert not (tmp_path / "down").exists() and not out.exists()


def test_expired_site_certificate_renews_after_expiry(ca: RunningCA, tmp_path: Path) -> None:
    """A site that was offline past its expiry comes back (the client provisioner allows it)."""
    settings = ca.settings()
    token = StepCA(settings).enrollment_token("site-709", dt.timedelta(hours=1))
    crt, key = tmp_path / "s.crt", tmp_path / "s.key"
    common = ["--ca-url", settings.public_ca_url, "--root", str(settings.root)]
    step = str(Path(settings.step_bin))
    env = tool_env(STEPPATH=str(tmp_path / "step"))
    # step-ca checks an expired chain at the leaf's expiry minus a minute; the leaf is backdated a minute.
    # On a CA younger than that, a short-lived leaf would predate its intermediate, so live a bit longer.
    intermediate = x509.load_pem_x509_certificate(settings.intermediate.read_bytes())
    age = (dt.datetime.now(dt.UTC) - intermediate.not_valid_before_utc).total_seconds()
    lifetime = max(15, int(75 - age))
    subprocess.run([step, "ca", "certificate", "site-709", str(crt), str(key), "--token", token,
                    "--not-after", f"{lifetime}s", *common],
                   check=True, capture_output=True, env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    expired_at = x509.load_pem_x509_certificate(crt.read_bytes()).not_valid_after_utc
    time.sleep(max(0.0, (expired_at - dt.datetime.now(dt.UTC)).total_seconds()) + 1.5)
    renewed = subprocess.run([step, "ca", "renew", "--force", *common, str(crt), str(key)],
                             capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)  # fmt: skip
    assert renewed.returncode == 0, renewed.stderr
    assert x509.load_pem_x509_certificate(crt.read_bytes()).not_valid_after_utc > dt.datetime.now(dt.UTC)


def test_refresh_never_trusts_the_systems_ca_store(
    ca: RunningCA, other_ca: RunningCA, served: tuple[Path, str], tmp_path: Path
) -> None:
    """A CRL signed by a CA this host trusts system-wide (any public CA) must not replace ours."""
    out = tmp_path / "crl.pem"
    assert refresh(ca, out).returncode == 0
    before = out.read_bytes()
    folder, base = served
    shutil.copy(other_ca_crl(other_ca, tmp_path), folder / "system-trusted.crl")
    store = tmp_path / "system-store"
    store.mkdir()
    for name in ("root_ca.crt", "intermediate_ca.crt"):  # one certificate per file: what rehash indexes
        shutil.copy(other_ca.gui_dir / name, store / f"other-{name.replace('.crt', '.pem')}")
    subprocess.run(["openssl", "rehash", str(store)], check=True, capture_output=True)
    assert len(list(store.iterdir())) == 4  # two certificates, two hash links
    env = tool_env(SSL_CERT_DIR=str(store))
    done = subprocess.run(
        ["bash", str(REFRESH), "--url", f"{base}/system-trusted.crl", "--ca-file", str(ca.gui_dir / "root_ca.crt"),
         "--ca-file", str(ca.gui_dir / "intermediate_ca.crt"), "--out", str(out)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 1 and "not signed by the CA" in done.stderr
    assert out.read_bytes() == before


def test_refresh_retries_a_failed_reload_and_restarts_only_for_new_revocations(ca: RunningCA, tmp_path: Path) -> None:
    out = tmp_path / "crl.pem"
    log = tmp_path / "actions"
    flaky = f"test -f {tmp_path}/ok || {{ touch {tmp_path}/ok; exit 1; }}; echo reload >> {log}"
    commands = ("--reload-cmd", flaky, "--restart-cmd", f"echo restart >> {log}")

    failed = refresh(ca, out, *commands)
    assert failed.returncode == 1 and "tries again" in failed.stderr
    assert out.exists() and not log.exists()  # the CRL is in place; the broker was not reloaded
    retried = refresh(ca, out, *commands)
    assert retried.returncode == 0 and "is current" in retried.stdout
    assert log.read_text() == "reload\n"
    assert refresh(ca, out, *commands).returncode == 0
    assert log.read_text() == "reload\n"  # nothing pending, nothing changed: nothing run

    StepCA(ca.settings()).revoke(987654321, 1)  # a new serial on the CRL: connected clients must go
    assert refresh(ca, out, *commands).returncode == 0
    assert log.read_text() == "reload\nrestart\n"


def test_a_revoked_site_re_enrols_with_a_new_token(gui: Fleet, ca: RunningCA, tmp_path: Path) -> None:
    step_ca = gui.ca
    prefix = tmp_path / "site"
    first = token_for(gui, "site-710")
    assert enroll(*args_of(first, prefix)).returncode == 0
    crt = prefix / "etc/mosquitto/certs/site-710.crt"
    old = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    step_ca.revoke(old.serial_number, 1)

    second = step_ca.enrollment_token("site-710", dt.timedelta(hours=1))  # the GUI refuses while it is valid
    token_file = tmp_path / "token"
    token_file.write_text(second + "\n")
    again = enroll("--token-file", str(token_file), "--broker", "127.0.0.1:8883", "--prefix", str(prefix))
    assert again.returncode == 0, again.stderr
    new = x509.load_pem_x509_certificates(crt.read_bytes())[0]
    assert new.serial_number != old.serial_number
    backups = sorted(p.name for p in crt.parent.glob("site-710.*.bak.*"))
    assert len(backups) == 2 and any(name.startswith("site-710.key.bak.") for name in backups)
    assert (
        enroll("--token-file", str(token_file), "--broker", "127.0.0.1:8883", "--prefix", str(prefix)).returncode == 0
    )


def test_renewal_runs_under_crons_bare_environment(gui: Fleet, tmp_path: Path) -> None:
    enrollment = token_for(gui, "site-711")
    prefix = tmp_path / "site"
    marker = tmp_path / "reloaded"
    # The reload needs /usr/sbin (like `service`): cron's PATH is only /usr/bin:/bin.
    reload_cmd = f"haproxy -v >/dev/null && touch {marker}"
    done = enroll(
        *args_of(enrollment, prefix, "--schedule", "cron", "--renew-before", "8784h", "--reload-cmd", reload_cmd)
    )
    assert done.returncode == 0, done.stderr
    crt = prefix / "etc/mosquitto/certs/site-711.crt"
    before = crt.read_bytes()
    time.sleep(1.1)
    renewed = subprocess.run(
        ["/bin/sh", str(prefix / "etc/app-pki/renew.sh")],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert crt.read_bytes() != before and marker.exists()


# --- install-broker.sh ---


def test_install_broker_checks_everything_before_it_changes_anything(gui: Fleet, ca: RunningCA, tmp_path: Path) -> None:
    record = gui.issue(OPERATOR, IssueRequest("mqtt-720.example", Kind.SERVER, "", 30, "EC P-256")).record
    data, passphrase = gui.bundle(OPERATOR, record.serial)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "b.zip").write_bytes(data)
    subprocess.run(["unzip", "-q", "b.zip"], cwd=bundle, check=True)
    prefix = tmp_path / "broker"
    marker = tmp_path / "restarted"

    def install(answer: str, crl_url: str = ca.crl_url) -> subprocess.CompletedProcess[str]:
        # No terminal here: openssl reads the passphrase from standard input.
        return subprocess.run(
            ["bash", "install-broker.sh", "--crl-url", crl_url, "--prefix", str(prefix), "--schedule", "cron",
             "--reload-cmd", f"touch {marker}", "--restart-cmd", f"touch {marker}"],
            cwd=bundle, input=answer + "\n", capture_output=True, text=True, timeout=60, env=tool_env(),
            start_new_session=True,
        )  # fmt: skip

    wrong = install("not the passphrase")
    assert wrong.returncode == 1 and "does not open" in wrong.stderr and "Nothing was changed" in wrong.stderr
    down = install(passphrase, f"http://127.0.0.1:{free_port()}/1.0/crl")
    assert down.returncode == 1 and "cannot be used" in down.stderr
    other_key = gui.issue(OPERATOR, IssueRequest("mqtt-721.example", Kind.SERVER, "", 30, "EC P-256")).record
    original = (bundle / "mqtt-720.example.key").read_bytes()
    foreign, foreign_passphrase = gui.bundle(OPERATOR, other_key.serial)
    (bundle / "mqtt-720.example.key").write_bytes(zipfile.ZipFile(io.BytesIO(foreign)).read("mqtt-721.example.key"))
    mismatch = install(foreign_passphrase)
    assert mismatch.returncode == 1 and "is not the key of" in mismatch.stderr
    assert tree(prefix) == {} and not marker.exists(), "nothing changed, nothing restarted"

    (bundle / "mqtt-720.example.key").write_bytes(original)
    done = install(passphrase)
    assert done.returncode == 0, done.stdout + done.stderr
    etc = prefix / "etc" / "mosquitto"
    assert (etc / "certs" / "mqtt-720.example.key").stat().st_mode & 0o777 == 0o600
    assert f"crlfile {etc}/crl.pem" in (etc / "conf.d" / "app-pki.conf").read_text()
    assert (prefix / "etc/cron.d/app-pki-crl-refresh").exists() and marker.exists()
    assert b"PRIVATE KEY" in (etc / "certs" / "mqtt-720.example.key").read_bytes()
    assert b"ENCRYPTED" not in (etc / "certs" / "mqtt-720.example.key").read_bytes()
