"""The pluggy entry point of waihu_espeak: registers the ``espeak`` speech synthesiser.

What it is not: the synthesiser itself, which lives in ``waihu_espeak.espeak``.
"""

from __future__ import annotations

from waihu.api import Provider, hookimpl
from waihu_espeak.espeak import EspeakSynthesizer

__all__ = ["waihu_tts_types"]


@hookimpl
def waihu_tts_types() -> list[type[Provider]]:
    """The speech synthesisers this plugin provides."""
    return [EspeakSynthesizer]
