"""The systemd unit, rendered for a particular installation.

``systemd/printnode.service`` is written for the standard layout (the checkout
in ``/opt/printnode`` with its virtual environment in ``.venv``, config in
``/etc/printnode``, state in ``/var/lib/printnode``).  ``render_unit`` rewrites
those paths for another layout, so ``scripts/install-pi.sh`` and the tests
produce a unit that ``systemd-analyze verify`` checks against real files.
"""
from __future__ import annotations

from pathlib import Path

UNIT_TEMPLATE = Path(__file__).resolve().parents[2] / "systemd" / "printnode.service"
DEFAULT_EXEC = "/opt/printnode/.venv/bin/printnode"
DEFAULT_CONFIG = "/etc/printnode/node.toml"
DEFAULT_STATE_DIR = "/var/lib/printnode"
DEFAULT_DOCS = "file:///opt/printnode/docs/field.md"


def render_unit(venv_dir: Path, config_path: Path | None = None, user: str = "printnode",
                template: Path = UNIT_TEMPLATE) -> str:
    """The unit text with ExecStart pointing into ``venv_dir`` (and the config, user if given)."""
    text = template.read_text()
    if DEFAULT_EXEC not in text:
        raise ValueError(f"{template}: ExecStart does not use {DEFAULT_EXEC}; cannot render")
    checkout = Path(venv_dir).resolve().parent
    text = text.replace(DEFAULT_EXEC, str(Path(venv_dir).resolve() / "bin" / "printnode"))
    text = text.replace(DEFAULT_DOCS, f"file://{checkout}/docs/field.md")
    if config_path is not None:
        text = text.replace(DEFAULT_CONFIG, str(config_path))
    if user != "printnode":
        text = text.replace("User=printnode", f"User={user}").replace("Group=printnode", f"Group={user}")
    return text
