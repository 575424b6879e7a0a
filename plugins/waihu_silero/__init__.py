"""waihu_silero: voice activity detection with the Silero VAD model, registered as VAD
type ``silero``.

``silero`` holds the provider (one shared ONNX Runtime session), its config and
the per-call detector; ``plugin`` the pluggy entry point. What it is not: the
endpointer — the core decides where utterances start and end from the verdicts.
"""
