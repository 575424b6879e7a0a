"""The ``webrtc`` VAD provider: WebRTC's GMM voice activity detector (``webrtcvad``).

Config (``[vad.NAME]`` with ``type = "webrtc"``)::

    aggressiveness = 2   # 0 (lets most through) … 3 (strictest about what is speech)

It is what the endpointer uses on its own when ``[media] vad`` is not set
(with ``[media] vad_aggressiveness``); as a provider it can be named like any
other VAD, e.g. to compare it with ``silero`` on the same daemon. It needs no
model and is cheap (a few µs per 20 ms frame, see benchmarks/bench_vad.py).

Error handling: ``open_detector`` raises ``ProviderError`` for a sample rate
webrtcvad does not take (it takes 8, 16, 32 and 48 kHz).

What it is not: the endpointer (energy gates, start and end windows), which
sits in front of every detector in the core.
"""

from __future__ import annotations

import attrs
import numpy as np
import webrtcvad

from waihu.api import Provider, ProviderContext, ProviderError, one_of

__all__ = ["WEBRTC_RATES", "WebRtcDetector", "WebRtcVad"]

WEBRTC_RATES = (8000, 16000, 32000, 48000)  # the sample rates webrtcvad accepts
DEFAULT_AGGRESSIVENESS = 2  # the endpointer's own default ([media] vad_aggressiveness)


class WebRtcDetector:
    """One call's webrtcvad: a ``waihu.api.VoiceDetector``.

    webrtcvad keeps a little state between frames (its hangover), so each call
    has its own instance.
    """

    def __init__(self, aggressiveness: int, sample_rate: int) -> None:
        self._aggressiveness = aggressiveness
        self._rate = sample_rate
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        """webrtcvad's verdict on one 10/20/30 ms int16 frame."""
        return bool(self._vad.is_speech(frame, self._rate))  # the array is its own buffer

    def reset(self) -> None:
        """A fresh webrtcvad: its hangover and noise model start over."""
        self._vad = webrtcvad.Vad(self._aggressiveness)


class WebRtcVad(Provider):
    """webrtcvad as a provider: ``waihu.api.Vad``, config type ``webrtc``."""

    type_name = "webrtc"

    @attrs.frozen(kw_only=True)
    class Config:
        """``[vad.NAME]`` keys of a webrtc detector."""

        aggressiveness: int = attrs.field(
            default=DEFAULT_AGGRESSIVENESS, validator=one_of(0, 1, 2, 3)
        )

    config: Config

    def __init__(self, config: Config, context: ProviderContext) -> None:
        super().__init__(config, context)

    def open_detector(self, *, sample_rate: int) -> WebRtcDetector:
        """A detector for one call at ``sample_rate``; ProviderError for a rate it lacks."""
        if sample_rate not in WEBRTC_RATES:
            raise ProviderError(
                f"vad {self.context.name!r} (webrtc) works at"
                f" {', '.join(map(str, WEBRTC_RATES))} Hz, not {sample_rate}"
            )
        return WebRtcDetector(self.config.aggressiveness, sample_rate)
