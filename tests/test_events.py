"""The event bus holds every event to the closed table ``waihu.api.EVENT_KINDS``, and the
documentation of the pushed events says what that table says."""

from __future__ import annotations

import logging
import re

import pytest
import trio

from waihu.api import EVENT_KINDS, CallEvent, hookimpl
from waihu.control import protocol, render
from waihu.control.protocol import call_event_message
from waihu.events import EventBus
from waihu.plugins import make_plugin_manager

TIMEOUT = 10


class Observer:
    def __init__(self, fail: bool = False) -> None:
        self.seen: list[CallEvent] = []
        self.fail = fail

    @hookimpl
    def waihu_call_event(self, event: CallEvent) -> None:
        self.seen.append(event)
        if self.fail:
            raise RuntimeError("observer broke")


def test_publish_builds_the_event_in_the_tables_field_order() -> None:
    observer = Observer()
    bus = EventBus(make_plugin_manager(entry_points=False, extra=[observer]))
    event = bus.publish(
        "c1", "ended", campaign="spring", error=None, hangup_by="robot", sip_status=200,
        tags=["hot"], grade="A", outcome="answered",
    )  # fmt: skip
    assert observer.seen == [event]
    assert (event.call_id, event.kind, event.campaign) == ("c1", "ended", "spring")
    assert tuple(event.data) == EVENT_KINDS["ended"]
    campaign = bus.publish(None, "campaign", campaign="spring", state="paused", reason="trunk")
    assert (campaign.call_id, dict(campaign.data)) == (None, {"state": "paused", "reason": "trunk"})


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("prompt", {"text": "hi"}, "unknown event kind 'prompt'"),
        ("intent", {"intent": "affirm"}, "unknown event kind 'intent'"),
        (
            "utterance",
            {"text": "네"},
            "a utterance event has the fields text, confidence, not text",
        ),
        ("hangup", {"by": "callee", "why": "x"}, "has the fields by, not by, why"),
        ("barge_in", {"at": 1}, "a barge_in event has the fields none, not at"),
        ("node", {}, "a node event has the fields node, not none"),
    ],
)
def test_an_event_off_the_table_is_refused_as_a_bug(
    kind: str, data: dict[str, object], message: str
) -> None:
    observer = Observer()
    bus = EventBus(make_plugin_manager(entry_points=False, extra=[observer]))
    with pytest.raises(ValueError, match=re.escape(message)):
        bus.publish("c1", kind, **data)
    assert observer.seen == []


async def test_a_failing_observer_is_logged_and_the_others_still_get_the_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = Observer()
    bus = EventBus(make_plugin_manager(entry_points=False, extra=[Observer(fail=True), good]))
    channel = bus.subscribe()
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR, logger="waihu.events"):
        event = bus.publish("c1", "barge_in")
        assert await channel.receive() == event
    assert good.seen == [event]
    assert "waihu_call_event failed on barge_in" in caplog.text
    channel.close()
    bus.publish("c1", "barge_in")  # a closed subscriber is dropped, not an error


def test_the_pushed_message_carries_campaign_then_the_fields() -> None:
    event = CallEvent("c1", "hangup", 12.5, {"by": "callee"}, campaign="spring")
    assert list(call_event_message(event).items()) == [
        ("event", "hangup"),
        ("call_id", "c1"),
        ("at", 12.5),
        ("campaign", "spring"),
        ("by", "callee"),
    ]


def test_the_protocol_documents_exactly_the_table() -> None:
    """Each kind is documented once with its fields, as ``- ``kind``: ``field``, … —``."""
    documented: dict[str, tuple[str, ...]] = {}
    text = " ".join(protocol.__doc__.split())
    text = text.split("The kinds and their fields are", 1)[1].split("For example", 1)[0]
    for kinds, fields in re.findall(r"- ((?:``\w+``(?:, )?)+): (.*?) —", text):
        names = tuple(re.findall(r"``(\w+)``", fields)) if "no fields" not in fields else ()
        for kind in re.findall(r"``(\w+)``", kinds):
            documented[kind] = names
    assert documented == dict(EVENT_KINDS)


def test_waihuctl_renders_every_kind_with_its_fields() -> None:
    for kind, fields in EVENT_KINDS.items():
        used, _show = render._EVENT_DETAILS[kind]
        assert set(used) == set(fields), kind
    line = render.render_event(
        {"event": "ended", "call_id": "c1", "at": 0.0, "campaign": None, "outcome": "answered",
         "grade": "A", "tags": ["hot"], "sip_status": 200, "hangup_by": "callee", "error": None}
    )  # fmt: skip
    assert line.endswith("ended     answered, grade A, sip 200, hung up by callee, tags hot")
    line = render.render_event(
        {"event": "campaign", "call_id": None, "at": 0.0, "campaign": "spring",
         "state": "paused", "reason": "trunk office failing"}
    )  # fmt: skip
    assert line.endswith("campaign  paused: trunk office failing campaign=spring")
