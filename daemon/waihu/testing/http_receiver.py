"""A real HTTP server on 127.0.0.1 for tests and the demo: records requests, answers by policy.

Notifier tests point a real HTTP client at it to stand in for the WeChat Work
group robot API or a customer's webhook endpoint; the demo uses it to print
what a WeChat Work group would have shown. It runs as a trio task in the
test's own run (h11 over trio sockets, no thread), so under
``trio.testing.MockClock`` a policy that sleeps, or checks
``trio.current_time()`` to be "down for an hour", follows the mock clock.

Usage::

    receiver = HttpReceiver(lambda request: Reply(200, {"errcode": 0, "errmsg": "ok"}))
    async with trio.open_nursery() as nursery:
        await nursery.start(receiver.run)
        ...  # POST to receiver.url("/cgi-bin/webhook/send?key=k")
        assert receiver.requests[0].json()["msgtype"] == "markdown"
        await receiver.stop_listening()   # now connections are refused
        await receiver.start_listening()  # the same port again

The policy sees each ``ReceivedRequest`` (every one is also appended to
``requests`` first) and returns a ``Reply``, or an awaitable of one (to answer
slowly). The default policy answers 200 with ``{"errcode": 0, "errmsg": "ok"}``,
which is what the WeChat Work API says to a message it accepted.

Error handling: a request h11 cannot parse gets a 400 and the connection is
closed; a policy that raises gets a 500 (the exception is logged) — the
server itself keeps serving.

What it is not: a general web server (no TLS, no chunked streaming of
replies, no routing: the policy decides everything), or part of the daemon.
"""

from __future__ import annotations

import inspect
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import h11
import trio

__all__ = ["WECHAT_OK", "HttpReceiver", "Policy", "ReceivedRequest", "Reply"]

log = logging.getLogger("waihu.testing.http")

HOST = "127.0.0.1"
LISTEN_BACKLOG = 64
RECEIVE_CHUNK = 65536  # bytes read from a socket at a time
MAX_BODY = 1 << 20  # a request body larger than this is refused with 413; tests never need more


@attrs.frozen
class ReceivedRequest:
    """One request as the server read it. Header names are lower case; ``at`` is trio time."""

    method: str
    target: str  # path and query, e.g. "/cgi-bin/webhook/send?key=k"
    headers: Mapping[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        """The body decoded as UTF-8 JSON (ValueError if it is not)."""
        return json.loads(self.body.decode("utf-8"))


@attrs.frozen
class Reply:
    """What the server answers: a status, an optional JSON body, extra headers."""

    status: int = 200
    json: Any = None  # serialised as UTF-8 JSON when not None
    headers: Mapping[str, str] = attrs.field(factory=dict)


WECHAT_OK = Reply(200, {"errcode": 0, "errmsg": "ok"})  # the WeChat Work API accepted a message

Policy = Callable[[ReceivedRequest], "Reply | Awaitable[Reply]"]


class HttpReceiver:
    """An HTTP/1.1 server on 127.0.0.1 that records requests and answers by ``policy``."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy: Policy = policy or (lambda _request: WECHAT_OK)
        self.requests: list[ReceivedRequest] = []
        self.port = 0  # chosen when run() first listens; kept by start_listening()
        self._nursery: trio.Nursery | None = None
        self._serving: trio.CancelScope | None = None
        self._closed = trio.Event()  # set once the current listener and its connections are gone

    def url(self, path: str = "/") -> str:
        """The full URL of ``path`` on this server."""
        return f"http://{HOST}:{self.port}{path}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free port, call ``task_status.started()``, serve until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.start_listening()
            task_status.started()
            await trio.sleep_forever()

    async def start_listening(self) -> None:
        """(Re)open the listening socket on ``port`` (a free one the first time)."""
        assert self._nursery is not None, "run() first"
        if self._serving is None:
            await self._nursery.start(self._serve)

    async def stop_listening(self) -> None:
        """Close the listener and every open connection: new connections are refused."""
        if self._serving is not None:
            self._serving.cancel()
            self._serving = None
            await self._closed.wait()

    async def _serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        self._closed = trio.Event()
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # the port was ours a moment ago; without this, a restart may find it in TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            await self._listen(sock, task_status)
        finally:
            sock.close()
            self._closed.set()

    async def _listen(
        self, sock: trio.socket.SocketType, task_status: trio.TaskStatus[None]
    ) -> None:
        await sock.bind((HOST, self.port))
        sock.listen(LISTEN_BACKLOG)
        self.port = sock.getsockname()[1]
        async with trio.open_nursery() as connections:
            self._serving = connections.cancel_scope
            task_status.started()
            while True:
                conn, _address = await sock.accept()
                connections.start_soon(self._connection, trio.SocketStream(conn))

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
            while True:
                try:
                    request = await self._read_request(conn, stream)
                except h11.RemoteProtocolError as exc:
                    await self._send_error(conn, stream, exc.error_status_hint)
                    return
                if request is None:  # the client closed the connection
                    return
                self.requests.append(request)
                await self._send(conn, stream, await self._answer(request))
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> ReceivedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(RECEIVE_CHUNK))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("body too large", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return ReceivedRequest(
                    method=head.method.decode("ascii"),
                    target=head.target.decode("ascii"),
                    headers={k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
                    body=bytes(body),
                    at=trio.current_time(),
                )
            else:  # ConnectionClosed (or PAUSED, which cannot happen before the reply)
                return None

    async def _answer(self, request: ReceivedRequest) -> Reply:
        try:
            reply = self.policy(request)
            if inspect.isawaitable(reply):
                reply = await reply
            return reply
        except Exception:
            log.exception("policy failed for %s %s", request.method, request.target)
            return Reply(500, {"error": "policy failed"})

    @staticmethod
    async def _send(conn: h11.Connection, stream: trio.SocketStream, reply: Reply) -> None:
        body = b"" if reply.json is None else json.dumps(reply.json, ensure_ascii=False).encode()
        headers = [("content-length", str(len(body)))]
        if reply.json is not None:
            headers.append(("content-type", "application/json; charset=utf-8"))
        headers += list(reply.headers.items())
        data = conn.send(h11.Response(status_code=reply.status, headers=headers))
        data += conn.send(h11.Data(data=body)) or b""
        data += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(data)

    async def _send_error(
        self, conn: h11.Connection, stream: trio.SocketStream, status: int
    ) -> None:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            try:
                await self._send(conn, stream, Reply(status, {"error": "bad request"}))
            except (h11.LocalProtocolError, trio.BrokenResourceError):
                pass
