"""The pluggy entry point of waihu_vosk: registers the ``vosk`` speech recogniser."""

from __future__ import annotations

from waihu.api import Provider, hookimpl
from waihu_vosk.engine import VoskEngine

__all__ = ["waihu_asr_types"]


@hookimpl
def waihu_asr_types() -> list[type[Provider]]:
    """The ASR engines this plugin provides."""
    return [VoskEngine]
