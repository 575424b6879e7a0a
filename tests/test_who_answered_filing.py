"""Who answered, as it is filed: the lifecycle files a machine's outcome instead of
``answered`` or the SIP answer's, publishes ``screened``; the campaign redials a switched-off
phone and a voicemail later like a no-answer (configurable); ``[who_answered]`` is checked
with errors naming the key; the operator sees it in ``call show`` and the export."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import trio
from test_call_lifecycle import (
    TIMEOUT,
    FakeTrunk,
    assert_matches_event_kinds,
    call_services,
    context,
    load_hello,
    new_record,
    storage_in,
)
from test_campaign_settings import build
from test_config import MINIMAL, problems
from test_dispatcher_inbound import CALLER, FakeIncomingCall

from waihu.api import CallEvent, hookimpl
from waihu.call import UNDECIDED, answer_call, place_call
from waihu.call_lifecycle import CallLifecycle
from waihu.campaign.export import FIXED_COLUMNS, export_row
from waihu.config import ConfigError, WhoAnsweredConfig, load_config
from waihu.control.render import render_call, render_event
from waihu.events import EventBus
from waihu.plugins import make_plugin_manager


@pytest.fixture
def observed() -> tuple[EventBus, list[CallEvent]]:
    seen: list[CallEvent] = []

    class Observer:
        @hookimpl
        def waihu_call_event(self, event: CallEvent) -> None:
            seen.append(event)

    return EventBus(make_plugin_manager(entry_points=False, extra=[Observer()])), seen


async def screened_call(
    tmp_path: Path,
    bus: EventBus,
    *,
    answered: bool,
    verdict: tuple[str, str, str | None] | None,
    sip: tuple[int, str] | None = None,
    interrupted: bool = False,
) -> tuple[object, object]:
    with trio.fail_after(TIMEOUT):
        async with storage_in(tmp_path) as storage, trio.open_nursery() as nursery:
            life = CallLifecycle(new_record(), storage=storage, events=bus)
            await life.begin()
            nursery.start_soon(life.keep_filed)
            life.progress(183, "Session Progress")
            if answered:
                life.answered("PCMU")
            if verdict is not None:
                life.screened(*verdict)  # type: ignore[arg-type]
            record = await life.end(
                sip_status=sip[0] if sip else None,
                sip_reason=sip[1] if sip else None,
                interrupted=interrupted,
            )
            stored = await storage.get_call(record.id)
            nursery.cancel_scope.cancel()
    return record, stored


async def test_a_voicemail_is_filed_as_voicemail_not_answered(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, seen = observed
    record, stored = await screened_call(
        tmp_path, bus, answered=True, verdict=("voicemail", "a beep", "voicemail")
    )
    assert (record.status, record.outcome, record.grade) == ("ended", "voicemail", None)
    assert (record.answered_by, record.answered_by_evidence) == ("voicemail", "a beep")
    assert stored == record
    screened = [e for e in seen if e.kind == "screened"]
    assert [e.data for e in screened] == [
        {"answered_by": "voicemail", "evidence": "a beep", "outcome": "voicemail"}
    ]
    assert_matches_event_kinds(seen)
    assert seen[-1].kind == "ended" and seen[-1].data["outcome"] == "voicemail"


async def test_an_announcement_before_a_480_files_what_it_said(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _ = observed
    verdict = ("announcement", "early media: said '关机'", "switched_off")
    record, stored = await screened_call(
        tmp_path, bus, answered=False, verdict=verdict, sip=(480, "Temporarily Unavailable")
    )
    assert (record.status, record.outcome, record.sip_status) == ("failed", "switched_off", 480)
    assert record.error == "480 Temporarily Unavailable: switched off, out of reach"
    assert (stored.answered_by, stored.answered_by_evidence) == (
        "announcement", "early media: said '关机'",
    )  # fmt: skip


async def test_a_person_is_filed_answered_and_an_unscreened_call_has_no_answered_by(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _ = observed
    person, _ = await screened_call(
        tmp_path / "a", bus, answered=True, verdict=("person", "said '喂'", None)
    )
    assert (person.outcome, person.answered_by) == ("answered", "person")
    plain, _ = await screened_call(tmp_path / "b", bus, answered=False, verdict=None, sip=(480, ""))
    assert (plain.outcome, plain.answered_by, plain.answered_by_evidence) == (
        "no_answer", None, "",
    )  # fmt: skip


async def test_a_call_the_daemon_cut_off_stays_interrupted(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _ = observed
    verdict = ("announcement", "early media: said '空号'", "invalid_number")
    record, _ = await screened_call(
        tmp_path, bus, answered=False, verdict=verdict, interrupted=True
    )
    assert record.outcome == "interrupted"  # not retried as if the number were gone


def test_switched_off_and_voicemail_are_redialled_later_and_configurable() -> None:
    policy = build().retry_policy()
    assert policy.decide("switched_off", 1, 0.0) == ("pending", 120 * 60.0)
    assert policy.decide("voicemail", 1, 0.0) == ("pending", 60 * 60.0)
    assert policy.decide("voicemail", 3, 0.0) == ("done", 0.0)
    assert policy.decide("invalid_number", 1, 0.0) == ("done", 0.0)  # 空号: never again
    tuned = build(retry={"voicemail": {"delay_minutes": 240, "max_attempts": 2}}).retry_policy()
    assert tuned.decide("voicemail", 1, 0.0) == ("pending", 240 * 60.0)
    assert tuned.decide("voicemail", 2, 0.0) == ("done", 0.0)


# ───────────────────────── [who_answered] ─────────────────────────


def test_who_answered_defaults_and_a_configured_table(tmp_path: Path, provider_types: dict) -> None:
    assert WhoAnsweredConfig().action("voicemail") == "hangup"
    path = tmp_path / "waihud.toml"
    path.write_text(
        MINIMAL
        + "\n[who_answered]\ndecide_within = 4.5\nlisten_within = 9\n"
        + 'actions = { voicemail = "message" }\n'
        + 'message_recording = "/srv/leave.wav"\n',
        encoding="utf-8",
    )
    config = load_config(path, provider_types)
    who = config.who_answered
    assert (who.enabled, who.decide_within, who.action("voicemail")) == (True, 4.5, "message")
    assert (who.listen_seconds, WhoAnsweredConfig().listen_seconds) == (9.0, 8.0)
    assert WhoAnsweredConfig(decide_within=10.0).listen_seconds == 10.0  # never before it
    assert who.action("switched_off") == "hangup"


@pytest.mark.parametrize(
    ("table", "wanted"),
    [
        (
            'actions = { voicemail = "leave" }',
            "who_answered.actions: must map outcomes (invalid_number, switched_off, busy, "
            "unreachable, voicemail) to hangup or message, not {'voicemail': 'leave'}",
        ),
        (
            'actions = { answered = "hangup" }',
            "who_answered.actions: must map outcomes (invalid_number, switched_off, busy, "
            "unreachable, voicemail) to hangup or message, not {'answered': 'hangup'}",
        ),
        ("decide_within = 0.1", "who_answered.decide_within: must be 0.5–30.0, not 0.1"),
        (
            "decide_within = 5.0\nlisten_within = 4.0",
            "who_answered.listen_within: must be at least decide_within (5.0), not 4.0",
        ),
        ("listen_within = 90.0", "who_answered.listen_within: must be 0.5–60.0, not 90.0"),
        (
            'actions = { voicemail = "message" }',
            "who_answered.actions: 'message' needs who_answered.message_text "
            "or who_answered.message_recording",
        ),
        (
            'message_text = "稍后联系您"',
            "who_answered.message_text: saying it needs [call] tts "
            "(or give who_answered.message_recording)",
        ),
        ("decide = 3", "who_answered: unknown key decide"),
    ],
)
def test_bad_who_answered_tables_are_named(
    tmp_path: Path, provider_types: dict, table: str, wanted: str
) -> None:
    found = problems(tmp_path, MINIMAL + "\n[who_answered]\n" + table + "\n", provider_types)
    found = [p.removeprefix(f"{tmp_path / 'waihud.toml'}: ") for p in found]
    assert any(wanted in p for p in found), found
    with pytest.raises(ConfigError):
        load_config(tmp_path / "waihud.toml", provider_types)


# ───────────────────────── what the operator sees ─────────────────────────


def test_call_show_and_watch_say_who_answered() -> None:
    record = {
        "id": "c1", "status": "ended", "number": "01012345678", "outcome": "voicemail",
        "answered_at": 10.0, "ended_at": 14.0, "created_at": 9.0,
        "answered_by": "voicemail", "answered_by_evidence": "said '来电秘书'", "turns": [],
    }  # fmt: skip
    shown = render_call(record)
    assert "answered by  voicemail (said '来电秘书') → voicemail" in shown
    person = {**record, "outcome": "answered", "answered_by": "person",
              "answered_by_evidence": "said '喂'"}  # fmt: skip
    assert "answered by  person (said '喂')\n" in render_call(person) + "\n"
    assert "answered by" not in render_call({**record, "answered_by": None})
    line = render_event(
        {"event": "screened", "call_id": "c1", "at": 0.0, "campaign": None,
         "answered_by": "announcement", "evidence": "busy tone", "outcome": "busy"}
    )  # fmt: skip
    assert line.endswith("announcement (busy tone) → busy")


def test_the_export_has_an_answered_by_column() -> None:
    item = {"number": "+8613800138000", "seq": 1, "outcome": "voicemail",
            "answered_by": "voicemail", "call_id": "c1"}  # fmt: skip
    row = dict(zip(FIXED_COLUMNS, export_row(item, []), strict=True))
    assert (row["outcome"], row["answered_by"]) == ("voicemail", "voicemail")
    assert dict(zip(FIXED_COLUMNS, export_row({}, []), strict=True))["answered_by"] == ""


# ───────────────────────── the call path (a trunk with no network) ─────────────────────────


async def test_a_call_over_before_the_verdict_files_unsure_and_is_graded(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, seen = observed
    loaded = await load_hello(tmp_path)  # says hello (0.2 s) and ends: before any verdict
    trunk = FakeTrunk(FakeTrunk.Config(), context(tmp_path, "office"))
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            record = await place_call(services, trunk, new_record(), loaded)
            unscreened = await place_call(
                attrs.evolve(services, who=WhoAnsweredConfig(enabled=False)),
                trunk,
                new_record("c2"),
                loaded,
            )
    assert (record.answered_by, record.answered_by_evidence) == ("unsure", UNDECIDED)
    assert (record.outcome, record.grade) == ("answered", "B")  # goes on as a person
    assert [e.data for e in seen if e.kind == "screened" and e.call_id == "c1"] == [
        {"answered_by": "unsure", "evidence": UNDECIDED, "outcome": None}
    ]
    assert (unscreened.answered_by, unscreened.outcome) == (None, "answered")


async def test_an_inbound_call_is_not_screened(
    tmp_path: Path, observed: tuple[EventBus, list[CallEvent]]
) -> None:
    bus, _ = observed
    loaded = await load_hello(tmp_path)
    call = FakeIncomingCall("4001")
    with trio.fail_after(TIMEOUT):
        async with call_services(tmp_path, bus) as services:
            record = attrs.evolve(new_record(), direction="inbound", number=CALLER)
            await answer_call(services, call, record, loaded)
    assert (record.status, record.outcome, record.grade) == ("ended", "answered", "B")
    assert (record.answered_by, record.answered_by_evidence) == (None, "")
