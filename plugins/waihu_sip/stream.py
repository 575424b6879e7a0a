"""SIP over a byte stream (TCP, TLS): message framing, TLS settings and one connection.

``StreamFramer`` is sans-IO: bytes go in as they arrive, whole messages come
out. On a stream the only thing that says where a message ends is its
Content-Length (RFC 3261 §18.3), so a message without one is an error that
closes the connection — there is no way to find the next message after it.
A CRLFCRLF between messages is an RFC 5626 §3.5.1 keep-alive ping (answered
with a single CRLF pong by the transport); a lone CRLF is a pong or the
empty lines RFC 3261 §7.5 lets a sender put before a start line, and is
skipped.

``StreamConnection`` wraps one trio stream (a TCP socket, or a
``trio.SSLStream`` over one) with a lock so that tasks sending at the same
time never interleave their bytes, a framer for what it receives, and what
the transport knows about it (where it goes, whether we opened it, whether
its peer was admitted).

``tls_contexts`` builds the ``ssl.SSLContext`` objects a TLS trunk uses from
its configuration (reads certificate files: call it from a worker thread).

Error handling: framing errors raise ``FramingError`` (a ``SipParseError``)
naming the problem; the transport logs it with the peer's address and closes
that connection. Certificate files that cannot be read raise ``TlsSetupError``
naming the key and file.

What it is not: routing, connection reuse or the decision which transport a
message takes (``transport`` does those).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from typing import Literal

import attrs
import trio

from waihu_sip.errors import SipParseError

__all__ = [
    "KEEPALIVE_PING",
    "KEEPALIVE_PONG",
    "FramingError",
    "StreamConnection",
    "StreamFramer",
    "TlsSettings",
    "TlsSetupError",
    "describe_tls_error",
    "tls_contexts",
]

KEEPALIVE_PING = b"\r\n\r\n"  # RFC 5626 §3.5.1: double CRLF from the client
KEEPALIVE_PONG = b"\r\n"  # … answered with a single CRLF
MAX_HEADER_BYTES = 65536  # a start line and headers longer than this are not SIP we talk
MAX_BODY_BYTES = 1 << 20  # SDP bodies are a few hundred bytes; a megabyte is an attack
READ_SIZE = 65536  # bytes asked of the stream per read

_HEADER_END = re.compile(rb"\r?\n\r?\n")
# Content-Length, or its compact form "l", at the start of a header line (any case)
_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*\r?$")

Frame = bytes | Literal["ping"]


class FramingError(SipParseError):
    """The byte stream cannot be split into SIP messages; the connection must close."""


class TlsSetupError(Exception):
    """A TLS setting cannot be used (unreadable or invalid certificate or key file);
    ``key`` is the config key at fault, and the message starts with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


