"""Telling systemd how the daemon is doing (``sd_notify(3)``), without libsystemd.

Under ``Type=notify`` systemd sets ``$NOTIFY_SOCKET`` to a unix datagram
socket — a path, or ``@name`` for the abstract namespace — and waits for
``READY=1`` before it counts the service as started. ``notify`` sends one
datagram of newline-separated ``KEY=VALUE`` assignments there, e.g.
``notify("READY=1\\nSTATUS=serving")``, ``notify("STOPPING=1")``. Without
``$NOTIFY_SOCKET`` (run by hand, in tests) it does nothing.

The send never blocks (the trio thread calls it) and never raises: the daemon
must keep serving calls even if systemd's socket is gone, so a failure is
logged and reported by the return value.

What it is not: a watchdog (``WATCHDOG=1`` pings would be sent with this, by
a task of the daemon's) or a listener for socket activation.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["NOTIFY_SOCKET_ENV", "notify"]

log = logging.getLogger("waihu.sd_notify")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def notify(state: str) -> bool:
    """Send ``state`` to systemd; True if it was sent, False if not under systemd or it failed."""
    address = os.environ.get(NOTIFY_SOCKET_ENV)
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace: a leading NUL byte, no file
    elif not address.startswith("/"):
        log.warning("%s=%r is not a unix socket address; not notifying", NOTIFY_SOCKET_ENV, address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode("utf-8"), address)
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", os.environ[NOTIFY_SOCKET_ENV], exc)
        return False
    return True
