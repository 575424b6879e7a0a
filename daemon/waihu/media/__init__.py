"""The media core: everything between a call leg's RTP datagrams and its utterances.

- ``g711``: μ-law/A-law codecs (numpy lookup tables).
- ``rtp``: RTP packet parse/build; ``telephone_event``: RFC 4733 DTMF payloads.
- ``jitter_buffer``: puts received packets back in order for playout.
- ``media_clock``: the one 20 ms clock that drives every call's media.
- ``prompt_player``: loads recordings (``resample`` converts their rate) and
  plays them frame by frame.
- ``endpointer``: webrtcvad-based speech start/end detection.
- ``recorder``: the stereo call recording.
- ``call_media``: ``CallMedia``, the glue for one call, and the events it emits.

What it is not: signalling (trunk plugins own the call legs) or speech
recognition (ASR plugins); the submodules are imported directly.
"""