class StreamFramer:
    """Splits a SIP byte stream into messages by Content-Length (sans-IO).

    ``feed`` the bytes as they arrive; it yields each complete message (bytes)
    and ``"ping"`` for every CRLFCRLF keep-alive between messages. Bytes of an
    unfinished message stay buffered for the next ``feed``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> Iterator[Frame]:
        """Add ``data`` and yield every frame now complete; raises ``FramingError``."""
        self._buffer += data
        while True:
            frame = self._next_frame()
            if frame is None:
                return
            yield frame

    def _next_frame(self) -> Frame | None:
        buffer = self._buffer
        if buffer.startswith(KEEPALIVE_PING):
            del buffer[: len(KEEPALIVE_PING)]
            return "ping"
        if buffer.startswith(b"\r\n"):
            if len(buffer) < len(KEEPALIVE_PING) and KEEPALIVE_PING.startswith(bytes(buffer)):
                return None  # maybe the start of a ping: wait for the rest
            del buffer[:2]  # a pong, or an empty line before a start line (§7.5)
            return self._next_frame()
        if buffer.startswith(b"\n"):
            del buffer[:1]
            return self._next_frame()
        if not buffer:
            return None
        end = _HEADER_END.search(buffer)
        if end is None:
            if len(buffer) > MAX_HEADER_BYTES:
                raise FramingError(f"no end of headers within {MAX_HEADER_BYTES} bytes")
            return None
        if end.start() > MAX_HEADER_BYTES:
            raise FramingError(f"headers longer than {MAX_HEADER_BYTES} bytes")
        lengths = _CONTENT_LENGTH.findall(bytes(buffer[: end.end()]))
        if not lengths:
            raise FramingError("message without Content-Length on a stream (RFC 3261 §18.3)")
        text = lengths[0].decode("ascii", "replace")
        if not text.isdigit():
            raise FramingError(f"bad Content-Length {text!r}")
        length = int(text)
        if length > MAX_BODY_BYTES:
            raise FramingError(f"Content-Length {length} exceeds {MAX_BODY_BYTES} bytes")
        total = end.end() + length
        if len(buffer) < total:
            return None
        message = bytes(buffer[:total])
        del buffer[:total]
        return message


@attrs.frozen
class TlsSettings:
    """What a TLS trunk needs: the client context, the name certificates are checked
    against, and a server context when it has a certificate of its own to accept
    connections with (None: incoming TLS connections are refused)."""

    client: ssl.SSLContext
    server_name: str
    server: ssl.SSLContext | None = None


def tls_contexts(
    *,
    server_name: str,
    verify: bool,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
) -> TlsSettings:
    """Build the TLS contexts of a trunk (reads files: run in a worker thread).

    Verification is on unless ``verify`` is false: the peer's certificate must
    chain to ``ca_file`` (or the system's trust store) and name ``server_name``.
    ``cert_file``/``key_file`` are our certificate and key, offered to a server
    that asks for a client certificate and used to accept TLS connections.
    Raises ``TlsSetupError`` naming the config key and file.
    """
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
    if ca_file is not None:
        try:
            client.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError("tls_ca", f"cannot load {ca_file}: {_ssl_why(exc)}") from None
    server: ssl.SSLContext | None = None
    if cert_file is not None:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        for context in (client, server):
            try:
                context.load_cert_chain(cert_file, key_file)
            except (OSError, ssl.SSLError) as exc:
                files = cert_file if key_file is None else f"{cert_file} and {key_file}"
                raise TlsSetupError("tls_cert", f"cannot load {files}: {_ssl_why(exc)}") from None
    return TlsSettings(client=client, server_name=server_name, server=server)


def describe_tls_error(exc: BaseException) -> str:
    """A TLS failure as people read it: the verification problem when there is one."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        return describe_tls_error(exc.__cause__)
    if isinstance(exc, ssl.SSLError):
        return _ssl_why(exc)
    return str(exc) or type(exc).__name__


def _ssl_why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class StreamConnection:
    """One open TCP or TLS connection carrying SIP, and what the transport knows of it.

    ``remote`` is the peer's (address, port): the key the transport finds it by.
    ``outbound`` says we opened it. ``admission`` is what the trunk's admission
    hook said of its peer when it was accepted (always "accept" for ours).
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        remote: tuple[str, int],
        *,
        outbound: bool,
        admission: Literal["accept", "drop", "reject"] = "accept",
    ) -> None:
        self.stream = stream
        self.remote = remote
        self.outbound = outbound
        self.admission = admission
        self.framer = StreamFramer()
        self.closed = False
        self._send_lock = trio.Lock()

    async def send_all(self, data: bytes) -> None:
        """Send ``data`` whole; raises ``trio.BrokenResourceError``/``ClosedResourceError``."""
        async with self._send_lock:
            await self.stream.send_all(data)

    async def receive(self) -> bytes:
        """The next bytes from the peer; b"" once it has closed its side."""
        return await self.stream.receive_some(READ_SIZE)

    async def aclose(self) -> None:
        """Close the connection (without waiting for a TLS close_notify answer)."""
        self.closed = True
        await trio.aclose_forcefully(self.stream)
