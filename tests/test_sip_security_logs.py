"""No password, digest response or password hash in any log line, at any level.

An authenticated call against sipp's ``auth.xml`` (a 401 challenge, then the
retried INVITE checked by sipp's own ``verifyauth``) runs with every logger at
DEBUG, where the transport writes each SIP message whole. The digest response
that went on the wire is read from sipp's message trace, and neither it, the
password nor HA1 may appear in what was logged; the rest of the credentials
header (user, realm, nonce) stays, since people need it to debug a failure.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pytest
import trio

from waihu.testing.sipp import sipp_peer
from waihu_sip.transport import REDACTED
from waihu_sip.transport import redact as redact_message

from sip_harness import running_trunk

REAL_TIME_LIMIT = 60
USER = "robot7"
PASSWORD = "Tr0ub4dor&3"
REALM = "waihu.test"  # auth.xml's realm
RESPONSE = re.compile(r'Authorization:.*\bresponse="([0-9a-f]+)"', re.IGNORECASE)


async def test_an_authenticated_call_logs_no_secret_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = {"user": USER, "password": PASSWORD}
    with trio.fail_after(REAL_TIME_LIMIT):
        async with sipp_peer("auth.xml", tmp_path, keys=keys) as peer:
            async with running_trunk(
                tmp_path, proxy=peer.hostport, username=USER, password=PASSWORD
            ) as trunk:
                leg = await trunk.dial("1001")
                await leg.hangup()
                result = await peer.wait()
    result.check()
    wire = (peer.workdir / "messages.log").read_text(errors="replace")
    responses = RESPONSE.findall(wire)
    assert responses, "sipp saw no Authorization header"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "Authorization: Digest" in logged and f'username="{USER}"' in logged
    assert REDACTED in logged
    ha1 = hashlib.md5(f"{USER}:{REALM}:{PASSWORD}".encode()).hexdigest()
    for secret in (PASSWORD, ha1, *responses):
        assert secret not in logged


def test_redaction_of_quoted_and_bare_responses_in_both_headers() -> None:
    message = (
        "INVITE sip:1@x SIP/2.0\r\n"
        'Authorization: Digest username="u", realm="r", response="0123abcd", nonce="n"\r\n'
        "proxy-authorization : Digest username=u,response=feedbeef,nonce=n\r\n"
        'Subject: response="stays"\r\n\r\n'
    )
    redacted = redact_message(message)
    assert "0123abcd" not in redacted and "feedbeef" not in redacted
    assert redacted.count(REDACTED) == 2
    assert 'nonce="n"' in redacted and 'Subject: response="stays"' in redacted
    assert redact_message("OPTIONS sip:x SIP/2.0\r\n\r\n") == "OPTIONS sip:x SIP/2.0\r\n\r\n"
