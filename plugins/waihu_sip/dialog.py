"""A SIP dialog as the caller sees it (RFC 3261 §12): identity, route set, CSeq, request building.

Built from our INVITE and the far end's 2xx (or a 1xx with a To tag: an
early dialog, for PRACK); builds the ACK and in-dialog requests (BYE, PRACK),
choosing Request-URI, Route headers and next hop per §12.2.1.1 (loose and
strict routing), recognises the far end's requests and follows target
refreshes (§12.2: a re-INVITE's or UPDATE's Contact becomes the remote
target).

Not for: sending or retransmitting (``transaction``, ``leg``) or media.
"""

from __future__ import annotations

import attrs

from waihu_sip.address import NameAddress, SipUri
from waihu_sip.errors import SipParseError
from waihu_sip.identity import LocalIdentity
from waihu_sip.message import Headers, SipRequest, SipResponse
from waihu_sip.transport import new_branch

__all__ = ["MAX_FORWARDS", "Dialog"]

MAX_FORWARDS = 70  # RFC 3261 §8.1.1.6 recommended value
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})  # RFC 3261 §12.2, RFC 3311


@attrs.define
class Dialog:
    """One confirmed dialog from our (the UAC's) side."""

    call_id: str
    local: NameAddress  # our From, with our tag
    remote: NameAddress  # their To, with their tag
    remote_target: SipUri  # their Contact
    route_set: list[NameAddress]
    local_cseq: int
    remote_cseq: int | None = None

    @classmethod
    def from_answer(cls, invite: SipRequest, answer: SipResponse) -> Dialog:
        """The dialog a 2xx (or a tagged 1xx: an early dialog) to ``invite`` creates (§12.1.2).

        Raises ``SipParseError`` when the answer lacks a To tag. A missing
        Contact is tolerated: the Request-URI is used as the remote target.
        """
        remote = answer.to
        if remote.tag is None:
            raise SipParseError("2xx without a To tag")
        contacts = answer.headers.get_all("Contact")
        if contacts:
            target = NameAddress.parse(contacts[0]).uri
        else:
            target = SipUri.parse(invite.uri)
        # §12.1.2: the UAC's route set is the Record-Route list in reverse order
        routes = [NameAddress.parse(v) for v in answer.headers.get_all("Record-Route")]
        routes.reverse()
        return cls(
            call_id=invite.call_id,
            local=invite.from_,
            remote=remote,
            remote_target=target,
            route_set=routes,
            local_cseq=invite.cseq.number,
        )

    @property
    def local_tag(self) -> str | None:
        """Our tag."""
        return self.local.tag

    @property
    def remote_tag(self) -> str | None:
        """Their tag."""
        return self.remote.tag

    def matches(self, request: SipRequest) -> bool:
        """True when ``request`` from the far end belongs to this dialog (§12.2.2)."""
        return (
            request.call_id == self.call_id
            and request.to.tag == self.local_tag
            and request.from_.tag == self.remote_tag
        )

    def next_hop(self) -> SipUri:
        """Where in-dialog requests are sent: first route, else the remote target."""
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target

    def request(
        self,
        method: str,
        *,
        via: str,
        cseq: int | None = None,
        extra: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SipRequest:
        """An in-dialog request. A new CSeq is taken unless ``cseq`` is given (ACK uses the
        INVITE's number)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        if not self.route_set:
            uri, routes = str(self.remote_target), []
        elif self.route_set[0].uri.loose_route:
            uri, routes = str(self.remote_target), [str(r) for r in self.route_set]
        else:
            # strict routing (§12.2.1.1): first route becomes the Request-URI, target goes last
            uri = str(attrs.evolve(self.route_set[0].uri, headers=""))
            routes = [str(r) for r in self.route_set[1:]] + [f"<{self.remote_target}>"]
        headers = Headers(
            [
                ("Via", via),
                ("Max-Forwards", str(MAX_FORWARDS)),
                ("From", str(self.local)),
                ("To", str(self.remote)),
                ("Call-ID", self.call_id),
                ("CSeq", f"{cseq} {method}"),
            ]
        )
        for route in routes:
            headers.add("Route", route)
        for name, value in extra or []:
            headers.add(name, value)
        return SipRequest(headers=headers, body=body, method=method, uri=uri)

    def new_request(
        self, identity: LocalIdentity, method: str, *, cseq: int | None = None
    ) -> SipRequest:
        """``request`` on a new client transaction of ours: a fresh Via branch, our User-Agent."""
        return self.request(
            method,
            via=identity.via(new_branch()),
            cseq=cseq,
            extra=[("User-Agent", identity.user_agent)],
        )

    def refresh_target(self, message: SipRequest | SipResponse) -> bool:
        """§12.2: a target refresh (re-INVITE or UPDATE from the far end, or the 2xx to one of
        ours) replaces the remote target with its Contact. True when the target changed; a
        message without a usable Contact leaves it as it was."""
        method = message.method if isinstance(message, SipRequest) else message.cseq.method
        if method not in TARGET_REFRESH_METHODS:
            return False
        contacts = message.headers.get_all("Contact")
        if not contacts:
            return False
        try:
            target = NameAddress.parse(contacts[0]).uri
        except SipParseError:
            return False  # a bad Contact must not cost the call its current target
        changed = target != self.remote_target
        self.remote_target = target
        return changed

    def accept_remote_cseq(self, request: SipRequest) -> bool:
        """Record the far end's CSeq; False when it went backwards (§12.2.2: answer 500)."""
        number = request.cseq.number
        if request.method == "ACK":
            return True  # an ACK repeats its INVITE's number
        if self.remote_cseq is not None and number <= self.remote_cseq:
            return False
        self.remote_cseq = number
        return True
