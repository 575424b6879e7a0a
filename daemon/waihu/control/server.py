"""The control socket server: JSON-lines requests in, the daemon's answers out.

``ControlServer(path, handler, group=..., admin_group=...).run`` creates the
unix socket (mode 0660, in ``group``), serves any number of clients at once —
one task per connection, requests of one connection answered in order — and
removes the socket file when it stops. Each request is checked against the
command table in ``protocol`` and handed to ``handler``, the daemon, as a
call of one of the ``ControlHandler`` methods.

Who may connect: the owner (the daemon's user), root, and members of
``group`` (by default the daemon's own group). The socket never exists at its
path with looser rights, whatever the umask: it is bound inside a fresh
private directory (mode 0700, ``tempfile.mkdtemp``) beside its path, given
its group and mode 0660 and set listening there, and only then hard-linked
to its path — complete, or not at all (``link`` also refuses to replace a
file another daemon put there meanwhile). Changing the umask around ``bind``
would do as well for the socket, but the umask belongs to the whole process:
a worker thread creating a file or directory at that moment would get it
with the wrong rights.

Who may change state: with ``admin_group`` set, a command whose
``Command.changes_state`` is true (``call``, ``shutdown``) is run only for
root, the daemon's own user, and members of ``admin_group`` (listed in the
group database, or running with it as their group); anyone else connected
gets a ``forbidden`` error reply and is logged. Read-only commands are served
to every client. The kernel vouches for the client (``SO_PEERCRED``: pid,
uid, gid at connect time); its login name and groups are looked up once per
connection (``pwd``, ``os.getgrouplist``), so a membership change applies
from the client's next connection. Admins must be able to connect too: make
them members of ``group`` as well.

Who asked, for the audit log: around each handler call the server sets the
context variable ``current_peer`` to the client's ``Peer`` (pid, uid, gid,
user), so the daemon's handlers read ``current_peer.get()`` without an extra
parameter. Tasks a handler starts keep the value (trio copies the context at
``start_soon``): a call placed by ``call`` still knows who placed it. Outside
a handler call it is None, as it is when the kernel gave no credentials.
Every state-changing command is also logged at info with the client's
identity: ``shutdown from alice (pid 4242, uid 1000)``.

Streaming (``watch``): the handler returns an ``EventStream`` — the reply's
result and an ``EventSource`` of messages. The server sends the reply, then
pushes each message as an event line from a task of that connection, while
the connection goes on answering requests (replies and events never
interleave within a line). When the client disconnects the pushing stops and
the source is closed, which ends the daemon's subscription. One stream per
connection: a second ``watch`` on it is refused.

Error handling: a socket that cannot be set up — a group that does not exist,
a group the daemon may not give the socket to, a path taken by a file or by
another live daemon — raises ``ControlSocketError`` naming path and group
(and, in its ``key``, the ``[daemon]`` key to change when the configuration is
at fault), and leaves nothing behind. A bad line (not JSON, too long, not a request)
gets an error reply and the connection stays usable. A handler's
``ControlError`` becomes that error's reply; any other exception becomes
``internal``, logged with its traceback. An event that is not plain JSON is
logged and skipped. A client that disconnects mid-reply ends only its own
connection; one that reads its events too slowly holds up only its own events
(the daemon drops them rather than wait). Nothing a client sends, and no
handler failure, stops the server.

What it is not: the daemon's logic (``waihu.daemon`` implements the handler),
the client (``client``), or the configuration of the groups (``[daemon]``
in ``waihu.config``).
"""

from __future__ import annotations

import contextvars
import errno
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol, cast

import attrs
import trio

from waihu.api import WaihuError
from waihu.control.protocol import (
    ERROR_CODES,
    MAX_LINE_BYTES,
    ControlError,
    ErrorCode,
    decode_line,
    encode_error,
    encode_event,
    encode_result,
    parse_request,
    request_id,
)

__all__ = [
    "FORBIDDEN",
    "ControlHandler",
    "ControlServer",
    "ControlSocketError",
    "EventSource",
    "EventStream",
    "Peer",
    "current_peer",
]

log = logging.getLogger("waihu.control")

