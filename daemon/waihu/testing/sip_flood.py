"""A SIP request flood from a plain UDP socket, run as its own process in tests and benchmarks.

    python -m waihu.testing.sip_flood HOST PORT SOURCE COUNT [RATE]

sends COUNT small OPTIONS requests (each with its own branch and Call-ID, so
no cache absorbs them) to HOST:PORT from the address SOURCE, as fast as the
socket takes them or at RATE datagrams per second (paced in batches of a
millisecond's worth). It prints one line: how many it sent and how long it took.

What it is not: a SIP client. It never reads an answer; it is the attacker.
"""

from __future__ import annotations

import socket
import sys
import time

__all__ = ["flood", "options_datagram"]

BATCH_SECONDS = 0.001  # a paced flood sends a millisecond's worth of datagrams at a time


def options_datagram(host: str, source: str, index: int) -> bytes:
    """The ``index``-th flood request: a minimal, well-formed OPTIONS."""
    return (
        f"OPTIONS sip:x@{host} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {source}:9;branch=z9hG4bKflood{index}\r\n"
        f"From: <sip:f@{source}>;tag={index}\r\n"
        f"To: <sip:x@{host}>\r\n"
        f"Call-ID: flood{index}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def flood(host: str, port: int, source: str, count: int, rate: float | None = None) -> float:
    """Send ``count`` requests (at ``rate`` per second, or flat out); the seconds it took."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        started = time.perf_counter()
        batch = max(1, int(rate * BATCH_SECONDS)) if rate else count
        for index in range(count):
            try:
                sock.sendto(options_datagram(host, source, index), (host, port))
            except OSError:
                pass  # a full local buffer loses the datagram, as the network would
            if rate and (index + 1) % batch == 0:
                ahead = started + (index + 1) / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
        return time.perf_counter() - started


def main(argv: list[str]) -> int:
    """Command-line entry: HOST PORT SOURCE COUNT [RATE]."""
    if len(argv) not in (4, 5):
        print("usage: python -m waihu.testing.sip_flood HOST PORT SOURCE COUNT [RATE]")
        return 2
    host, port, source, count = argv[0], int(argv[1]), argv[2], int(argv[3])
    rate = float(argv[4]) if len(argv) == 5 else None
    seconds = flood(host, port, source, count, rate)
    print(f"sent {count} in {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
