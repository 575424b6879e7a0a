"""Hot leads: rules, the per-call mapping, notification ids and the outbox's JSON format."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waihu.api import CallRecord, Notification, Turn
from waihu.notify.leads import (
    MAX_REPLIES,
    NotifyRule,
    digest_notification,
    lead_from_call,
    lead_notification,
    lead_notifications,
    mask_number,
    matching_calls,
    notification_from_json,
    notification_to_json,
)

ENDED = 1_714_630_980.0


def finished_call(
    call_id: str = "c-7f3a",
    *,
    grade: str | None = "A",
    tags: list[str] | None = None,
    replies: list[str] = ("嗯，你们价格怎么算？", "可以先试用吗"),  # type: ignore[assignment]
) -> CallRecord:
    turns = []
    for text in replies:
        turns.append(Turn("robot", "您好，这里是云帆科技", "pitch"))
        turns.append(Turn("callee", text, "pitch", intent="interested"))
    return CallRecord(
        id=call_id,
        number="+8613800138000",
        script="may",
        trunk="office",
        status="ended",
        created_at=ENDED - 80,
        answered_at=ENDED - 65.04,
        ended_at=ENDED,
        grade=grade,
        tags=list(tags or ["价格"]),
        turns=turns,
        campaign_id="may",
        outcome="answered",
    )


def lead(record: CallRecord | None = None) -> dict:
    return lead_from_call(
        record or finished_call(),
        variables={"name": "张三"},
        campaign_id="may",
        campaign_name="五月回访",
    )


# ───────────────────────── rules ─────────────────────────


def test_rule_matches_by_grade_or_by_tag() -> None:
    rule = NotifyRule("sales", grades=("A", "B"), tags=("价格",))
    assert rule.matches("A", [])
    assert rule.matches("B", ["别的"])
    assert rule.matches("C", ["价格"])
    assert not rule.matches("C", ["别的"])
    assert not rule.matches(None, [])


def test_rule_defaults_to_grade_a_immediately() -> None:
    rule = NotifyRule("sales")
    assert (rule.grades, rule.tags, rule.mode) == (("A",), (), "immediate")
    assert rule.matches("A", []) and not rule.matches("B", ["价格"])


def test_empty_sides_match_nothing() -> None:
    rule = NotifyRule("sales", grades=(), tags=())
    assert not rule.matches("A", ["价格"])


def test_rule_takes_lists_from_settings_and_refuses_an_unknown_mode() -> None:
    rule = NotifyRule("sales", grades=["A"], tags="价格")  # type: ignore[arg-type]
    assert rule.grades == ("A",) and rule.tags == ("价格",)
    with pytest.raises(ValueError, match="mode: must be one of immediate, digest"):
        NotifyRule("sales", mode="weekly")  # type: ignore[arg-type]


# ───────────────────────── one call ─────────────────────────


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+8613800138000", "138****8000"),  # China mobile: 11-digit national number
        ("+821012345678", "101***5678"),  # Korea mobile: 10 digits
        ("+390612345678", "061***5678"),  # Italy keeps its leading zero
        ("01012345678", "010****5678"),  # not E.164: masked over its digits
        ("12345678", "123*5678"),  # exactly 8 digits: one hidden
        ("1234567", "*****67"),  # too short for head and tail
        ("sip:callee@example.com", "****"),
    ],
)
def test_mask_number(number: str, masked: str) -> None:
    assert mask_number(number) == masked


@given(st.from_regex(r"\+86 ?1[3-9][0-9]{9}", fullmatch=True))
def test_a_masked_mobile_never_shows_its_middle(number: str) -> None:
    masked = mask_number(number)
    digits = number.replace(" ", "")[3:]
    assert masked == digits[:3] + "****" + digits[-4:]


def test_lead_from_call_has_every_documented_key() -> None:
    call = lead()
    assert call == {
        "call_id": "c-7f3a",
        "number": "+8613800138000",
        "masked_number": "138****8000",
        "grade": "A",
        "tags": ["价格"],
        "replies": ["嗯，你们价格怎么算？", "可以先试用吗"],
        "variables": {"name": "张三"},
        "duration": 65.0,
        "ended_at": ENDED,
        "campaign_id": "may",
        "campaign_name": "五月回访",
    }
    json.dumps(call)  # JSON data, as the outbox stores it


def test_replies_are_the_callee_lines_only_the_last_ones_kept() -> None:
    many = [f"第{i}句" for i in range(MAX_REPLIES + 5)]
    call = lead(finished_call(replies=[*many, "   "]))  # a blank line is no reply
    assert call["replies"] == many[-MAX_REPLIES:]
    assert "您好，这里是云帆科技" not in call["replies"]


def test_a_call_never_answered_has_no_duration() -> None:
    record = finished_call()
    record.answered_at = None
    assert lead(record)["duration"] is None


# ───────────────────────── notifications ─────────────────────────


def test_lead_notification_id_is_stable_per_call_and_notifier() -> None:
    first = lead_notification(lead(), notifier="sales", created_at=1.0)
    again = lead_notification(lead(), notifier="sales", created_at=2.0)
    other = lead_notification(lead(), notifier="crm", created_at=1.0)
    assert first.id == again.id == "lead-c-7f3a-sales"
    assert other.id == "lead-c-7f3a-crm"
    assert (first.kind, first.campaign_id, first.campaign_name) == ("lead", "may", "五月回访")
    assert first.calls == (lead(),)
    renamed = lead_notification(lead(), notifier="sales", campaign_name="六月回访")
    assert (renamed.campaign_id, renamed.campaign_name) == ("may", "六月回访")
    assert abs(renamed.created_at - time.time()) < 60  # now, unless given


def test_lead_notifications_one_per_notifier_of_matching_immediate_rules() -> None:
    rules = [
        NotifyRule("sales"),
        NotifyRule("sales", grades=(), tags=("价格",)),  # same notifier again: one message
        NotifyRule("crm", grades=("B",)),  # does not match
        NotifyRule("boss", mode="digest"),  # matches, but at the campaign's end
        NotifyRule("audit", grades=(), tags=("价格",)),
    ]
    found = lead_notifications(lead(), rules, created_at=5.0)
    assert [n.id for n in found] == ["lead-c-7f3a-sales", "lead-c-7f3a-audit"]
    assert lead_notifications(lead(finished_call(grade="C", tags=["x"])), rules, created_at=5) == []


def test_digest_lists_the_calls_its_notifier_rules_match() -> None:
    calls = [lead(finished_call(f"c{i}", grade=g)) for i, g in enumerate("ABCA")]
    rules = [NotifyRule("boss", mode="digest"), NotifyRule("sales", grades=("B",))]
    chosen = matching_calls(calls, rules, notifier="boss")
    assert [c["call_id"] for c in chosen] == ["c0", "c3"]
    assert matching_calls(calls, rules, notifier="sales") == []  # immediate rules are not digests
    digest = digest_notification("may", "五月回访", chosen, notifier="boss", created_at=9.0)
    assert (digest.id, digest.kind, len(digest.calls)) == ("digest-may-boss", "digest", 2)


# ───────────────────────── JSON ─────────────────────────


def test_json_round_trip() -> None:
    note = lead_notification(lead(), notifier="sales", created_at=5.5)
    data = json.loads(json.dumps(notification_to_json(note), ensure_ascii=False))
    assert notification_from_json(data) == note
    digest = digest_notification("may", None, [], notifier="boss", created_at=7)
    assert notification_from_json(notification_to_json(digest)) == digest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "weekly"}, "kind: must be lead or digest"),
        ({"calls": "c1"}, "calls: must be list or tuple, not str"),
        ({"calls": ["c1"]}, r"calls\[0\]: must be an object"),
        ({"created_at": "today"}, "created_at: must be int or float, not str"),
        ({"created_at": True}, "created_at: must be int or float, not bool"),
        ({"id": None}, "id: must be str, not NoneType"),
        ({"campaign_id": 7}, "campaign_id: must be str, not int"),
    ],
)
def test_bad_json_is_a_value_error_naming_the_key(change: dict, message: str) -> None:
    data = notification_to_json(lead_notification(lead(), notifier="s", created_at=1))
    with pytest.raises(ValueError, match=message):
        notification_from_json({**data, **change})


def test_missing_key_is_named() -> None:
    data = notification_to_json(lead_notification(lead(), notifier="s", created_at=1))
    del data["calls"]
    with pytest.raises(ValueError, match="calls: required key is missing"):
        notification_from_json(data)
    with pytest.raises(ValueError, match="must be a JSON object"):
        notification_from_json(["not", "an", "object"])  # type: ignore[arg-type]


def test_notification_type_is_the_api_one() -> None:
    assert isinstance(lead_notification(lead(), notifier="s", created_at=1), Notification)
