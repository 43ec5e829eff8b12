"""scripts/install-pi.sh, in --dry-run (it would change this machine otherwise)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-pi.sh"


def test_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean() -> None:
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dry_run_shows_every_install_step() -> None:
    result = subprocess.run([str(SCRIPT), "--dry-run", "--user", "maker"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for needle in ("useradd --system", "usermod -aG dialout,gpio,i2c maker", "install -d -m 0750",
                   "/etc/printnode/node.toml", "/etc/systemd/system/printnode.service",
                   f"ExecStart={ROOT}/.venv/bin/printnode run --config /etc/printnode/node.toml",
                   "User=maker", "/etc/polkit-1/rules.d/50-printnode-halt.rules", 'subject.user == "maker"',
                   "SystemMaxUse=64M", "systemctl enable --now printnode.service", "doctor"):
        assert needle in out, f"{needle!r} missing from the dry run"


def test_refuses_a_checkout_the_service_cannot_see(tmp_path: Path) -> None:
    home = Path("/home")
    if not home.is_dir() or not shutil.os.access(home, shutil.os.W_OK):
        pytest.skip("needs a writable /home to create a checkout there")
    target = home / f"printnode-install-test-{tmp_path.name}"
    target.mkdir()
    try:
        result = subprocess.run([str(SCRIPT), "--dry-run", "--prefix", str(target)], capture_output=True, text=True)
        assert result.returncode == 2 and "ProtectHome" in result.stderr
    finally:
        target.rmdir()
