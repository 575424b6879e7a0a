"""HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 3261 §22.4).

Parses ``WWW-Authenticate``/``Proxy-Authenticate`` challenges and computes the
``Authorization``/``Proxy-Authorization`` value that answers one. Algorithms:
MD5, MD5-sess, SHA-256, SHA-256-sess; qop ``auth`` (preferred) or ``auth-int``,
or none for RFC 2069-style servers. ``DigestSession`` keeps one request
flow's credentials across challenge rounds (sans-IO): which realms were
answered, the nonce counts, and when to give up.

Header values are text decoded with ``surrogateescape`` (``message``): a realm
or nonce that is not UTF-8 is hashed as the raw bytes it arrived as, and never
raises.

Error handling: an unusable challenge raises ``DigestError`` naming why;
``DigestSession.respond`` returns None when the server refused our credentials.

What it is not: sending or retrying requests (``outgoing``, ``transaction``),
``userhash``, or any scheme but Digest.
"""

from __future__ import annotations

import hashlib
import secrets

import attrs

from waihu_sip.errors import DigestError

__all__ = [
    "CHALLENGE_HEADERS",
    "DigestChallenge",
    "DigestSession",
    "authorization_value",
    "choose_challenge",
    "digest_response",
]

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
CNONCE_BYTES = 8  # 64 bits of client nonce, hex-encoded
TEXT_ENCODING = "utf-8"
TEXT_ERRORS = "surrogateescape"  # how ``message`` decoded the header: gives back the raw bytes
MAX_AUTH_ROUNDS = 6  # challenge rounds for one request flow, stale nonces included
# status → (challenge header, the header that answers it)
CHALLENGE_HEADERS = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


@attrs.frozen
class DigestChallenge:
    """One Digest challenge from a 401 or 407."""

    realm: str
    nonce: str
    algorithm: str = "MD5"  # as the server spelled it, e.g. "MD5", "SHA-256-sess"
    qop: tuple[str, ...] = ()  # offered qop values, lower-cased; () for none
    opaque: str | None = None
    stale: bool = False

    @classmethod
    def parse(cls, value: str) -> DigestChallenge:
        """Parse a challenge header value; raises ``DigestError`` naming what is wrong."""
        scheme, _, rest = value.strip().partition(" ")
        if scheme.lower() != "digest":
            raise DigestError(f"not a Digest challenge: {scheme!r}")
        params = parse_auth_params(rest)
        for required in ("realm", "nonce"):
            if required not in params:
                raise DigestError(f"challenge has no {required}")
        qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=params.get("algorithm", "MD5"),
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
        )

    @property
    def supported(self) -> bool:
        """True when we can answer it."""
        base = self.algorithm.upper().removesuffix("-SESS")
        qop_ok = not self.qop or "auth" in self.qop or "auth-int" in self.qop
        return base in _HASHES and qop_ok


def parse_auth_params(text: str) -> dict[str, str]:
    """Parse ``name=token, name="quoted, string"`` lists; names lower-cased."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise DigestError(f"auth parameter without '=' near {text[i : i + 20]!r}")
        name = text[i:eq].strip().lower()
        if not name or any(c in name for c in ' ,"'):
            raise DigestError(f"bad auth parameter name near {text[i : i + 20]!r}")
        i = eq + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            value_chars: list[str] = []
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value_chars.append(text[i])
                i += 1
            if i >= n:
                raise DigestError(f"unterminated quoted value for {name}")
            i += 1
            value = "".join(value_chars)
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            value = text[i:end].strip()
            i = end
        params[name] = value
    return params


def choose_challenge(values: list[str]) -> DigestChallenge:
    """The first challenge we can answer among header values, in the server's order."""
    problems = []
    for value in values:
        try:
            challenge = DigestChallenge.parse(value)
        except DigestError as exc:
            problems.append(str(exc))
            continue
        if challenge.supported:
            return challenge
        problems.append(f"unsupported algorithm {challenge.algorithm} / qop {challenge.qop}")
    raise DigestError("no usable challenge: " + ("; ".join(problems) or "none given"))


