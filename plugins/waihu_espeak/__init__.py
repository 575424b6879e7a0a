"""waihu_espeak: speech synthesis with espeak-ng, registered as TTS type ``espeak``.

``espeak`` holds the provider, its config and the WAV reading and resampling
it needs; ``plugin`` the pluggy entry point. What it is not: a cache — the
core keeps what a synthesiser returns, per text.
"""
