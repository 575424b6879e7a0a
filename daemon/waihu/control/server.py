"""The control socket server: JSON-lines requests in, the daemon's answers out.

``ControlServer(path, handler).run`` binds the unix socket (mode 0660),
serves any number of clients at once — one task per connection, requests of
one connection answered in order — and removes the socket file when it stops.
Each request is checked against the command table in ``protocol`` and handed
to ``handler``, the daemon, as a call of one of the ``ControlHandler`` methods.

Streaming (``watch``): the handler returns an ``EventStream`` — the reply's
result and an ``EventSource`` of messages. The server sends the reply, then
pushes each message as an event line from a task of that connection, while
the connection goes on answering requests (replies and events never
interleave within a line). When the client disconnects the pushing stops and
the source is closed, which ends the daemon's subscription. One stream per
connection: a second ``watch`` on it is refused.

Error handling: a bad line (not JSON, too long, not a request) gets an error
reply and the connection stays usable. A handler's ``ControlError`` becomes
that error's reply; any other exception becomes ``internal``, logged with its
traceback. An event that is not plain JSON is logged and skipped. A client
that disconnects mid-reply ends only its own connection; one that reads its
events too slowly holds up only its own events (the daemon drops them rather
than wait). Nothing a client sends, and no handler failure, stops the server.

What it is not: the daemon's logic (``waihu.daemon`` implements the handler)
or the client (``client``).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import struct
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from waihu.api import WaihuError
from waihu.control.protocol import (
    MAX_LINE_BYTES,
    ControlError,
    decode_line,
    encode_error,
    encode_event,
    encode_result,
    parse_request,
    request_id,
)

__all__ = ["ControlHandler", "ControlServer", "ControlSocketError", "EventSource", "EventStream"]

log = logging.getLogger("waihu.control")

SOCKET_MODE = 0o660  # owner and group (operators in group waihu) may connect
LISTEN_BACKLOG = 64
MAX_CONNECTIONS = 64  # clients at once; more are told "unavailable" and closed
RECEIVE_BYTES = 65536
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (Linux SO_PEERCRED)


class ControlSocketError(WaihuError):
    """The control socket cannot be opened (path taken by a file, another daemon on it…)."""


class EventSource(Protocol):
    """The messages a streaming method pushes: iterated by the server, closed when done.

    Each message is a JSON object with an ``event`` key (``protocol`` shows
    the shape). ``close`` must end the iteration and release what feeds it.
    """

    def __aiter__(self) -> AsyncIterator[Mapping[str, Any]]: ...

    def close(self) -> None: ...


@attrs.frozen
class EventStream:
    """What a streaming method returns: its reply's ``result``, then ``events`` to push."""

    result: Any
    events: EventSource


