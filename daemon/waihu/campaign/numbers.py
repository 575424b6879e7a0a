"""Phone numbers: what people write, read into E.164; E.164, written the way a trunk dials it.

``to_e164`` reads a number as a person or a spreadsheet writes it — ``13800138000``,
``+86 138 0013 8000``, ``0086-138-0013-8000``, ``8613800138000``, ``010-12345678``,
``(0755)12345678``, ``0755 1234 5678``, full-width digits — with ``phonenumbers``
(Google's libphonenumber metadata) and a default region for numbers written without
a country code, and returns E.164 (``+8613800138000``) or raises ``InvalidNumber``
with a reason that quotes the text.

``format_for_dial`` writes an E.164 number in one of ``DIAL_STYLES``, because trunks
differ in what they accept in the Request-URI (``check_dial_style`` tells ahead of
time whether a style can be dialled from a region):

- ``e164``: ``+8613800138000``;
- ``national``: the digits dialled inside the trunk's country, with the trunk prefix
  where the country uses one: ``13800138000``, ``01012345678``. A number of another
  country cannot be dialled nationally, so it gets the ``international`` form;
- ``international``: the trunk country's international (IDD) prefix, the country
  code and the national number, digits only: ``008613800138000`` from CN,
  ``01186…`` from US. Countries where each carrier has its own prefix (KR, BR…)
  have none to use, and refuse this style.

What it is not: a carrier or number-portability lookup, or a check that a number is
in service — only that it is well-formed and allocated according to the metadata.

Error handling: ``to_e164`` raises ``InvalidNumber`` (a ``WaihuError`` and a
``ValueError``) for text that is not a dialable number; ``format_for_dial`` raises
``ValueError`` for an unknown style or region or for text that is not E.164 — those
are configuration or programming errors, not bad input rows.
"""

from __future__ import annotations

import re
from typing import Literal

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

from waihu.api import WaihuError

__all__ = [
    "DIAL_STYLES",
    "DialStyle",
    "InvalidNumber",
    "check_dial_style",
    "format_for_dial",
    "to_e164",
]

DialStyle = Literal["e164", "national", "international"]
DIAL_STYLES: tuple[str, ...] = ("e164", "national", "international")

# A number Excel showed as "1.38001E+10" and saved that way into a CSV: the digits
# beyond the shown precision are gone, so no reading of it can be right.
SCIENTIFIC = re.compile(r"[0-9](?:\.[0-9]+)?[eE]\+?[0-9]+")

# Why phonenumbers could not parse a text, in the operator's words.
PARSE_ERRORS: dict[int, str] = {
    NumberParseException.INVALID_COUNTRY_CODE: "has no valid country code",
    NumberParseException.NOT_A_NUMBER: "is not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "is too short",
    NumberParseException.TOO_SHORT_NSN: "is too short",
    NumberParseException.TOO_LONG: "is too long",
}


class InvalidNumber(WaihuError, ValueError):
    """A text is not a dialable phone number; ``reason`` says why, quoting ``text``."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(reason)
        self.text = text
        self.reason = reason


def to_e164(text: str, region: str) -> str:
    """The E.164 form of ``text``; ``region`` (ISO 3166, ``"CN"``) is the country
    assumed for a number written without a country code.

    Raises ``InvalidNumber`` for an empty text, a number in scientific notation,
    a text that does not parse, one with an extension, or one that
    ``phonenumbers.is_valid_number`` refuses.
    """
    text = text.strip()
    if not text:
        raise InvalidNumber(text, "empty number")
    if SCIENTIFIC.fullmatch(text):
        raise InvalidNumber(
            text,
            f"{text!r} is in scientific notation: the spreadsheet has rounded away digits "
            "(format the column as text and export again)",
        )
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        why = PARSE_ERRORS.get(exc.error_type, "is not a phone number")
        raise InvalidNumber(text, f"{text!r} {why}") from None
    if number.extension:
        # E.164 has no extension: dialling the main number would reach someone else.
        raise InvalidNumber(text, f"{text!r} has an extension ({number.extension})")
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number):
        raise InvalidNumber(text, f"{text!r} is not a valid phone number (read as {e164})")
    return e164


def check_dial_style(style: str, region: str) -> None:
    """Raise ``ValueError`` unless ``style`` can be dialled from a trunk in ``region``:
    for configuration checks, so that a bad pair fails at load and not at the first call.

    ``international`` needs the region's international prefix, which some countries do
    not have a single one of (KR, BR, SG… where carriers differ).
    """
    if style not in DIAL_STYLES:
        raise ValueError(f"dial style must be one of {', '.join(DIAL_STYLES)}, not {style!r}")
    if phonenumbers.country_code_for_region(region) == 0:
        raise ValueError(f"unknown region {region!r} (an ISO 3166 code such as CN)")
    if style == "international":
        _international_prefix(region)


def format_for_dial(e164: str, style: DialStyle | str, region: str) -> str:
    """``e164`` written in ``style`` (one of ``DIAL_STYLES``) for a trunk in ``region``.

    Raises ``ValueError`` for a style and region that ``check_dial_style`` refuses, a
    text that is not E.164, or a number of another country to be dialled ``national``
    from a region without a single international prefix.
    """
    check_dial_style(style, region)
    country_code = phonenumbers.country_code_for_region(region)
    if not e164.startswith("+"):
        raise ValueError(f"{e164!r} is not an E.164 number (+ and digits)")
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        raise ValueError(f"{e164!r} is not an E.164 number (+ and digits)") from None
    if style == "e164":
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    if style == "national" and number.country_code == country_code:
        # Within the country this is the national form, with trunk prefix ("010…")
        # and, for NANPA, the leading 1 where it is dialled.
        return _digits(phonenumbers.format_out_of_country_calling_number(number, region))
    national_number = phonenumbers.national_significant_number(number)
    return f"{_international_prefix(region)}{number.country_code}{national_number}"


def _international_prefix(region: str) -> str:
    """The digits dialled in ``region`` before a country code (``00`` in CN, ``011`` in US)."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    prefix = ""
    if metadata is not None:
        # ``international_prefix`` is a pattern where a country has several; then the
        # preferred one is given, with "~" marking "wait for a dial tone".
        prefix = metadata.international_prefix or ""
        if not prefix.isdigit():
            prefix = (metadata.preferred_international_prefix or "").replace("~", "")
    if not prefix.isdigit():
        raise ValueError(
            f"region {region!r} has no single international prefix (carriers differ);"
            " dial e164 or national"
        )
    return prefix


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())
