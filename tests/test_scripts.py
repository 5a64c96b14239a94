"""The shell scripts: shellcheck-clean, --help everywhere, the tool installer's promises."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, TOOLS, free_port, tool_env

SCRIPTS = sorted([*REPO.glob("scripts/*.sh"), *REPO.glob("ca/*.sh"), REPO / ".ci" / "run"])


def test_shellcheck_passes_on_every_script() -> None:
    assert shutil.which("shellcheck"), "shellcheck is missing (apt-get install shellcheck; .ci/run does)"
    done = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_prints_help(script: Path) -> None:
    done = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, env=tool_env(), check=False)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_is_strict(script: Path) -> None:
    assert "set -euo pipefail" in script.read_text()


def test_install_step_reuses_the_cache_and_prints_both_versions() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "install-step.sh")], capture_output=True, text=True, env=tool_env(), timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "step     v0.30.6" in done.stdout
    assert "step-ca  v0.30.2" in done.stdout
    assert "Building" not in done.stdout
    for tool, version in (("step", "0.30.6"), ("step-ca", "0.30.2")):
        printed = subprocess.run([str(TOOLS / tool), "version"], capture_output=True, text=True, check=True).stdout
        assert f"/{version} " in printed


def test_install_step_without_go_says_what_to_install(tmp_path: Path) -> None:
    # An empty cache and a PATH with no Go: the script must explain, not fail obscurely.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "cat", "dirname", "mkdir", "ln", "awk", "grep", "sed", "head", "rm", "mv"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    env = {"HOME": str(tmp_path), "PATH": str(bin_dir), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env["PKI_TOOLS_DIR"] = str(tmp_path / "tools")
    done = subprocess.run(
        [str(bin_dir / "bash"), str(REPO / "scripts" / "install-step.sh")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 1
    assert "Go is not installed" in done.stderr
    assert "Install Go 1.25 or newer" in done.stderr
    assert not (tmp_path / "tools" / "step").exists()


def test_run_local_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        env = tool_env(
            GUI_PORT=str(port), CA_PORT=str(free_port()), CRL_PORT=str(free_port()), PKI_DATA_DIR=str(tmp_path / "data")
        )
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "run-local.sh")], capture_output=True, text=True, env=env, timeout=60
        )
    assert done.returncode == 1
    assert f"port {port} (GUI_PORT) is already in use" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_run_local_refuses_an_open_gui_beyond_loopback(tmp_path: Path) -> None:
    everywhere = "0.0.0.0"  # noqa: S104 (the setting under test: refused, nothing binds)
    env = tool_env(
        GUI_ADDRESS=everywhere, GUI_PORT=str(free_port()), CA_PORT=str(free_port()), CRL_PORT=str(free_port()),
        PKI_DATA_DIR=str(tmp_path / "data"),
    )  # fmt: skip
    done = subprocess.run(["bash", str(REPO / "scripts" / "run-local.sh")], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "with no login. Set PKI_PASSWORD" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_run_local_starts_both_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    env = tool_env(
        CA_PORT=str(free_port()), CRL_PORT=str(free_port()), GUI_PORT=str(free_port()), PKI_DATA_DIR=str(tmp_path)
    )
    process = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "run-local.sh")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    output = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "Press Ctrl-C" in line:
                break
        assert "app-pki is running." in "".join(output), "".join(output)
        gui = f"http://127.0.0.1:{env['GUI_PORT']}/_stcore/health"
        with urllib.request.urlopen(gui, timeout=10) as resp:
            assert resp.read() == b"ok"
        children = _descendants(process.pid)
        assert any("step-ca" in cmd for cmd in children.values()), children
        assert any("streamlit" in cmd for cmd in children.values()), children
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "app-pki stopped." in rest
    survivors = {pid: cmd for pid, cmd in children.items() if Path(f"/proc/{pid}").exists()}
    assert not survivors, f"outlived Ctrl-C: {survivors}"


def _descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its command line."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        listed = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        for child in map(int, listed):
            try:
                found[child] = Path(f"/proc/{child}/cmdline").read_text().replace("\0", " ")
            except OSError:
                continue
            todo.append(child)
    return found
