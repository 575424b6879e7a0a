"""The pluggy entry point of waihu_vad: registers the ``webrtc`` voice activity detector.

What it is not: the detector itself, which lives in ``waihu_vad.webrtc``.
"""

from __future__ import annotations

from waihu.api import Provider, hookimpl
from waihu_vad.webrtc import WebRtcVad

__all__ = ["waihu_vad_types"]


@hookimpl
def waihu_vad_types() -> list[type[Provider]]:
    """The voice activity detectors this plugin provides."""
    return [WebRtcVad]
