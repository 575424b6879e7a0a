"""waihu_vosk: streaming speech recognition with vosk (Kaldi), registered as ASR type ``vosk``.

``engine`` holds the provider and its config, ``model`` the shared in-memory
models and their idle recognisers, ``grammar`` the phrase lists, ``stream``
the per-call recogniser. What it is not: voice activity detection or
endpointing — the core decides where an utterance starts and ends.
"""
