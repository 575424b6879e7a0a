"""The pluggy entry point of waihu_silero: registers the ``silero`` voice activity detector.

Importing it does not import ONNX Runtime (the provider does when it starts),
so a machine without it still loads every other plugin and hears of the
missing package from ``waihud --check-config``.

What it is not: the detector itself, which lives in ``waihu_silero.silero``.
"""

from __future__ import annotations

from waihu.api import Provider, hookimpl
from waihu_silero.silero import SileroVad

__all__ = ["waihu_vad_types"]


@hookimpl
def waihu_vad_types() -> list[type[Provider]]:
    """The voice activity detectors this plugin provides."""
    return [SileroVad]
