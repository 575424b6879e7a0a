"""Who answered, from recognised text and tone cadences: the shipped Mandarin and Korean
phrase lists tested as text (the recogniser's spacing and punctuation included), and the
rule that a person is never taken for a machine on a guess."""

from __future__ import annotations

import pytest

from waihu.who_answered import ANNOUNCEMENTS, VOICEMAIL, classify_phrases, decide


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("您好 您拨打的号码是空号 请查证后再拨", "invalid_number"),
        ("对不起，您拨打的号码已停机。", "invalid_number"),
        ("您好 您拨打的用户已关机", "switched_off"),
        ("您拨打的电话正在通话中 请稍后再拨", "busy"),
        ("您拨打的电话暂时无法接通 请稍后再拨", "unreachable"),
        ("您拨打的用户不在服务区", "unreachable"),
    ],
)
def test_mandarin_announcements_say_what_happened(text: str, outcome: str) -> None:
    verdict = decide(text, "zh")
    assert (verdict.kind, verdict.outcome) == ("announcement", outcome)


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("지금 거신 번호는 없는 번호입니다", "invalid_number"),
        ("고객님의 전화기가 꺼져 있어 전원이 꺼져 있습니다", "switched_off"),
        ("지금 통화중이오니 잠시 후 다시 걸어 주십시오", "busy"),
        ("연결이 되지 않아 음성 사서함으로 연결됩니다", "unreachable"),
    ],
)
def test_korean_announcements_say_what_happened(text: str, outcome: str) -> None:
    verdict = decide(text, "ko")
    assert (verdict.kind, verdict.outcome) == ("announcement", outcome)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("您好 我是机主的来电秘书 请问有什么事", "zh"),
        ("请在提示音后留言", "zh"),
        ("음성 사서함입니다 삐 소리 후 메시지를 남겨 주세요", "ko"),
    ],
)
def test_voicemail_and_call_assistants(text: str, language: str) -> None:
    assert decide(text, language).kind == "voicemail"


@pytest.mark.parametrize(
    ("text", "language"),
    [("喂", "zh"), ("喂 你好", "zh"), ("哪位", "zh"), ("여보세요", "ko"), ("네 누구세요", "ko")],
)
def test_a_short_greeting_is_a_person(text: str, language: str) -> None:
    assert decide(text, language).kind == "person"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("喂 你好 我现在在开车 你说吧", "zh"),  # long: not a greeting, but no machine either
        ("我是他的助理 有什么事跟我说", "zh"),  # a human assistant
        ("你留个言吧 我回头看", "zh"),
        ("", "zh"),
        ("네 지금 회의 중이라 나중에 다시 전화 주세요", "ko"),
    ],
)
def test_what_a_person_might_say_is_never_a_machine(text: str, language: str) -> None:
    assert decide(text, language).kind in ("person", "unsure")


def test_tones_decide_when_nothing_was_said() -> None:
    assert (decide("", "zh", tones="busy").kind, decide("", "zh", tones="busy").outcome) == (
        "announcement", "busy",
    )  # fmt: skip
    assert decide("", "zh", tones="beep").kind == "voicemail"
    assert decide("", "zh", tones="ringback").kind == "unsure"  # still ringing: no answer yet
    assert decide("", "zh", tones="continuous").outcome == "invalid_number"
    # words win over tones: an announcement played over a busy tone says what it is
    assert decide("您拨打的用户已关机", "zh", tones="busy").outcome == "switched_off"


def test_every_shipped_phrase_is_found_in_itself_and_lists_are_in_both_languages() -> None:
    for language in ("zh", "ko"):
        assert ANNOUNCEMENTS[language] and VOICEMAIL[language]
        for phrase, _outcome in ANNOUNCEMENTS[language]:
            verdict = classify_phrases(phrase, language)
            assert verdict is not None and verdict.kind == "announcement", phrase
        for phrase in VOICEMAIL[language]:
            verdict = classify_phrases(phrase, language)
            assert verdict is not None and verdict.kind in ("voicemail", "announcement"), phrase
    assert classify_phrases("空号", "xx") is None  # a language with no lists: tones decide


def test_a_long_greeting_that_is_no_known_phrase_is_unsure_not_a_person() -> None:
    # a company's IVR starts with 您好 too: only a short greeting counts as a person
    assert decide("您好 欢迎致电平安保险 业务咨询请按一", "zh").kind == "unsure"
