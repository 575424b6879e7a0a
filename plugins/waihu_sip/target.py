"""Call targets the SIP trunk can dial: checked before a call id is issued, then made a URI.

``check_target`` is what ``SipTrunk.check_target`` answers (the core asks it
through ``waihu.api.check_target`` before it files a call): it accepts

- a phone number: ASCII digits 0-9, with ``*`` and ``#`` (service codes such
  as ``*99#``) or a leading ``+`` (E.164), at most ``MAX_NUMBER_DIGITS``
  characters; the visual separators of RFC 3966 §5.1.1 (space, ``-``, ``.``,
  ``(``, ``)``) are dropped (``138-0013 8000`` → ``13800138000``);
- a ``tel:`` URI holding such a number (its parameters are dropped);
- a SIP URI, ``sip:`` or ``sips:``, with a user and a host that is a valid
  host name or IP address (IPv6 in brackets), an optional port and
  parameters, and no ``?headers``; ``user@host`` is read as ``sip:user@host``.

Anything else — ``abc`` (a name is not a number: it would be dialled as
``sip:abc@proxy``), ``010<1234>;x=1``, ``sip:@``, ``sip:``, digits outside
ASCII such as ``²`` or ``١٢`` (which ``str.isdigit`` accepts) — raises
``BadTarget`` saying what is wrong and what a good target looks like.

The checked text is what gets dialled (and filed as the call's number):
``request_uri`` turns it into the INVITE's Request-URI, a number going to the
trunk's domain with ``#`` escaped (``%23``, RFC 3261 §19.1.2).

What it is not: number *plans* (whether ``+86 138…`` exists, or how a
campaign writes its E.164 numbers for a carrier: ``waihu.campaign.numbers``),
or SIP URI parsing itself (``address``). No I/O: host names are checked for
syntax, never resolved.
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from waihu.api import BadTarget
from waihu_sip.address import SipUri, is_ascii_digits
from waihu_sip.errors import SipParseError

__all__ = ["MAX_NUMBER_DIGITS", "MAX_URI_CHARS", "BadTarget", "check_target", "request_uri"]

# E.164 allows 15 digits; an international prefix (00, 011), a carrier-select prefix
# (179xx) and a service code's * and # fit well inside this.
MAX_NUMBER_DIGITS = 24
MAX_URI_CHARS = 256  # far beyond any real Request-URI; a pasted paragraph is refused
MAX_HOST_CHARS = 253  # RFC 1035 §2.3.4, a name in text form
VISUAL_SEPARATORS = str.maketrans("", "", " -().")  # RFC 3966 §5.1.1, dropped from numbers
NUMBER_CHARS = frozenset("0123456789*#+")
ASCII_DIGITS = frozenset("0123456789")
SIP_SCHEMES = ("sip:", "sips:")
TEL_SCHEME = "tel:"
ESCAPED_HASH = "%23"  # '#' is not allowed unescaped in a SIP URI's user part
GOOD = "dial a number (digits 0-9, * and #, a leading + for E.164) or a SIP URI (sip:user@host)"

# RFC 3261 §25.1: user = 1*( unreserved / escaped / user-unreserved ); ';' and '?' are left
# out (they would be read as URI parameters or headers), '#' is escaped on the way out.
_URI_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,/#]|%[0-9A-Fa-f]{2})+")
# RFC 3261 §25.1 paramchar: unreserved / escaped / param-unreserved
_PARAM = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # RFC 1123 §2.1


def check_target(target: str) -> str:
    """The target as it will be dialled: a number or a ``sip:``/``sips:`` URI, canonical.

    Raises ``BadTarget`` naming the target, what is wrong with it and what a
    good one looks like. Checking a checked target gives it back unchanged.
    """
    text = target.strip()
    if not text:
        raise BadTarget(f"the target is empty: {GOOD}")
    lowered = text.lower()
    if lowered.startswith(SIP_SCHEMES):
        return _check_uri(target, text)
    if lowered.startswith(TEL_SCHEME):
        return _check_number(target, text[len(TEL_SCHEME) :].partition(";")[0])
    if "@" in text:
        return _check_uri(target, f"sip:{text}")
    return _check_number(target, text)


def request_uri(checked: str, domain: str) -> SipUri:
    """The Request-URI for a target ``check_target`` returned; a number goes to ``domain``."""
    if checked.lower().startswith(SIP_SCHEMES):
        return SipUri.parse(checked)
    return SipUri.parse(f"sip:{checked.replace('#', ESCAPED_HASH)}@{domain}")


def _check_number(target: str, text: str) -> str:
    number = text.translate(VISUAL_SEPARATORS)
    stray = next((c for c in number if c not in NUMBER_CHARS), None)
    if stray is not None:
        if stray.isdigit():  # '²', '١': a digit to Unicode, not to a telephone network
            problem = f"{stray!r} is not one of the digits 0-9"
        else:
            problem = f"{stray!r} does not belong in a phone number"
        raise BadTarget(f"{target!r} is not a phone number or SIP URI ({problem}): {GOOD}")
    if not ASCII_DIGITS & set(number):
        raise BadTarget(f"{target!r} has no digits: {GOOD}")
    if "+" in number[1:]:
        raise BadTarget(f"{target!r}: '+' may only lead a number (+8613800138000): {GOOD}")
    if number.startswith("+") and not set(number[1:]) <= ASCII_DIGITS:
        raise BadTarget(f"{target!r}: only digits may follow a leading '+' (E.164): {GOOD}")
    length = len(number.removeprefix("+"))
    if length > MAX_NUMBER_DIGITS:
        raise BadTarget(
            f"{target!r} is too long for a phone number "
            f"({length} digits, at most {MAX_NUMBER_DIGITS}): {GOOD}"
        )
    return number


def _check_uri(target: str, text: str) -> str:
    def bad(problem: str) -> BadTarget:
        return BadTarget(f"{target!r} is not a SIP URI to dial ({problem}): {GOOD}")

    if len(text) > MAX_URI_CHARS:
        raise bad(f"{len(text)} characters, at most {MAX_URI_CHARS}")
    stray = next((c for c in text if not c.isascii() or not c.isprintable() or c.isspace()), None)
    if stray is not None:
        raise bad(f"{stray!r} does not belong in a URI")
    if "?" in text:
        raise bad("a Request-URI takes no ?headers")
    try:
        uri = SipUri.parse(text)
    except SipParseError as exc:  # the only error SipUri.parse raises, ports included
        raise bad(str(exc).removesuffix(f" in {text!r}")) from None
    if not uri.user:
        raise bad("no user: it looks like sip:1001@pbx.example.com")
    if not _URI_USER.fullmatch(uri.user):
        raise bad(f"user {uri.user!r} has characters a SIP URI does not allow unescaped")
    if not _valid_host(uri.host):
        raise bad(f"{uri.host!r} is not a host name or IP address")
    for name, value in uri.params.items():
        for part in (name, value):
            if part is not None and not _PARAM.fullmatch(part):
                raise bad(f"parameter {name!r} is malformed")
    escaped = attrs.evolve(uri, user=uri.user.replace("#", ESCAPED_HASH))
    return str(escaped)


def _valid_host(host: str) -> bool:
    """A host name (RFC 1123 labels, not all-numeric at the top) or an IPv4/IPv6 address."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    if len(host) > MAX_HOST_CHARS:
        return False
    labels = host.split(".")
    # a dotted run of numbers that is not a valid IPv4 address is a typo, not a name
    return all(_LABEL.fullmatch(label) for label in labels) and not is_ascii_digits(labels[-1])
