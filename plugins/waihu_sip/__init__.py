"""waihu_sip: a small trio-native SIP user agent for placing calls over a SIP trunk (UDP).

What it does: INVITE with an SDP offer (G.711 μ-law/A-law, RFC 4733
telephone-event) through an outbound proxy, retransmission on RFC 3261
timers, digest authentication (RFC 2617/7616), CANCEL on ring timeout,
ACK/BYE routed by Contact and Record-Route, answers to the far end's BYE,
re-INVITE/UPDATE and OPTIONS, and one RTP socket per call handed to the core
as raw datagrams. Modules, from the wire up: ``message``/``address`` (parse
and write), ``sdp``, ``digest``, ``transport`` (the UDP socket and response
routing), ``transaction`` (non-INVITE), ``outgoing`` (INVITE), ``dialog``,
``leg`` (the answered call), ``trunk`` (the provider), ``plugin`` (the hook).

Why it is written here rather than taken from a library: aiosip, the obvious
candidate, is dead. Its last release (2017) does not import on Python 3.11
(``asyncio.coroutine``, ``collections.MutableMapping``); with a shim it ACKs
the BYE's 200 OK, reuses the INVITE branch for the 2xx ACK, sends ACK/BYE to
the To URI instead of the Contact, and strips SDP line breaks. It is also
asyncio, and waihu is trio.

Not in this release: TCP/TLS, REGISTER, inbound calls, DTMF sending,
transfer, early media, forked 2xx answers, SRV/NAPTR lookups, IPv6.
"""
