"""The VAD plugins' entry points for tests run from a work tree not yet installed.

The built-in plugins are found through the ``waihu`` entry-point group of the
installed distribution. A checkout whose ``pyproject.toml`` gained the ``vad``
and ``silero`` entry points before ``pip install -e .`` was run again does not
list them yet; ``plugin_site`` then writes a small ``.dist-info`` declaring
just those two, for a test to put on ``sys.path`` or ``PYTHONPATH``. Once the
installed distribution lists them this is not needed (and returns None).

What it is not: a way to install anything; the modules themselves come from
the work tree on ``PYTHONPATH`` as usual.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

ENTRY_POINTS = {"vad": "waihu_vad.plugin", "silero": "waihu_silero.plugin"}


def plugin_site(directory: Path) -> Path | None:
    """A directory holding a dist-info with the VAD entry points, or None when installed."""
    installed = {ep.name for ep in importlib.metadata.entry_points(group="waihu")}
    if ENTRY_POINTS.keys() <= installed:
        return None
    dist_info = directory / "waihu_vad_plugins-0.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: waihu-vad-plugins\nVersion: 0\n", encoding="utf-8"
    )
    points = "".join(f"{name} = {module}\n" for name, module in ENTRY_POINTS.items())
    (dist_info / "entry_points.txt").write_text(f"[waihu]\n{points}", encoding="utf-8")
    return directory


def site_env(directory: Path) -> dict[str, str]:
    """Environment additions that let a child waihud find the VAD plugins."""
    import os

    site = plugin_site(directory)
    if site is None:
        return {}
    return {"PYTHONPATH": f"{os.environ.get('PYTHONPATH', '')}:{site}"}
