"""Keep credentials out of logs: SIP messages are written to the debug log with their digest
answers blanked.

``redact_message`` takes a SIP message as text and replaces the value of every
``response=`` parameter in Authorization and Proxy-Authorization headers with
``<redacted>``: that value is computed from the password and the server's
nonce, and a log holding it (with the challenge beside it) is enough to try
passwords offline. Everything else — user, realm, nonce, URI — stays, since
it is what people need to see when authentication fails. The password itself
never reaches a message.

What it is not: a general secret scrubber. Other log lines must simply never
be given a password (the trunk config's ``password`` is left out of its repr).
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_message"]

REDACTED = "<redacted>"

# a credentials header line (RFC 3261 §20.7, §20.28), up to its end
_CREDENTIALS_LINE = re.compile(r"^(?:proxy-)?authorization[ \t]*:.*$", re.IGNORECASE | re.MULTILINE)
# response="…" or response=token inside it (RFC 2617 §3.2.2 request-digest)
_RESPONSE_PARAM = re.compile(r'(\bresponse[ \t]*=[ \t]*)(?:"[^"]*"|[^,\s]+)', re.IGNORECASE)


def redact_message(text: str) -> str:
    """``text`` with the digest ``response`` of each credentials header replaced."""
    if "uthorization" not in text and "UTHORIZATION" not in text:
        return text  # the common case costs one scan
    return _CREDENTIALS_LINE.sub(
        lambda line: _RESPONSE_PARAM.sub(rf'\1"{REDACTED}"', line.group(0)), text
    )