SOCKET_MODE = 0o660  # owner and the socket's group (operators) may connect; others may not
LISTEN_BACKLOG = 64
MAX_CONNECTIONS = 64  # clients at once; more are told "unavailable" and closed
LOGIN_NAME_TTL = 300.0  # seconds a uid's account name is remembered (renames are rare)
RECEIVE_BYTES = 65536
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid (Linux SO_PEERCRED)
ROOT_UID = 0
# sun_path is 108 bytes on Linux, the last one for the terminating NUL
MAX_SOCKET_PATH_BYTES = 107
# the socket's name inside its private directory, short so that the private
# path ("<dir>/.XXXXXXXX/s") is no longer than "<dir>/control.sock"
_STAGED_NAME = "s"
# the configuration keys a socket that cannot be set up is blamed on
_PATH_KEY = "daemon.control_socket"
_GROUP_KEY = "daemon.control_group"
_STAGING_PREFIX = "."  # hidden: a listing of the runtime directory shows the socket only
# the reply code for a refused state change; until protocol.ERROR_CODES has
# "forbidden", the nearest meaning it offers ("the daemon cannot do it now")
FORBIDDEN: ErrorCode = cast(ErrorCode, "forbidden") if "forbidden" in ERROR_CODES else "unavailable"


@attrs.frozen
class Peer:
    """The client on the other end of a control connection, as the kernel vouches for it.

    ``pid``, ``uid`` and ``gid`` are the client process's at connect time
    (``SO_PEERCRED``); ``user`` is the uid's login name, or ``"uid N"`` when
    the uid has no account. ``str(peer)`` is how the log names it.
    """

    pid: int
    uid: int
    gid: int
    user: str

    def __str__(self) -> str:
        if self.user == _unnamed(self.uid):
            return f"{self.user} (pid {self.pid})"
        return f"{self.user} (pid {self.pid}, uid {self.uid})"


#: The client whose request the handler is answering, for the audit log: set by
#: ``ControlServer`` around each handler call (and inherited by the tasks the
#: handler starts); None elsewhere, or when the kernel gave no credentials.
current_peer: contextvars.ContextVar[Peer | None] = contextvars.ContextVar(
    "current_peer", default=None
)


