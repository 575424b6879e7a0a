"""Keeping a SIP trunk registered (RFC 3261 §10): what REGISTER to send, when, and what the
answer means.

Two parts:

- the sans-IO core, ``RegisterClient``: it builds each
  REGISTER (To/From = the address of record ``sip:user@domain``, our
  Contact, one Call-ID for the life of the registration and a CSeq that
  grows by one per request, §10.2) and reads each answer into an
  ``Outcome``: ``Registered`` (the granted binding, and when to refresh it),
  ``Resend`` (answer a digest challenge, or ask again for a longer binding
  after 423 Interval Too Brief) or ``Refused`` (the registrar said no, or
  nothing at all, and when to try again). It never touches a socket or a
  clock: times are handed in and delays handed back, so every rule is
  tested with plain values.
- ``keep_registered``, the loop around it: send, wait, sleep as told, until
  cancelled; then remove the binding (``Expires: 0``) within
  ``UNREGISTER_GRACE`` seconds.

The rules, as Kamailio, Asterisk and baresip apply them:

- refresh before the binding runs out: at the expiry the registrar granted
  (our Contact's ``expires`` parameter in the 2xx, else its Expires header,
  else what we asked for) less ``REFRESH_MARGIN`` seconds, or half-way
  through for bindings shorter than twice that margin;
- digest (``waihu_sip.digest``): among the challenges of a 401/407, SHA-256
  wins over MD5 (RFC 8760 §2.4: the client uses the most preferred
  algorithm it supports); a realm that offered SHA-256 once is never
  answered with MD5 later: such a challenge is refused as a downgrade,
  logged as an error, not answered. A challenge is answered once per
  attempt; a second challenge to fresh credentials means the password is
  wrong, unless it says ``stale=true`` (the nonce expired, RFC 7616 §3.3),
  which is answered again, up to ``MAX_AUTH_ROUNDS`` rounds. The last
  challenge is reused for the next refresh (nonce count + 1), so a
  registrar that keeps its nonces answers at the first try;
- 423 Interval Too Brief: ask again with its Min-Expires (§10.2.8);
- any other final non-2xx, or no answer (Timer F), is a failure: try again
  after ``RETRY_FIRST`` seconds, doubling up to ``RETRY_MAX`` (the trunk's
  own bring-up backoff, ``health.Backoff``), or after the Retry-After of a
  503 when that is longer.

What it is not: the trunk's state (``health.TrunkHealth`` is told what
happened), the transport or the non-INVITE transaction (``transport``,
``transaction``), nor a registrar: we never take registrations.

Error handling: nothing here raises for what the registrar sends; a
malformed answer (a challenge we cannot parse, a Min-Expires that is not a
number) becomes a ``Refused`` whose ``problem`` says what was wrong, and
registration goes on trying with backoff.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from waihu_sip.address import NameAddress, SipUri
from waihu_sip.dialog import MAX_FORWARDS
from waihu_sip.digest import DigestChallenge, authorization_value
from waihu_sip.errors import DigestError, SipParseError
from waihu_sip.health import RETRY_FIRST, RETRY_MAX, Backoff
from waihu_sip.identity import LocalIdentity
from waihu_sip.message import Headers, SipRequest, SipResponse
from waihu_sip.transport import new_branch, new_token

__all__ = [
    "MAX_AUTH_ROUNDS",
    "REFRESH_MARGIN",
    "UNREGISTER_GRACE",
    "Outcome",
    "Refused",
    "RegisterClient",
    "Registered",
    "Resend",
    "keep_registered",
    "refresh_delay",
]

REFRESH_MARGIN = 30.0  # seconds before expiry a long binding is refreshed (room for retries)
MIN_REFRESH = 1.0  # never refresh sooner than this after a success, whatever was granted
MAX_AUTH_ROUNDS = 3  # challenges answered in one attempt (a first one, then stale nonces)
UNREGISTER_GRACE = 2.0  # seconds the Expires: 0 on shutdown may take before we give up
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5
STATUS_UNAUTHORIZED = 401
STATUS_PROXY_AUTH = 407
STATUS_INTERVAL_TOO_BRIEF = 423
STATUS_UNAVAILABLE = 503
# digest algorithms by preference, strongest first (RFC 8760 §2.4); "-sess" ranks with its base
ALGORITHM_RANK = {"SHA-256": 0, "MD5": 1}
STRONG_ALGORITHMS = frozenset({"SHA-256"})


@attrs.frozen
class Registered:
    """The registrar accepted the binding for ``expires`` seconds; refresh in ``refresh_in``."""

    expires: int
    refresh_in: float


@attrs.frozen
class Resend:
    """Send the next REGISTER at once (a challenge to answer, a longer interval to ask for)."""

    why: str


@attrs.frozen
class Refused:
    """No binding: the registrar answered ``status``/``reason`` (None: no answer at all).

    ``problem`` is one line for people; ``retry_in`` the seconds until the
    next attempt; ``downgrade`` is True when a challenge was refused for
    offering a weaker digest algorithm than the realm did before.
    """

    status: int | None
    reason: str
    problem: str
    retry_in: float
    downgrade: bool = False


Outcome = Registered | Resend | Refused


def refresh_delay(expires: int) -> float:
    """Seconds after a success to refresh a binding of ``expires`` seconds."""
    return max(MIN_REFRESH, expires / 2, expires - REFRESH_MARGIN)


def _base_algorithm(challenge: DigestChallenge) -> str:
    return challenge.algorithm.upper().removesuffix("-SESS")


class RegisterClient:
    """The REGISTER requests and answers of one binding (sans-IO; see the module docstring).

    ``aor`` is the address of record (To and From); ``registrar`` the
    Request-URI (§10.2: the domain of the registrar, no user part);
    ``contact_user`` the user part of our Contact; ``route`` a pre-loaded
    Route value (``<sip:outbound;lr>``) or None; ``username``/``password``
    the digest credentials (None: none configured, a challenge is a failure).
    """

    def __init__(
        self,
        *,
        aor: SipUri,
        registrar: SipUri,
        contact_user: str,
        expires: int,
        username: str | None = None,
        password: str | None = None,
        route: str | None = None,
        backoff: Backoff | None = None,
        call_id: str | None = None,
    ) -> None:
        self.aor = aor
        self.registrar = registrar
        self.contact_user = contact_user
        self.expires = expires  # what we ask for; raised by a 423
        self.username = username
        self.password = password
        self.route = route
        self.call_id = call_id or new_token()
        self.backoff = backoff or Backoff(RETRY_FIRST, RETRY_MAX)
        self._from_tag = new_token()
        self._cseq = 0
        self._challenge: tuple[str, DigestChallenge] | None = None  # header name, challenge
        self._nc = 0  # nonce count for the challenge we hold
        self._fresh = False  # the credentials just sent answer a challenge of this attempt
        self._rounds = 0  # challenges answered in this attempt
        self._strong_realms: set[str] = set()  # realms that offered SHA-256 at least once
        self._contact_uri: SipUri | None = None  # our Contact in the last request

    @property
    def cseq(self) -> int:
        """The CSeq number of the last request built."""
        return self._cseq

    # ─────────────── requests ───────────────

    def request(self, identity: LocalIdentity, *, expires: int | None = None) -> SipRequest:
        """The next REGISTER: ``expires`` seconds (default: what we ask for; 0 removes our
        binding), credentials when we hold a challenge."""
        if self._cseq >= MAX_CSEQ:
            # §10.2: the CSeq goes on growing within one Call-ID; past 2**31 start a new one
            self.call_id, self._cseq = new_token(), 0
        self._cseq += 1
        seconds = self.expires if expires is None else expires
        contact_uri = SipUri(host=identity.host, port=identity.port, user=self.contact_user)
        self._contact_uri = contact_uri
        aor = NameAddress(uri=self.aor)
        headers = Headers(
            [
                ("Via", identity.via(new_branch())),
                ("Max-Forwards", str(MAX_FORWARDS)),
                *([("Route", self.route)] if self.route else []),
                ("From", str(aor.with_tag(self._from_tag))),
                ("To", str(aor)),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self._cseq} REGISTER"),
                ("Contact", f"<{contact_uri}>;expires={seconds}"),
                ("Expires", str(seconds)),
                ("Allow", identity.allow),
                ("User-Agent", identity.user_agent),
            ]
        )
        request = SipRequest(headers=headers, body=b"", method="REGISTER", uri=str(self.registrar))
        if self._challenge is not None and self.username and self.password is not None:
            name, challenge = self._challenge
            self._nc += 1
            headers.add(
                name,
                authorization_value(
                    challenge,
                    method="REGISTER",
                    uri=request.uri,
                    username=self.username,
                    password=self.password,
                    nc=self._nc,
                ),
            )
        return request

    # ─────────────── answers ───────────────

    def on_response(self, response: SipResponse) -> Outcome:
        """What the final ``response`` to the last REGISTER means, and what to do next."""
        status = response.status
        if response.success:
            return self._registered(response)
        if status in (STATUS_UNAUTHORIZED, STATUS_PROXY_AUTH):
            return self._challenged(response)
        if status == STATUS_INTERVAL_TOO_BRIEF:
            return self._too_brief(response)
        retry_in = self.backoff.next()
        if status == STATUS_UNAVAILABLE:
            retry_in = max(retry_in, _retry_after(response))
        return self._refused(response, f"REGISTER refused: {status} {response.reason}", retry_in)

    def on_timeout(self) -> Refused:
        """The last REGISTER got no final answer at all (Timer F, or no address)."""
        self._end_attempt()
        return Refused(None, "", "no answer to REGISTER", self.backoff.next())

    def _registered(self, response: SipResponse) -> Outcome:
        granted = self._granted_expires(response)
        self._end_attempt()
        self.backoff.reset()
        if granted <= 0:
            # the registrar kept no binding of ours: as good as a refusal
            return Refused(
                response.status,
                response.reason,
                "the registrar answered 2xx but lists no binding for our Contact",
                self.backoff.next(),
            )
        return Registered(expires=granted, refresh_in=refresh_delay(granted))

    def _granted_expires(self, response: SipResponse) -> int:
        """Our Contact's ``expires`` in the 2xx, else its Expires header, else what we asked."""
        ours = self._contact_uri
        contacts: list[NameAddress] = []
        for value in response.headers.get_all("Contact"):
            try:
                contacts.append(NameAddress.parse(value))
            except SipParseError:
                continue  # another UA's odd binding says nothing about ours
        for contact in contacts:
            uri = contact.uri
            if ours is not None and (uri.user, uri.host, uri.port) == (
                ours.user,
                ours.host,
                ours.port,
            ):
                seconds = _seconds(contact.params.get("expires"))
                if seconds is not None:
                    return seconds
                break
        else:
            if contacts:
                return 0  # the registrar lists bindings, none of them ours
        header = _seconds(response.headers.get("Expires"))
        return header if header is not None else self.expires

    def _challenged(self, response: SipResponse) -> Outcome:
        status = response.status
        header = "WWW-Authenticate" if status == STATUS_UNAUTHORIZED else "Proxy-Authenticate"
        answer = "Authorization" if status == STATUS_UNAUTHORIZED else "Proxy-Authorization"
        if not self.username or self.password is None:
            return self._refused(
                response, f"REGISTER challenged ({status}) and no password is configured"
            )
        try:
            challenge = self._choose(response.headers.get_all(header))
            # answer it once now: a realm or nonce that cannot be hashed fails here, not later
            authorization_value(
                challenge, method="REGISTER", uri="sip:x", username=self.username, password=""
            )
        except (DigestError, UnicodeError) as exc:
            return self._refused(response, f"REGISTER challenged ({status}): {exc}")
        if challenge.realm in self._strong_realms and _base_algorithm(challenge) not in (
            STRONG_ALGORITHMS
        ):
            # a weaker algorithm than the realm offered before: a downgrade attack (RFC 8760)
            self._challenge = None
            return attrs.evolve(
                self._refused(
                    response,
                    f"REGISTER challenge for realm {challenge.realm!r} offers only "
                    f"{challenge.algorithm} where it offered SHA-256 before: refused as a "
                    "downgrade",
                ),
                downgrade=True,
            )
        if self._fresh and not challenge.stale:
            return self._refused(
                response,
                f"REGISTER refused: {status} {response.reason} (credentials for "
                f"{self.username!r} not accepted)",
            )
        self._rounds += 1
        if self._rounds > MAX_AUTH_ROUNDS:
            return self._refused(
                response, f"REGISTER challenged {self._rounds} times in a row: giving up for now"
            )
        if _base_algorithm(challenge) in STRONG_ALGORITHMS:
            self._strong_realms.add(challenge.realm)
        self._challenge = (answer, challenge)
        self._nc = 0
        self._fresh = True
        return Resend("stale nonce" if challenge.stale else f"challenged ({status})")

    def _choose(self, values: list[str]) -> DigestChallenge:
        """The strongest challenge we can answer among ``values``; DigestError when none."""
        usable: list[DigestChallenge] = []
        problems: list[str] = []
        for value in values:
            try:
                challenge = DigestChallenge.parse(value)
            except DigestError as exc:
                problems.append(str(exc))
                continue
            if challenge.supported:
                usable.append(challenge)
            else:
                problems.append(f"unsupported algorithm {challenge.algorithm}")
        if not usable:
            raise DigestError("no usable challenge: " + ("; ".join(problems) or "none given"))
        # a realm that offers SHA-256 anywhere in this answer counts as strong
        for challenge in usable:
            if _base_algorithm(challenge) in STRONG_ALGORITHMS:
                self._strong_realms.add(challenge.realm)
        return min(usable, key=lambda c: ALGORITHM_RANK[_base_algorithm(c)])

    def _too_brief(self, response: SipResponse) -> Outcome:
        minimum = _seconds(response.headers.get("Min-Expires"))
        if minimum is None or minimum <= self.expires:
            return self._refused(
                response,
                f"REGISTER refused: 423 {response.reason} with Min-Expires "
                f"{response.headers.get('Min-Expires')!r}, not more than the {self.expires} s "
                "asked",
            )
        self.expires = minimum
        return Resend(f"the registrar wants at least {minimum} s")

    def _refused(
        self, response: SipResponse, problem: str, retry_in: float | None = None
    ) -> Refused:
        self._end_attempt()
        return Refused(
            response.status,
            response.reason,
            problem,
            self.backoff.next() if retry_in is None else retry_in,
        )

    def _end_attempt(self) -> None:
        """The attempt is over: the next REGISTER starts a new one (a preemptive answer)."""
        self._fresh = False
        self._rounds = 0


