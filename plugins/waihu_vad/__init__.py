"""waihu_vad: voice activity detection with webrtcvad, registered as VAD type ``webrtc``.

``webrtc`` holds the provider, its config and the per-call detector; ``plugin``
the pluggy entry point. What it is not: the endpointer — the core decides
where utterances start and end from the verdicts.
"""