class ControlSocketError(WaihuError):
    """The control socket cannot be set up: an unknown group, a path taken by a file or
    by another live daemon, a directory it may not write…

    ``key`` is the ``[daemon]`` key to change when the configuration is at fault
    (``daemon.control_socket``, ``daemon.control_group``…), None when it is not
    (another daemon listens on the path).
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


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
    """What the daemon answers: for each command of ``protocol.COMMANDS``, an async method
    named by the command's ``handler``, taking its params as keyword arguments and
    returning plain JSON values (a streaming command returns an ``EventStream``).

    It raises ``ControlError`` for an expected failure (unknown call id, draining…).
    The daemon's is ``waihu.control.handlers.ControlHandlers``, held to the table by
    its tests; this protocol names no method itself, so the table stays the one list.
    """


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
    """Serves the control protocol on a unix socket at ``path`` for ``handler``.

    ``group``: the socket file's group (its members may connect), by name; by
    default the daemon's own group. ``admin_group``: when given, only its
    members, root and the daemon's own user may run state-changing commands.
    Both must exist when ``run`` starts.
    """

    def __init__(
        self,
        path: Path | str,
        handler: ControlHandler,
        *,
        group: str | None = None,
        admin_group: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.group = group
        self.admin_group = admin_group
        self._admin_gid: int | None = None  # looked up when run starts
        self._own_uid = os.geteuid()
        self._connections = 0
        self._login_names: dict[int, tuple[str, float]] = {}  # uid → (name, when looked up)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, report started, serve until cancelled, then remove the socket file.

        Raises ControlSocketError if a group does not exist or may not be
        given the socket, or if the path is taken by something that is not a
        stale socket.
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
        # the group database may be remote (LDAP, sssd): look names up off the trio thread
        gid = await trio.to_thread.run_sync(_group_id, self.group, "daemon.control_group")
        self._admin_gid = await trio.to_thread.run_sync(
            _group_id, self.admin_group, "daemon.control_admin_group"
        )
        await trio.to_thread.run_sync(self._make_directory)
        await self._clear_stale_socket()
        sock, inode = await trio.to_thread.run_sync(self._open_socket, gid)
        return trio.SocketListener(trio.socket.from_stdlib_socket(sock)), inode

    def _make_directory(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ControlSocketError(
                f"cannot create {self.path.parent} for the control socket: {exc.strerror}",
                key=_PATH_KEY,
            ) from None

    def _open_socket(self, gid: int | None) -> tuple[socket.socket, int]:
        """A listening socket published at ``path`` whole: group, mode 0660, listening.

        Bound inside a private directory (0700) beside ``path``, so that until
        the hard link puts it at ``path`` nobody but the daemon's user can
        reach it, whatever the umask. Returns the socket and its inode.
        """
        try:
            private = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.path.parent))
        except OSError as exc:
            raise ControlSocketError(
                f"cannot listen on {self.path}: {exc.strerror}", key=_PATH_KEY
            ) from None
        staged = private / _STAGED_NAME
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # the path clients connect to, and the one bound first, must both fit
            for needed in (self.path, staged):
                if len(os.fsencode(needed)) > MAX_SOCKET_PATH_BYTES:
                    raise ControlSocketError(
                        f"control socket path {self.path} is too long: {needed} is "
                        f"{len(os.fsencode(needed))} bytes, and a unix socket's path "
                        f"has at most {MAX_SOCKET_PATH_BYTES}",
                        key=_PATH_KEY,
                    )
            sock.bind(str(staged))
            # chown only when needed: under the systemd unit's filter it takes @chown
            if gid is not None and os.stat(staged).st_gid != gid:
                self._give_to_group(staged, gid)
            os.chmod(staged, SOCKET_MODE)
            sock.listen(LISTEN_BACKLOG)
            inode = os.stat(staged).st_ino
            os.link(staged, self.path)
        except FileExistsError:
            sock.close()
            raise ControlSocketError(
                f"{self.path} appeared while the control socket was set up; "
                "is another waihud starting?"
            ) from None
        except OSError as exc:
            sock.close()
            raise ControlSocketError(
                f"cannot listen on {self.path}: {exc.strerror}", key=_PATH_KEY
            ) from None
        except BaseException:
            sock.close()
            raise
        finally:
            _remove_private_directory(private, staged)
        return sock, inode

    def _give_to_group(self, staged: Path, gid: int) -> None:
        try:
            os.chown(staged, -1, gid)
        except PermissionError:
            raise ControlSocketError(
                f"cannot give the control socket {self.path} to group {self.group!r}: "
                "the daemon's user must be a member of it (systemd: SupplementaryGroups=, "
                "and SystemCallFilter= must allow @chown)",
                key=_GROUP_KEY,
            ) from None

    async def _clear_stale_socket(self) -> None:
        """Remove a socket file left by a daemon that died; refuse anything else."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlSocketError(
                f"{self.path} exists and is not a socket; not replacing it", key=_PATH_KEY
            )
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
                raise ControlSocketError(
                    f"cannot check {self.path}: {exc.strerror}", key=_PATH_KEY
                ) from None
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
        client = _Client(None)
        self._connections += 1
        try:
            async with stream:
                client.peer = await _identify(stream, self._login_names)
                if self._connections > MAX_CONNECTIONS:
                    log.warning(
                        "refused control client %s: %d connections open", client, MAX_CONNECTIONS
                    )
                    busy = ControlError("unavailable", "too many control connections; try later")
                    await stream.send_all(encode_error(None, busy))
                    return
                log.debug("control client connected: %s", client)
                async with trio.open_nursery() as pushes:
                    await self._serve_requests(stream, client, pushes)
                    pushes.cancel_scope.cancel()  # the client has gone: stop pushing to it
                log.debug("control client disconnected: %s", client)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            log.debug("control client %s went away", client)
        except* Exception:
            log.exception("control connection %s failed; closed it", client)
        finally:
            self._connections -= 1

    async def _serve_requests(
        self, stream: trio.SocketStream, client: _Client, pushes: trio.Nursery
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
                    client,
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
            reply, events = await self._answer(line, client, may_stream=not streaming)
            try:
                await sender.send(reply)
            except BaseException:
                if events is not None:
                    events.close()
                raise
            if events is not None:
                streaming = True
                pushes.start_soon(self._push, events, sender, client)

    async def _push(self, events: EventSource, sender: _Sender, client: _Client) -> None:
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
                    log.warning("control client %s: %s event not sent: %s", client, kind, exc)
                    continue
                await sender.send(line)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away; its reading side notices and ends the connection
        finally:
            events.close()

    async def _answer(
        self, line: bytes, client: _Client, *, may_stream: bool
    ) -> tuple[bytes, EventSource | None]:
        """The reply line to one request line, and the events to push after it if any."""
        try:
            message = decode_line(line)
            rid = request_id(message)
        except ControlError as exc:
            log.warning("control client %s: %s", client, exc.message)
            return encode_error(None, exc), None
        try:
            command, params = parse_request(message)
        except ControlError as exc:
            log.warning("control client %s: %s", client, exc.message)
            return encode_error(rid, exc), None
        if command.streams and not may_stream:
            busy = ControlError(
                "unavailable",
                f"this connection already receives events; send {command.name} on another one",
            )
            return encode_error(rid, busy), None
        if command.changes_state:
            if not await self._may_change_state(client):
                log.warning(
                    "refused %s from %s: not in group %r",
                    _describe(command.name, params),
                    client,
                    self.admin_group,
                )
                refused = ControlError(
                    FORBIDDEN,
                    f"{command.name} changes the daemon's state: only members of group "
                    f"{self.admin_group!r} may run it, and {client.user} is not one",
                )
                return encode_error(rid, refused), None
            log.info("%s from %s", _describe(command.name, params), client)
        else:
            log.debug("%s from %s", command.name, client)
        token = current_peer.set(client.peer)
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
        finally:
            current_peer.reset(token)

    # ───────────────────────── who may change state ─────────────────────────

    async def _may_change_state(self, client: _Client) -> bool:
        """Whether ``client`` may run a state-changing command; decided once per connection."""
        if self._admin_gid is None:
            return True
        if client.admin is None:
            # the group database may be remote (LDAP, sssd): off the trio thread
            client.admin = await trio.to_thread.run_sync(self._is_admin, client.peer)
        return client.admin

    def _is_admin(self, peer: Peer | None) -> bool:
        if peer is None:  # no credentials: nobody to vouch for
            return False
        if peer.uid in (ROOT_UID, self._own_uid) or peer.gid == self._admin_gid:
            return True
        try:
            account = pwd.getpwuid(peer.uid)
        except KeyError:  # a uid without an account is in no group's member list
            return False
        return self._admin_gid in os.getgrouplist(account.pw_name, account.pw_gid)


@attrs.define
class _Client:
    """One connection's client: who it is, and whether it may change state once asked."""

    peer: Peer | None
    admin: bool | None = None  # None: not decided yet

    @property
    def user(self) -> str:
        return "an unidentified client" if self.peer is None else self.peer.user

    def __str__(self) -> str:
        return "unknown peer" if self.peer is None else str(self.peer)


class _Sender:
    """Writes whole lines to a connection from more than one task, one line at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._lock = trio.Lock()

    async def send(self, data: bytes) -> None:
        async with self._lock:
            await self._stream.send_all(data)


LOGGED_ITEMS = 5  # a list param longer than this is logged by its length (contact batches)


def _describe(name: str, params: dict[str, Any]) -> str:
    """A request as the log shows it: ``call target='1001' script='demo'``; a long list
    (a batch of contacts, of numbers) as its length, so the journal holds no phone book."""

    def shown(value: Any) -> str:
        if isinstance(value, list | tuple) and len(value) > LOGGED_ITEMS:
            return f"[{len(value)} items]"
        if isinstance(value, dict) and len(repr(value)) > 200:
            return f"{{{len(value)} keys}}"
        return repr(value)

    return " ".join([name, *(f"{k}={shown(v)}" for k, v in params.items() if v is not None)])


def _group_id(name: str | None, key: str) -> int | None:
    """The id of group ``name`` (None for None); ControlSocketError naming it if none."""
    if name is None:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ControlSocketError(
            f"{key}: no group named {name!r} on this system (groupadd it, or fix the name)",
            key=key,
        ) from None


def _remove_private_directory(private: Path, staged: Path) -> None:
    """Remove the private directory the socket was bound in; its name is at ``path`` now."""
    try:
        staged.unlink(missing_ok=True)
        private.rmdir()
    except OSError as exc:  # harmless (hidden, empty or holding a dead name), but say so
        log.warning("cannot remove %s: %s", private, exc.strerror)


async def _identify(stream: trio.SocketStream, names: dict[int, tuple[str, float]]) -> Peer | None:
    """Who is on the other end: credentials from the kernel, the uid's name from the
    account database (remembered in ``names`` for ``LOGIN_NAME_TTL``); None where the
    kernel gives no credentials."""
    try:
        raw = stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except (OSError, AttributeError):  # SO_PEERCRED is Linux-only
        return None
    pid, uid, gid = _PEERCRED.unpack(raw)
    known = names.get(uid)
    if known is not None and trio.current_time() - known[1] < LOGIN_NAME_TTL:
        user = known[0]
    else:
        # the account database may be remote (LDAP, sssd): look the uid up off the trio
        # thread, once per uid and TTL, so a burst of connections is not a burst of threads
        user = await trio.to_thread.run_sync(_login_name, uid)
        names[uid] = (user, trio.current_time())
    return Peer(pid=pid, uid=uid, gid=gid, user=user)


def _login_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return _unnamed(uid)


def _unnamed(uid: int) -> str:
    """How a uid without an account is named."""
    return f"uid {uid}"