def _seconds(text: str | None) -> int | None:
    """A delta-seconds value (ASCII digits only), or None when absent or malformed."""
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


def _retry_after(response: SipResponse) -> float:
    """The Retry-After of a 503 in seconds (§20.33: delta-seconds, then comments), else 0."""
    value = response.headers.get("Retry-After") or ""
    seconds = _seconds(value.split(";")[0].split("(")[0])
    return float(seconds) if seconds is not None else 0.0


Send = Callable[[SipRequest], Awaitable[SipResponse | None]]


async def keep_registered(
    client: RegisterClient,
    identity: LocalIdentity,
    send: Send,
    on_outcome: Callable[[Outcome, float], None],
    *,
    unregister_grace: float = UNREGISTER_GRACE,
    serve: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Keep ``client``'s binding registered until cancelled, then remove it.

    ``send`` runs one REGISTER transaction and returns the final answer, or
    None when there was none (it resolves where to send on each call, so a
    changed DNS record is followed). ``on_outcome`` hears each outcome with
    the wall-clock time. On cancellation a REGISTER with ``Expires: 0`` goes
    out (answering one challenge if need be), shielded but given at most
    ``unregister_grace`` seconds: a registrar that does not answer does not
    hold up the shutdown. ``serve`` routes the answers meanwhile: the
    trunk's own receive loop is being cancelled with us.
    """
    registered = False
    try:
        while True:
            response = await send(client.request(identity))
            outcome = client.on_response(response) if response else client.on_timeout()
            on_outcome(outcome, time.time())
            if isinstance(outcome, Registered):
                registered = True
                await trio.sleep(outcome.refresh_in)
            elif isinstance(outcome, Refused):
                await trio.sleep(outcome.retry_in)
    finally:
        if registered:
            with trio.CancelScope(shield=True), trio.move_on_after(unregister_grace):
                async with trio.open_nursery() as nursery:
                    if serve is not None:
                        nursery.start_soon(serve)
                    await _unregister(client, identity, send)
                    nursery.cancel_scope.cancel()


async def _unregister(client: RegisterClient, identity: LocalIdentity, send: Send) -> None:
    """REGISTER with Expires: 0 for our Contact (§10.2.2); one challenge is answered."""
    for _ in range(2):
        response = await send(client.request(identity, expires=0))
        if response is None or response.status not in (STATUS_UNAUTHORIZED, STATUS_PROXY_AUTH):
            return
        if not isinstance(client.on_response(response), Resend):
            return
