"""The answered call's session: re-INVITE and UPDATE from the far end (hold, unhold, codec
change, refresh, offerless re-INVITE, glare) and OPTIONS in the dialog.

The far end is a ``UdpPeer`` scripted message by message (``sip_leg_peer``), over real
sockets on 127.0.0.1: these tests check exact fields of our answers and hold back ACKs
on purpose. The sipp tests in test_sip_leg_sipp.py play the same against a real peer.
"""

from __future__ import annotations

from pathlib import Path

import trio

from waihu_sip.message import make_response
from waihu_sip.sdp import parse_sdp

from sip_leg_peer import answered_call, sdp

TIME_LIMIT = 30  # seconds per test; generous, the machine is shared


async def test_hold_stops_our_media_and_unhold_resumes_it(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            assert await callee.media_arrives()
            hold = callee.request("INVITE", body=sdp(callee.rtp_port, direction="sendonly"))
            ok = await callee.ask(hold)
            await callee.ack(hold)
            assert ok.status == 200
            assert parse_sdp(ok.body).direction == "recvonly"
            assert not await callee.media_arrives()  # held: nothing goes out
            unhold = callee.request("INVITE", body=sdp(callee.rtp_port))
            ok = await callee.ask(unhold)
            await callee.ack(unhold)
            assert parse_sdp(ok.body).direction == "sendrecv"
            assert await callee.media_arrives()
            assert not callee.leg.ended.is_set()


async def test_inactive_and_old_style_hold_are_answered_in_kind(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            inactive = callee.request("UPDATE", body=sdp(callee.rtp_port, direction="inactive"))
            ok = await callee.ask(inactive)
            assert parse_sdp(ok.body).direction == "inactive"
            assert not await callee.media_arrives()
            # RFC 2543 hold: c=0.0.0.0 says "send me nothing", whatever the direction line says
            zero = callee.request("UPDATE", body=sdp(callee.rtp_port, host="0.0.0.0"))
            ok = await callee.ask(zero)
            assert parse_sdp(ok.body).direction == "recvonly"
            assert not await callee.media_arrives()
            assert callee.leg.remote_rtp == ("127.0.0.1", callee.rtp_port)  # address kept
            resume = callee.request("UPDATE", body=sdp(callee.rtp_port, direction="sendrecv"))
            ok = await callee.ask(resume)
            assert parse_sdp(ok.body).direction == "sendrecv"
            assert await callee.media_arrives()


async def test_a_codec_change_to_the_other_g711_is_taken_and_nothing_else_is(
    tmp_path: Path,
) -> None:
    """An offer of only PCMA on a PCMU call switches the leg (the core follows leg.codec
    from its next frame); an offer of nothing the trunk speaks is refused 488."""
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            pcma = callee.request("INVITE", body=sdp(callee.rtp_port, formats="8"))
            ok = await callee.ask(pcma)
            await callee.ack(pcma)
            assert ok.status == 200 and parse_sdp(ok.body).formats[0] == 8
            assert callee.leg.codec.name == "PCMA" and callee.leg.codec.payload_type == 8
            g729 = callee.request("INVITE", body=sdp(callee.rtp_port, formats="18"))
            refused = await callee.ask(g729)
            assert refused.status == 488
            assert callee.leg.codec.name == "PCMA" and await callee.media_arrives()


async def test_refresh_without_sdp_repeats_our_description_unchanged(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            first = callee.request("INVITE")  # offerless: we offer in the 200
            ok1 = await callee.ask(first)
            await callee.ack(first, body=sdp(callee.rtp_port))  # the answer comes in the ACK
            second = callee.request("INVITE")
            ok2 = await callee.ask(second)
            await callee.ack(second, body=sdp(callee.rtp_port))
            assert ok1.status == ok2.status == 200
            assert ok1.body and ok1.body == ok2.body  # same o= version: nothing changed
            offer = parse_sdp(ok1.body)
            assert offer.formats == (0, 101)  # the call's codec only, and telephone-event
            update = callee.request("UPDATE")  # an UPDATE without SDP gets none back
            ok = await callee.ask(update)
            assert ok.status == 200 and not ok.body


async def test_offerless_reinvite_takes_its_answer_from_the_ack(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            offerless = callee.request("INVITE")
            ok = await callee.ask(offerless)
            assert parse_sdp(ok.body).direction == "sendrecv"
            await callee.ack(offerless, body=sdp(callee.rtp_port, direction="recvonly"))
            await trio.sleep(0.1)
            assert await callee.media_arrives()  # recvonly: it still takes our audio
            offerless = callee.request("INVITE")
            await callee.ask(offerless)
            await callee.ack(offerless, body=sdp(callee.rtp_port, direction="inactive"))
            await trio.sleep(0.1)
            assert not await callee.media_arrives()


async def test_glare_our_refresh_pending_gets_491(tmp_path: Path) -> None:
    """We are the refresher (interval 4 s, min_se 2): our re-INVITE is held unanswered
    while the callee sends its own; that one gets 491, ours is then answered."""
    answer = [("Session-Expires", "4;refresher=uac"), ("Require", "timer")]
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path, answer_headers=answer, min_se=2) as callee:
            ours, source, _ = await callee.peer.receive_request()  # at half the interval
            assert ours.method == "INVITE"  # no Allow: UPDATE → re-INVITE
            theirs = callee.request("INVITE", body=sdp(callee.rtp_port))
            glare = await callee.ask(theirs)
            assert glare.status == 491
            ok = make_response(
                ours, 200, extra=[("Session-Expires", "4;refresher=uac"),
                                  ("Content-Type", "application/sdp")],
                body=sdp(callee.rtp_port),
            )  # fmt: skip
            await callee.peer.send(ok, source)
            ack, _, _ = await callee.peer.receive_request()
            assert ack.method == "ACK" and ack.cseq.number == ours.cseq.number
            again = callee.request("INVITE", body=sdp(callee.rtp_port))
            assert (await callee.ask(again)).status == 200  # no longer pending


async def test_options_in_the_dialog_lists_what_we_take(tmp_path: Path) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            ok = await callee.ask(callee.request("OPTIONS"))
            assert ok.status == 200
            allow = {m.strip() for m in (ok.headers.get("Allow") or "").split(",")}
            assert {"INVITE", "UPDATE", "INFO", "NOTIFY", "BYE"} <= allow
            assert "timer" in (ok.headers.get("Supported") or "")
            assert "application/dtmf-relay" in (ok.headers.get("Accept") or "")


async def test_new_offer_while_ours_waits_for_its_ack_gets_500_retry_after(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIME_LIMIT):
        async with answered_call(tmp_path) as callee:
            offerless = callee.request("INVITE")
            ok = await callee.ask(offerless)
            assert ok.status == 200 and ok.body  # our offer; its answer is due in the ACK
            early = callee.request("UPDATE", body=sdp(callee.rtp_port, direction="sendonly"))
            refused = await callee.ask(early)
            assert refused.status == 500
            assert 0 <= int(refused.headers.get("Retry-After") or "x") <= 10
            await callee.ack(offerless, body=sdp(callee.rtp_port))
            again = callee.request("UPDATE", body=sdp(callee.rtp_port, direction="sendonly"))
            assert (await callee.ask(again)).status == 200