class ControlHandler(Protocol):
    """What the daemon answers: one async method per command of the table.

    Each method gets the command's params as keyword arguments and returns
    plain JSON values (dicts, lists, strings, numbers, booleans, None). It
    raises ``ControlError`` for an expected failure (unknown call id, draining…).
    """

    async def status(self) -> dict[str, Any]:
        """Uptime, version, live calls, trunks, draining flag…"""
        ...

    async def plugins(self) -> list[dict[str, Any]]:
        """Name, distribution, version and hooks of every plugin."""
        ...

    async def call(
        self,
        target: str,
        script: str,
        trunk: str | None = None,
        variables: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Start a call; returns ``{"call_id": ...}`` once dialling has begun."""
        ...

    async def calls(self, limit: int = 20) -> list[dict[str, Any]]:
        """Summaries of the most recent calls, newest first."""
        ...

    async def call_show(self, id: str) -> dict[str, Any]:
        """The whole record of one call, transcript included."""
        ...

    async def watch(self, call_id: str | None = None) -> EventStream:
        """Subscribe to call events (of one live call, if given) for this client."""
        ...

    async def shutdown(self) -> dict[str, Any]:
        """Begin a graceful drain; returns at once."""
        ...


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Splits a byte stream into lines of at most ``limit`` bytes.

    An over-long line raises _LineTooLong once, as soon as the limit is
    passed (the client gets its error without sending the rest); the rest of
    that line is then skipped, so the next line is read normally.
    """

    def __init__(self, stream: trio.abc.ReceiveStream, limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer known to hold no newline
        self._skipping = False

    async def next_line(self) -> bytes | None:
        """The next line without its newline; None at end of stream."""
        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                self._scanned = 0
                if self._skipping:
                    self._skipping = False
                    continue
                if len(line) > self._limit:  # arrived whole within one read
                    raise _LineTooLong
                return line
            self._scanned = len(self._buffer)
            if len(self._buffer) > self._limit or (self._skipping and self._buffer):
                self._buffer.clear()
                self._scanned = 0
                if not self._skipping:
                    self._skipping = True
                    raise _LineTooLong
            data = await self._stream.receive_some(RECEIVE_BYTES)
            if not data:
                # a last line without its newline still counts
                line, self._buffer = bytes(self._buffer), bytearray()
                return None if self._skipping or not line else line
            self._buffer += data


class ControlServer:
    """Serves the control protocol on a unix socket at ``path`` for ``handler``."""

    def __init__(self, path: Path | str, handler: ControlHandler) -> None:
        self.path = Path(path)
        self.handler = handler
        self._connections = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report started, serve until cancelled, then remove the socket file.

        Raises ControlSocketError if the path is taken by something that is not
        a stale socket.
        """
        listener, inode = await self._listen()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._serve_connection, [listener])
                log.info("control socket listening on %s", self.path)
                task_status.started()
        finally:
            self._remove_socket(inode)

    # ───────────────────────── the socket file ─────────────────────────

    async def _listen(self) -> tuple[trio.SocketListener, int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._clear_stale_socket()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(str(self.path))
            os.chmod(self.path, SOCKET_MODE)
            sock.listen(LISTEN_BACKLOG)
            inode = os.stat(self.path).st_ino
        except OSError as exc:
            sock.close()
            raise ControlSocketError(f"cannot listen on {self.path}: {exc.strerror}") from None
        return trio.SocketListener(sock), inode

    async def _clear_stale_socket(self) -> None:
        """Remove a socket file left by a daemon that died; refuse anything else."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(f"{self.path} exists and is not a socket; not replacing it")
        probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await probe.connect(str(self.path))
        except ConnectionRefusedError:
            self.path.unlink(missing_ok=True)  # nobody listens: a previous run's leftover
            log.info("removed stale control socket %s", self.path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EAGAIN:  # EAGAIN: a live listener with a full backlog
                raise ControlSocketError(f"cannot check {self.path}: {exc.strerror}") from None
        finally:
            probe.close()
        raise ControlSocketError(f"another process is already listening on {self.path}")

    def _remove_socket(self, inode: int) -> None:
        try:
            if os.stat(self.path).st_ino == inode:  # still ours, not a newer daemon's
                self.path.unlink()
        except FileNotFoundError:
            pass

    # ───────────────────────── connections ─────────────────────────

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        peer = _peer(stream)
        self._connections += 1
        try:
            async with stream:
                if self._connections > MAX_CONNECTIONS:
                    log.warning(
                        "refused control client %s: %d connections open", peer, MAX_CONNECTIONS
                    )
                    busy = ControlError("unavailable", "too many control connections; try later")
                    await stream.send_all(encode_error(None, busy))
                    return
                log.debug("control client connected: %s", peer)
                async with trio.open_nursery() as pushes:
                    await self._serve_requests(stream, peer, pushes)
                    pushes.cancel_scope.cancel()  # the client has gone: stop pushing to it
                log.debug("control client disconnected: %s", peer)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("control client %s went away", peer)
        except* Exception:
            log.exception("control connection %s failed; closed it", peer)
        finally:
            self._connections -= 1

    async def _serve_requests(
        self, stream: trio.SocketStream, peer: str, pushes: trio.Nursery
    ) -> None:
        """Answer requests in order until the client closes; start a push task for a stream."""
        sender = _Sender(stream)
        reader = _LineReader(stream, MAX_LINE_BYTES)
        streaming = False
        while True:
            try:
                line = await reader.next_line()
            except _LineTooLong:
                log.warning(
                    "control client %s: line longer than %d bytes; dropped",
                    peer,
                    MAX_LINE_BYTES,
                )
                too_long = ControlError(
                    "parse_error", f"line longer than {MAX_LINE_BYTES} bytes; dropped"
                )
                await sender.send(encode_error(None, too_long))
                continue
            if line is None:
                return
            if not line.strip():
                continue
            reply, events = await self._answer(line, peer, may_stream=not streaming)
            try:
                await sender.send(reply)
            except BaseException:
                if events is not None:
                    events.close()
                raise
            if events is not None:
                streaming = True
                pushes.start_soon(self._push, events, sender, peer)

    async def _push(self, events: EventSource, sender: _Sender, peer: str) -> None:
        """Send every message of ``events`` as an event line; close it when done."""
        try:
            async for message in events:
                fields = dict(message)
                kind = fields.pop("event", None)
                try:
                    if not isinstance(kind, str):
                        raise TypeError(f"event kind must be a string, not {kind!r}")
                    line = encode_event(kind, **fields)  # TypeError/ValueError: not plain JSON
                except (TypeError, ValueError) as exc:
                    log.warning("control client %s: %s event not sent: %s", peer, kind, exc)
                    continue
                await sender.send(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; its reading side notices and ends the connection
        finally:
            events.close()

    async def _answer(
        self, line: bytes, peer: str, *, may_stream: bool
    ) -> tuple[bytes, EventSource | None]:
        """The reply line to one request line, and the events to push after it if any."""
        try:
            message = decode_line(line)
            rid = request_id(message)
        except ControlError as exc:
            log.warning("control client %s: %s", peer, exc.message)
            return encode_error(None, exc), None
        try:
            command, params = parse_request(message)
        except ControlError as exc:
            log.warning("control client %s: %s", peer, exc.message)
            return encode_error(rid, exc), None
        if command.streams and not may_stream:
            busy = ControlError(
                "unavailable",
                f"this connection already receives events; send {command.name} on another one",
            )
            return encode_error(rid, busy), None
        if command.changes_state:
            log.info("%s %s from %s", command.name, _describe(params), peer)
        else:
            log.debug("%s from %s", command.name, peer)
        try:
            result = await getattr(self.handler, command.handler_name)(**params)
            if not command.streams:
                return encode_result(rid, result), None
            try:
                return encode_result(rid, result.result), result.events
            except BaseException:
                result.events.close()
                raise
        except ControlError as exc:
            return encode_error(rid, exc), None
        except Exception as exc:
            log.exception("control method %s failed", command.name)
            return encode_error(rid, ControlError("internal", f"{type(exc).__name__}: {exc}")), None


class _Sender:
    """Writes whole lines to a connection from more than one task, one line at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._lock = trio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self._stream.send_all(data)


def _describe(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in params.items() if v is not None)


def _peer(stream: trio.SocketStream) -> str:
    """Who is on the other end, for the log: pid and uid from the kernel."""
    try:
        raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except (OSError, AttributeError):  # SO_PEERCRED is Linux-only
        return "unknown peer"
    pid, uid, _gid = _PEERCRED.unpack(raw)
    return f"pid {pid} uid {uid}"