def digest_response(
    challenge: DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> tuple[str, str | None]:
    """The ``response`` value and the qop used (None when the challenge offered none)."""
    algorithm = challenge.algorithm.upper()
    base = algorithm.removesuffix("-SESS")
    if base not in _HASHES:
        raise DigestError(f"unsupported algorithm {challenge.algorithm}")
    hash_fn = _HASHES[base]

    def h(text: str | bytes) -> str:
        data = text.encode(TEXT_ENCODING, TEXT_ERRORS) if isinstance(text, str) else text
        return hash_fn(data).hexdigest()

    ha1 = h(f"{username}:{challenge.realm}:{password}")
    if algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    qop: str | None
    if not challenge.qop:
        qop = None
    elif "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    else:
        raise DigestError(f"unsupported qop {challenge.qop}")
    ha2 = h(f"{method}:{uri}:{h(body)}") if qop == "auth-int" else h(f"{method}:{uri}")
    if qop is None:
        return h(f"{ha1}:{challenge.nonce}:{ha2}"), None
    return h(f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}"), qop


def authorization_value(
    challenge: DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str | None = None,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The ``Authorization``/``Proxy-Authorization`` header value answering ``challenge``."""
    cnonce = cnonce or secrets.token_hex(CNONCE_BYTES)
    response, qop = digest_response(
        challenge,
        method=method,
        uri=uri,
        username=username,
        password=password,
        cnonce=cnonce,
        nc=nc,
        body=body,
    )
    parts = [
        f'username="{_quote(username)}"',
        f'realm="{_quote(challenge.realm)}"',
        f'nonce="{_quote(challenge.nonce)}"',
        f'uri="{_quote(uri)}"',
        f'response="{response}"',
        f"algorithm={challenge.algorithm}",
    ]
    if qop is not None:
        parts += [f'cnonce="{cnonce}"', f"qop={qop}", f"nc={nc:08x}"]
    if challenge.opaque is not None:
        parts.append(f'opaque="{_quote(challenge.opaque)}"')
    return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class DigestSession:
    """Credentials for one request flow (an INVITE and its retries, a BYE) over challenge rounds.

    ``respond`` takes a 401/407 and gives every credential header the retried
    request must carry — one per (header, realm) answered so far, so a proxy's
    407 and then the callee's 401 are both satisfied — or None to give up:

    - a realm we have not answered for this header: answer it;
    - a realm we answered before, challenged again with ``stale=true``: answer
      again with the new nonce (not a refusal);
    - a realm we answered before, challenged again without ``stale``: our
      credentials were refused; give up;
    - more than ``MAX_AUTH_ROUNDS`` rounds: give up (a server that keeps saying
      stale).

    The nonce count (``nc``) goes up each time the same nonce is used; the
    cnonce is fresh per answer.
    """

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._answers: dict[tuple[str, str], tuple[DigestChallenge, str]] = {}
        self._nonce_counts: dict[str, int] = {}
        self.rounds = 0
        self.problem: str | None = None  # why the last ``respond`` gave up

    def respond(
        self, response_status: int, challenges: list[str], *, method: str, uri: str, body: bytes
    ) -> list[tuple[str, str]] | None:
        """Headers for the retry answering a 401/407 (its status and challenge header values)."""
        if response_status not in CHALLENGE_HEADERS:
            raise ValueError(f"{response_status} is not a challenge")
        _, answer_header = CHALLENGE_HEADERS[response_status]
        self.rounds += 1
        if self.rounds > MAX_AUTH_ROUNDS:
            self.problem = f"still challenged after {MAX_AUTH_ROUNDS} rounds"
            return None
        try:
            challenge = choose_challenge(challenges)
        except DigestError as exc:
            self.problem = str(exc)
            return None
        key = (answer_header, challenge.realm)
        if key in self._answers and not challenge.stale:
            self.problem = f"credentials refused for realm {challenge.realm!r}"
            return None
        nc = self._nonce_counts.get(challenge.nonce, 0) + 1
        self._nonce_counts[challenge.nonce] = nc
        value = authorization_value(
            challenge,
            method=method,
            uri=uri,
            username=self.username,
            password=self._password,
            nc=nc,
            body=body,
        )
        self._answers[key] = (challenge, value)
        self.problem = None
        return [(header, value) for (header, _), (_, value) in self._answers.items()]
